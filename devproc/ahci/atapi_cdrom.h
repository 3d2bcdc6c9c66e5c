// The SCSI/MMC side of an ATAPI CD-ROM (MMC-6 and SPC-4 as a generic driver uses
// them) over a read-only image of 2048-byte sectors: INQUIRY, TEST UNIT READY,
// REQUEST SENSE, READ CAPACITY, READ(10/12), READ TOC/PMA/ATIP, READ DISC
// INFORMATION, GET CONFIGURATION, GET EVENT STATUS NOTIFICATION, MODE SENSE(6/10),
// START STOP UNIT (eject and load), PREVENT ALLOW MEDIUM REMOVAL, SET CD SPEED.
// Anything else gets CHECK CONDITION with ILLEGAL REQUEST sense.
//
// It only decides: a command's answer is either bytes to send (already cut to
// the allocation length), a range of the image to read (the caller moves the
// data), or a check condition. No I/O here, so every packet byte is safe to try.
#ifndef HV_DEVPROC_AHCI_ATAPI_CDROM_H_
#define HV_DEVPROC_AHCI_ATAPI_CDROM_H_

#include <cstdint>
#include <vector>

namespace hv::ahci {

inline constexpr uint32_t kCdSectorSize = 2048;

// Sense keys and the additional sense codes used.
inline constexpr uint8_t kSenseNone = 0x0;
inline constexpr uint8_t kSenseNotReady = 0x2;
inline constexpr uint8_t kSenseMediumError = 0x3;
inline constexpr uint8_t kSenseIllegalRequest = 0x5;
inline constexpr uint8_t kSenseUnitAttention = 0x6;

struct AtapiResult {
  bool check_condition = false;
  uint8_t sense_key = kSenseNone;   // with check_condition
  std::vector<uint8_t> data;        // data-in to send (no read)
  bool read = false;                // READ(10/12): move image bytes instead
  uint64_t read_offset = 0;         // in bytes
  uint64_t read_length = 0;
};

class AtapiCdrom {
 public:
  explicit AtapiCdrom(uint64_t image_bytes);

  // Executes a 12- or 16-byte CDB (only the first 12 bytes are read).
  AtapiResult Execute(const uint8_t* cdb);
  // A READ the caller could not complete: MEDIUM ERROR / unrecovered read error.
  AtapiResult ReadFailed();

  uint64_t sectors() const { return sectors_; }
  bool tray_open() const { return tray_open_; }
  bool locked() const { return prevent_removal_; }

 private:
  AtapiResult Check(uint8_t key, uint8_t asc, uint8_t ascq);
  AtapiResult Data(std::vector<uint8_t> bytes, uint32_t allocation);
  AtapiResult Inquiry(const uint8_t* cdb);
  AtapiResult RequestSense(const uint8_t* cdb);
  AtapiResult ReadCapacity();
  AtapiResult Read(uint64_t lba, uint64_t count);
  AtapiResult ReadToc(const uint8_t* cdb);
  AtapiResult ReadDiscInformation(const uint8_t* cdb);
  AtapiResult GetConfiguration(const uint8_t* cdb);
  AtapiResult GetEventStatus(const uint8_t* cdb);
  AtapiResult ModeSense(const uint8_t* cdb, bool ten);
  AtapiResult StartStop(const uint8_t* cdb);

  uint64_t sectors_;
  bool tray_open_ = false;
  bool prevent_removal_ = false;
  // The last check condition's sense, reported by REQUEST SENSE.
  uint8_t sense_key_ = kSenseNone, asc_ = 0, ascq_ = 0;
  // GET EVENT STATUS NOTIFICATION's media event not yet reported:
  // 0 none, 2 new media, 3 media removal.
  uint8_t media_event_ = 0;
};

}  // namespace hv::ahci

#endif  // HV_DEVPROC_AHCI_ATAPI_CDROM_H_
