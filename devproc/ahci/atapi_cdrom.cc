#include "devproc/ahci/atapi_cdrom.h"

#include <algorithm>
#include <cstring>

namespace hv::ahci {
namespace {

// Opcodes (SPC-4, MMC-6).
enum : uint8_t {
  kTestUnitReady = 0x00,
  kRequestSense = 0x03,
  kInquiry = 0x12,
  kModeSelect6 = 0x15,
  kModeSense6 = 0x1a,
  kStartStopUnit = 0x1b,
  kPreventAllow = 0x1e,
  kReadCapacity = 0x25,
  kRead10 = 0x28,
  kSeek10 = 0x2b,
  kVerify10 = 0x2f,
  kReadToc = 0x43,
  kGetConfiguration = 0x46,
  kGetEventStatus = 0x4a,
  kReadDiscInformation = 0x51,
  kModeSelect10 = 0x55,
  kModeSense10 = 0x5a,
  kRead12 = 0xa8,
  kSetCdSpeed = 0xbb,
};

// MMC profiles.
constexpr uint16_t kProfileCdRom = 0x0008;
constexpr uint16_t kProfileDvdRom = 0x0010;
// A CD holds at most about 800 MB; anything bigger is reported as a DVD.
constexpr uint64_t kMaxCdSectors = 400000;

uint16_t Be16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
uint32_t Be32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}
void PutBe16(uint8_t* p, uint16_t v) {
  p[0] = v >> 8;
  p[1] = v;
}
void PutBe32(uint8_t* p, uint32_t v) {
  p[0] = v >> 24;
  p[1] = v >> 16;
  p[2] = v >> 8;
  p[3] = v;
}
void PutPadded(uint8_t* p, const char* text, size_t width) {
  memset(p, ' ', width);
  memcpy(p, text, std::min(strlen(text), width));
}

// A TOC address: an LBA, or with MSF minute/second/frame (150 frames of lead-in).
void PutAddress(uint8_t* p, uint64_t lba, bool msf) {
  if (!msf) {
    PutBe32(p, static_cast<uint32_t>(lba));
    return;
  }
  uint64_t frames = lba + 150;
  p[0] = 0;
  p[1] = static_cast<uint8_t>(std::min<uint64_t>(frames / (60 * 75), 255));
  p[2] = (frames / 75) % 60;
  p[3] = frames % 75;
}

}  // namespace

AtapiCdrom::AtapiCdrom(uint64_t image_bytes) : sectors_(image_bytes / kCdSectorSize) {}

AtapiResult AtapiCdrom::Check(uint8_t key, uint8_t asc, uint8_t ascq) {
  sense_key_ = key;
  asc_ = asc;
  ascq_ = ascq;
  AtapiResult r;
  r.check_condition = true;
  r.sense_key = key;
  return r;
}

AtapiResult AtapiCdrom::Data(std::vector<uint8_t> bytes, uint32_t allocation) {
  if (bytes.size() > allocation) bytes.resize(allocation);
  AtapiResult r;
  r.data = std::move(bytes);
  return r;
}

AtapiResult AtapiCdrom::ReadFailed() { return Check(kSenseMediumError, 0x11, 0x00); }

AtapiResult AtapiCdrom::Execute(const uint8_t* cdb) {
  uint8_t op = cdb[0];
  if (op == kRequestSense) return RequestSense(cdb);
  // Every other command replaces the sense data.
  sense_key_ = kSenseNone;
  asc_ = ascq_ = 0;
  // Commands that work without a medium.
  switch (op) {
    case kInquiry: return Inquiry(cdb);
    case kGetConfiguration: return GetConfiguration(cdb);
    case kGetEventStatus: return GetEventStatus(cdb);
    case kModeSense6: return ModeSense(cdb, false);
    case kModeSense10: return ModeSense(cdb, true);
    case kStartStopUnit: return StartStop(cdb);
    case kPreventAllow:
      prevent_removal_ = cdb[4] & 1;
      return {};
    case kModeSelect6:
    case kModeSelect10:
    case kSetCdSpeed:
      return {};  // nothing to change on a read-only drive; the data is ignored
    default:
      break;
  }
  bool needs_medium = op == kTestUnitReady || op == kReadCapacity || op == kRead10 ||
                      op == kRead12 || op == kReadToc || op == kReadDiscInformation ||
                      op == kSeek10 || op == kVerify10;
  if (!needs_medium) return Check(kSenseIllegalRequest, 0x20, 0x00);  // invalid opcode
  if (tray_open_) return Check(kSenseNotReady, 0x3a, 0x02);  // medium not present, tray open
  switch (op) {
    case kTestUnitReady: return {};
    case kReadCapacity: return ReadCapacity();
    case kRead10: return Read(Be32(&cdb[2]), Be16(&cdb[7]));
    case kRead12: return Read(Be32(&cdb[2]), Be32(&cdb[6]));
    case kReadToc: return ReadToc(cdb);
    case kReadDiscInformation: return ReadDiscInformation(cdb);
    case kSeek10:
    case kVerify10:
      if (Be32(&cdb[2]) >= sectors_) return Check(kSenseIllegalRequest, 0x21, 0x00);
      return {};
    default: return Check(kSenseIllegalRequest, 0x20, 0x00);
  }
}

AtapiResult AtapiCdrom::RequestSense(const uint8_t* cdb) {
  std::vector<uint8_t> s(18, 0);
  s[0] = 0x70;  // current error, fixed format
  s[2] = sense_key_;
  s[7] = 10;    // additional length
  s[12] = asc_;
  s[13] = ascq_;
  if (tray_open_ && sense_key_ == kSenseNone) {
    s[2] = kSenseNotReady;
    s[12] = 0x3a;
    s[13] = 0x02;
  }
  sense_key_ = kSenseNone;
  asc_ = ascq_ = 0;
  return Data(std::move(s), cdb[4]);
}

AtapiResult AtapiCdrom::Inquiry(const uint8_t* cdb) {
  if (cdb[1] & 1) return Check(kSenseIllegalRequest, 0x24, 0x00);  // no VPD pages
  std::vector<uint8_t> d(36, 0);
  d[0] = 0x05;  // CD/DVD device
  d[1] = 0x80;  // removable medium
  d[2] = 0x05;  // SPC-3
  d[3] = 0x32;  // response data format 2
  d[4] = 36 - 5;
  PutPadded(&d[8], "HV", 8);
  PutPadded(&d[16], "HV DVD-ROM", 16);
  PutPadded(&d[32], "1.0", 4);
  return Data(std::move(d), Be16(&cdb[3]));
}

AtapiResult AtapiCdrom::ReadCapacity() {
  std::vector<uint8_t> d(8, 0);
  PutBe32(&d[0], sectors_ == 0 ? 0 : static_cast<uint32_t>(std::min<uint64_t>(sectors_ - 1, ~0u)));
  PutBe32(&d[4], kCdSectorSize);
  return Data(std::move(d), 8);
}

AtapiResult AtapiCdrom::Read(uint64_t lba, uint64_t count) {
  if (lba + count > sectors_) return Check(kSenseIllegalRequest, 0x21, 0x00);  // LBA out of range
  AtapiResult r;
  if (count == 0) return r;
  r.read = true;
  r.read_offset = lba * kCdSectorSize;
  r.read_length = count * kCdSectorSize;
  return r;
}

AtapiResult AtapiCdrom::ReadToc(const uint8_t* cdb) {
  bool msf = cdb[1] & 2;
  uint8_t format = cdb[2] & 0x0f;
  if (format == 0 && (cdb[9] >> 6) != 0) format = cdb[9] >> 6;  // the older encoding
  uint8_t track = cdb[6];
  uint16_t allocation = Be16(&cdb[7]);
  std::vector<uint8_t> d(4, 0);
  auto descriptor = [&](uint8_t number, uint64_t lba) {
    uint8_t e[8] = {0, 0x14, number, 0};  // ADR 1, data track
    PutAddress(&e[4], lba, msf);
    d.insert(d.end(), e, e + 8);
  };
  switch (format) {
    case 0:  // the TOC: one data track and the lead-out
      if (track > 1 && track != 0xaa) return Check(kSenseIllegalRequest, 0x24, 0x00);
      if (track <= 1) descriptor(1, 0);
      descriptor(0xaa, sectors_);
      break;
    case 1:  // session information: one complete session
      descriptor(1, 0);
      break;
    default:
      return Check(kSenseIllegalRequest, 0x24, 0x00);
  }
  PutBe16(&d[0], d.size() - 2);
  d[2] = 1;  // first track or session
  d[3] = 1;  // last
  return Data(std::move(d), allocation);
}

AtapiResult AtapiCdrom::ReadDiscInformation(const uint8_t* cdb) {
  if ((cdb[1] & 7) != 0) return Check(kSenseIllegalRequest, 0x24, 0x00);  // standard info only
  std::vector<uint8_t> d(34, 0);
  PutBe16(&d[0], 32);
  d[2] = 0x0e;  // last session complete, disc complete
  d[3] = 1;     // first track
  d[4] = 1;     // sessions
  d[5] = 1;     // first track of the last session
  d[6] = 1;     // last track of the last session
  return Data(std::move(d), Be16(&cdb[7]));
}

AtapiResult AtapiCdrom::GetConfiguration(const uint8_t* cdb) {
  uint8_t requested = cdb[1] & 3;
  uint16_t start = Be16(&cdb[2]);
  uint16_t allocation = Be16(&cdb[7]);
  bool dvd = sectors_ > kMaxCdSectors;
  uint16_t current = tray_open_ ? 0 : (dvd ? kProfileDvdRom : kProfileCdRom);
  struct Feature {
    uint16_t code;
    std::vector<uint8_t> body;
    bool current;
  };
  std::vector<Feature> features;
  // Profile list: DVD-ROM and CD-ROM, the medium's one current.
  features.push_back({0x0000,
                      {0x00, 0x10, uint8_t(current == kProfileDvdRom), 0,
                       0x00, 0x08, uint8_t(current == kProfileCdRom), 0},
                      true});
  features.push_back({0x0001, {0, 0, 0, 2, 0, 0, 0, 0}, true});   // core: ATAPI
  features.push_back({0x0002, {0, 0, 0, 0}, true});               // morphing
  features.push_back({0x0003, {0x29, 0, 0, 0}, true});            // removable: tray, eject, lock
  features.push_back({0x0010, {0x00, 0x00, 0x08, 0x00, 0x01, 0x00, 0, 0}, current != 0});  // random readable
  features.push_back({0x001e, {0, 0, 0, 0}, current == kProfileCdRom});  // CD read
  features.push_back({0x001f, {0, 0, 0, 0}, current == kProfileDvdRom});  // DVD read
  std::vector<uint8_t> d(8, 0);
  PutBe16(&d[6], current);
  for (const Feature& f : features) {
    if (requested == 2 ? f.code != start : f.code < start) continue;
    if (requested == 1 && !f.current) continue;
    uint8_t head[4] = {uint8_t(f.code >> 8), uint8_t(f.code),
                       uint8_t((f.code == 0 || f.code == 1 ? 0x03 : 0x01) & (f.current ? 0xff : 0xfe)),
                       uint8_t(f.body.size())};
    if (f.code == 0x0001) head[2] = 0x0b;   // version 2, persistent, current
    d.insert(d.end(), head, head + 4);
    d.insert(d.end(), f.body.begin(), f.body.end());
  }
  PutBe32(&d[0], d.size() - 4);
  return Data(std::move(d), allocation);
}

AtapiResult AtapiCdrom::GetEventStatus(const uint8_t* cdb) {
  if (!(cdb[1] & 1)) return Check(kSenseIllegalRequest, 0x24, 0x00);  // only polled mode
  uint8_t classes = cdb[4];
  uint16_t allocation = Be16(&cdb[7]);
  std::vector<uint8_t> d(4, 0);
  d[3] = 0x10;  // supported: media
  if (classes & 0x10) {
    d[2] = 0x04;  // media class
    d.push_back(media_event_);
    d.push_back(tray_open_ ? 0x01 : 0x02);  // door open / media present
    d.push_back(0);
    d.push_back(0);
    media_event_ = 0;
  } else {
    d[2] = 0x80;  // no event available
  }
  PutBe16(&d[0], d.size() - 2);
  return Data(std::move(d), allocation);
}

AtapiResult AtapiCdrom::ModeSense(const uint8_t* cdb, bool ten) {
  uint8_t control = cdb[2] >> 6;
  uint8_t page = cdb[2] & 0x3f;
  uint32_t allocation = ten ? Be16(&cdb[7]) : cdb[4];
  if (control == 3) return Check(kSenseIllegalRequest, 0x39, 0x00);  // saving not supported
  std::vector<uint8_t> pages;
  if (page == 0x01 || page == 0x3f) {  // read-write error recovery
    uint8_t p[12] = {0x01, 10, 0, 5};
    if (control == 1) memset(p + 2, 0, 10);  // changeable: nothing
    pages.insert(pages.end(), p, p + 12);
  }
  if (page == 0x2a || page == 0x3f) {  // MM capabilities and mechanical status
    uint8_t p[22] = {0x2a, 20};
    if (control != 1) {
      p[2] = 0x00;                  // reads CD-ROM media
      p[4] = 0x71;                  // multi-session, mode 2 forms, audio play
      p[6] = 0x29;                  // tray loading, eject, lock
      PutBe16(&p[8], 16 * 176);     // max read speed (KB/s)
      PutBe16(&p[10], 256);         // volume levels
      PutBe16(&p[12], 512);         // buffer KB
      PutBe16(&p[14], 16 * 176);    // current read speed
    }
    pages.insert(pages.end(), p, p + 22);
  }
  if (pages.empty()) return Check(kSenseIllegalRequest, 0x24, 0x00);
  size_t header = ten ? 8 : 4;
  std::vector<uint8_t> d(header, 0);
  d.insert(d.end(), pages.begin(), pages.end());
  if (ten) {
    PutBe16(&d[0], d.size() - 2);
    d[2] = tray_open_ ? 0x70 : 0x01;  // medium type: door open / data CD
  } else {
    d[0] = d.size() - 1;
    d[1] = tray_open_ ? 0x70 : 0x01;
  }
  return Data(std::move(d), allocation);
}

AtapiResult AtapiCdrom::StartStop(const uint8_t* cdb) {
  bool load_eject = cdb[4] & 2;
  bool start = cdb[4] & 1;
  if (!load_eject) return {};  // spin up or down: nothing to do
  if (start) {
    if (tray_open_) {
      tray_open_ = false;
      media_event_ = 2;  // new media
    }
    return {};
  }
  if (prevent_removal_) return Check(kSenseIllegalRequest, 0x53, 0x02);  // removal prevented
  if (!tray_open_) {
    tray_open_ = true;
    media_event_ = 3;  // media removal
  }
  return {};
}

}  // namespace hv::ahci
