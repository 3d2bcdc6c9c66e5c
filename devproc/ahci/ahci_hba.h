// An AHCI 1.3 host bus adapter (Serial ATA AHCI 1.3.1) with up to 32 ports,
// each a SATA disk or an ATAPI CD-ROM: the ABAR registers, command lists and
// received-FIS areas in guest memory, and the ATA commands a generic driver
// issues (IDENTIFY, DMA and NCQ reads and writes, FLUSH CACHE, SET FEATURES,
// DATA SET MANAGEMENT TRIM). ATAPI packets go to AtapiCdrom.
//
// Everything the guest controls (command headers, FISes, PRD tables, packet
// bytes) is checked: a bad address or length, or an unknown opcode, ends that
// command with a task-file error (and sense data for ATAPI); it never reaches
// the host. Data moves by the ports' BlockBackends on their worker threads,
// straight between the disk and guest RAM, so one port's slow disk never holds
// up another's; completions run on the owner thread (DrainCompletions).
//
// Thread safety: one owner thread (the device's event loop).
#ifndef HV_DEVPROC_AHCI_AHCI_HBA_H_
#define HV_DEVPROC_AHCI_AHCI_HBA_H_

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/guest_memory.h"
#include "devproc/ahci/ahci_options.h"
#include "devproc/ahci/atapi_cdrom.h"
#include "devproc/block/block_backend.h"

namespace hv::ahci {

// Register offsets (AHCI 1.3.1, 3.1 and 3.3).
inline constexpr uint32_t kRegCap = 0x00;
inline constexpr uint32_t kRegGhc = 0x04;
inline constexpr uint32_t kRegIs = 0x08;
inline constexpr uint32_t kRegPi = 0x0c;
inline constexpr uint32_t kRegVs = 0x10;
inline constexpr uint32_t kRegCap2 = 0x24;
inline constexpr uint32_t kPortBase = 0x100;
inline constexpr uint32_t kPortStride = 0x80;
enum PortReg : uint32_t {
  kPxClb = 0x00, kPxClbu = 0x04, kPxFb = 0x08, kPxFbu = 0x0c, kPxIs = 0x10, kPxIe = 0x14,
  kPxCmd = 0x18, kPxTfd = 0x20, kPxSig = 0x24, kPxSsts = 0x28, kPxSctl = 0x2c, kPxSerr = 0x30,
  kPxSact = 0x34, kPxCi = 0x38, kPxSntf = 0x3c, kPxFbs = 0x40,
};

// GHC bits.
inline constexpr uint32_t kGhcHr = 1u << 0;
inline constexpr uint32_t kGhcIe = 1u << 1;
inline constexpr uint32_t kGhcAe = 1u << 31;

// PxCMD bits.
inline constexpr uint32_t kCmdSt = 1u << 0;
inline constexpr uint32_t kCmdSud = 1u << 1;
inline constexpr uint32_t kCmdPod = 1u << 2;
inline constexpr uint32_t kCmdClo = 1u << 3;
inline constexpr uint32_t kCmdFre = 1u << 4;
inline constexpr uint32_t kCmdFr = 1u << 14;
inline constexpr uint32_t kCmdCr = 1u << 15;
inline constexpr uint32_t kCmdAtapi = 1u << 24;

// PxIS bits.
inline constexpr uint32_t kIsDhrs = 1u << 0;   // D2H register FIS received
inline constexpr uint32_t kIsPss = 1u << 1;    // PIO setup FIS received
inline constexpr uint32_t kIsSdbs = 1u << 3;   // set device bits FIS received
inline constexpr uint32_t kIsDps = 1u << 5;    // a PRD with I set completed
inline constexpr uint32_t kIsTfes = 1u << 30;  // task file error

// Received-FIS area offsets.
inline constexpr uint32_t kRfisPioSetup = 0x20;
inline constexpr uint32_t kRfisD2h = 0x40;
inline constexpr uint32_t kRfisSdb = 0x58;

// ATA status and error bits.
inline constexpr uint8_t kStatusErr = 0x01;
inline constexpr uint8_t kStatusDrq = 0x08;
inline constexpr uint8_t kStatusDsc = 0x10;
inline constexpr uint8_t kStatusDrdy = 0x40;
inline constexpr uint8_t kStatusBsy = 0x80;
inline constexpr uint8_t kErrorAbrt = 0x04;
inline constexpr uint8_t kErrorIdnf = 0x10;
inline constexpr uint8_t kErrorUnc = 0x40;

// ATA commands the disk executes.
inline constexpr uint8_t kAtaDsm = 0x06;
inline constexpr uint8_t kAtaReadDmaExt = 0x25;
inline constexpr uint8_t kAtaWriteDmaExt = 0x35;
inline constexpr uint8_t kAtaReadVerify = 0x40;
inline constexpr uint8_t kAtaReadVerifyExt = 0x42;
inline constexpr uint8_t kAtaReadFpdma = 0x60;
inline constexpr uint8_t kAtaWriteFpdma = 0x61;
inline constexpr uint8_t kAtaDeviceReset = 0x08;
inline constexpr uint8_t kAtaPacket = 0xa0;
inline constexpr uint8_t kAtaIdentifyPacket = 0xa1;
inline constexpr uint8_t kAtaReadDma = 0xc8;
inline constexpr uint8_t kAtaWriteDma = 0xca;
inline constexpr uint8_t kAtaSetMultiple = 0xc6;
inline constexpr uint8_t kAtaStandbyImmediate = 0xe0;
inline constexpr uint8_t kAtaIdleImmediate = 0xe1;
inline constexpr uint8_t kAtaIdle = 0xe3;
inline constexpr uint8_t kAtaCheckPowerMode = 0xe5;
inline constexpr uint8_t kAtaFlushCache = 0xe7;
inline constexpr uint8_t kAtaFlushCacheExt = 0xea;
inline constexpr uint8_t kAtaIdentify = 0xec;
inline constexpr uint8_t kAtaSetFeatures = 0xef;

inline constexpr int kSlots = 32;

// One port as the device process sets it up.
struct PortSetup {
  AhciPortOptions options;
  std::string serial;  // what IDENTIFY reports
  block::BlockBackend* backend = nullptr;  // not owned; outlives the Hba
};

// The 512-byte IDENTIFY (PACKET) DEVICE data of a port (exposed for tests).
std::array<uint16_t, 256> IdentifyData(const PortSetup& port, uint64_t sectors,
                                       uint32_t logical_sector_size, bool write_cache);

class Hba {
 public:
  // `interrupt` runs whenever a port raised an enabled interrupt (the caller
  // delivers MSI, or raises INTx while InterruptPending()).
  Hba(const GuestMemory& memory, std::vector<PortSetup> ports, std::function<void()> interrupt);
  ~Hba();
  Hba(const Hba&) = delete;
  Hba& operator=(const Hba&) = delete;

  // Size of the ABAR (BAR 5) window: a power of two that holds every port.
  uint32_t abar_size() const;
  // Register accesses at `offset` in the ABAR; sizes 1, 2, 4 or 8 (split into dwords).
  uint64_t Read(uint32_t offset, uint8_t size);
  void Write(uint32_t offset, uint8_t size, uint64_t value);

  // GHC.IE and some port's bit in IS: what INTx shows.
  bool InterruptPending() const;
  // Runs finished commands' completions (call when a backend's event fd is readable).
  void DrainCompletions();
  // Commands handed to a backend and not completed yet (tests).
  size_t in_flight() const;
  int num_ports() const { return static_cast<int>(ports_.size()); }
  // Waits for every port's backend and runs the completions (tests).
  void WaitIdle();

 private:
  struct Port;
  struct Command;
  uint32_t ReadReg(uint32_t offset);
  void WriteReg(uint32_t offset, uint32_t value);
  uint32_t ReadPort(Port& p, uint32_t reg);
  void WritePort(Port& p, uint32_t reg, uint32_t value);
  void ResetHba();
  void ResetPort(Port& p, bool power_on);
  void LinkUp(Port& p);
  void StartCommands(Port& p);
  void ExecuteSlot(Port& p, int slot);
  void ExecuteAta(Port& p, Command& c);
  void ExecuteAtapi(Port& p, Command& c);
  void StartDma(Port& p, Command& c, bool write, uint64_t lba, uint64_t count, bool ncq);
  void StartTrim(Port& p, Command& c);
  void StartFlush(Port& p, Command& c);
  void Submit(Port& p, Command c, block::BlockOp op,
              std::function<void(Port&, Command&, absl::Status)> then);
  // Finishes a non-queued command: D2H FIS, PxCI bit cleared, interrupt.
  void Complete(Port& p, const Command& c, uint64_t bytes);
  void CompleteNcq(Port& p, const Command& c);
  void PioIn(Port& p, Command& c, const uint8_t* data, size_t len);
  void Fail(Port& p, const Command& c, uint8_t error, uint8_t status = kStatusDrdy | kStatusErr);
  void FailNcq(Port& p, const Command& c, uint8_t error);
  void AtapiDone(Port& p, Command& c, const AtapiResult& r);
  void PostD2h(Port& p, uint8_t status, uint8_t error, bool interrupt, const uint8_t* sig_fis);
  void PostPioSetup(Port& p, uint8_t status, uint32_t bytes);
  void PostSdb(Port& p, uint32_t finished_tags, uint8_t status, uint8_t error);
  void RaisePort(Port& p, uint32_t bits);
  void UpdateInterrupt();
  // The PRD table of `c` as iovecs into guest RAM, `bytes` long (longer tables
  // are cut); an error if any entry leaves RAM or the table is too short.
  absl::StatusOr<std::vector<struct iovec>> MapPrdt(const Command& c, uint64_t bytes) const;
  absl::Status CopyToPrdt(const Command& c, const uint8_t* data, size_t len) const;
  absl::StatusOr<std::vector<uint8_t>> CopyFromPrdt(const Command& c, size_t len) const;
  void SetPrdbc(Port& p, const Command& c, uint32_t bytes);

  const GuestMemory& memory_;
  std::vector<std::unique_ptr<Port>> ports_;
  std::function<void()> interrupt_;
  uint32_t ghc_ = kGhcAe;
  uint32_t is_ = 0;
};

}  // namespace hv::ahci

#endif  // HV_DEVPROC_AHCI_AHCI_HBA_H_
