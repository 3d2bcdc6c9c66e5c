#include "devproc/ahci/ahci_hba.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace hv::ahci {
namespace {

constexpr uint32_t kVersion = 0x00010301;  // AHCI 1.3.1
constexpr uint8_t kFisH2d = 0x27;
constexpr uint8_t kFisD2h = 0x34;
constexpr uint8_t kFisSdb = 0xa1;
constexpr uint8_t kFisPioSetup = 0x5f;
constexpr uint32_t kDiskSignature = 0x00000101;
constexpr uint32_t kAtapiSignature = 0xeb140101;
constexpr uint32_t kLinkUpSsts = 0x133;  // device present, Gen3, active
constexpr uint8_t kStatusReady = kStatusDrdy | kStatusDsc;
// DATA SET MANAGEMENT: 512-byte blocks of range entries per command (word 105).
constexpr uint32_t kMaxDsmBlocks = 8;
constexpr uint32_t kPortIeMask = 0xfdc000ff;  // the PxIE bits AHCI 1.3 defines
constexpr uint32_t kCmdWritable = kCmdSt | kCmdSud | kCmdPod | kCmdFre | kCmdAtapi |
                                  (1u << 25) /* DLAE */ | (1u << 26) /* ALPE */ |
                                  (1u << 27) /* ASP */;

uint32_t Le32(const uint8_t* p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}
uint64_t Le64(const uint8_t* p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}

void PutString(std::array<uint16_t, 256>& id, int first_word, int words, const std::string& s) {
  for (int i = 0; i < words; ++i) {
    char a = 2 * i < static_cast<int>(s.size()) ? s[2 * i] : ' ';
    char b = 2 * i + 1 < static_cast<int>(s.size()) ? s[2 * i + 1] : ' ';
    id[first_word + i] = uint16_t(uint8_t(a)) << 8 | uint8_t(b);
  }
}

int Log2(uint32_t v) {
  int n = 0;
  while (v > 1) {
    v >>= 1;
    ++n;
  }
  return n;
}

}  // namespace

std::array<uint16_t, 256> IdentifyData(const PortSetup& port, uint64_t sectors,
                                       uint32_t logical_sector_size, bool write_cache) {
  std::array<uint16_t, 256> id{};
  const AhciPortOptions& o = port.options;
  PutString(id, 10, 10, port.serial);
  PutString(id, 23, 4, o.revision.empty() ? "1.0" : o.revision);
  if (o.cdrom) {
    PutString(id, 27, 20, o.model.empty() ? "HV DVD-ROM" : o.model);
    id[0] = 0x85c0;   // ATAPI, CD-ROM, removable, DRQ within 50 us, 12-byte packets
    id[49] = 0x0300;  // LBA, DMA
    id[53] = 0x0006;  // words 64-70 and 88 valid
    id[62] = 0x0007;  // DMADIR not needed; multiword DMA modes
    id[63] = 0x0007;
    id[64] = 0x0003;  // PIO modes 3, 4
    id[65] = id[66] = id[67] = id[68] = 120;
    id[76] = 0x000e;  // SATA Gen1-3
    id[80] = 0x01f0;  // ATA/ATAPI-4 to ATA8-ACS
    id[82] = 0x4210;  // NOP, DEVICE RESET, PACKET
    id[83] = 0x4000;
    id[84] = 0x4000;
    id[85] = 0x4210;
    id[86] = 0x0000;
    id[87] = 0x4000;
    id[88] = 0x407f;  // UDMA 0-6, mode 6 selected
  } else {
    PutString(id, 27, 20, o.model.empty() ? "HV SATA DISK" : o.model);
    // Geometry for software that still asks: 16 heads, 63 sectors per track.
    uint64_t cylinders = std::min<uint64_t>(sectors / (16 * 63), 16383);
    id[0] = 0x0040;  // fixed device
    id[1] = cylinders;
    id[3] = 16;
    id[6] = 63;
    id[47] = 0x8010;  // READ/WRITE MULTIPLE: 16 sectors
    id[49] = 0x0300;  // LBA, DMA
    id[50] = 0x4000;
    id[53] = 0x0007;  // words 54-58, 64-70 and 88 valid
    id[54] = cylinders;
    id[55] = 16;
    id[56] = 63;
    uint32_t chs = cylinders * 16 * 63;
    id[57] = chs & 0xffff;
    id[58] = chs >> 16;
    id[59] = 0x0110;  // multiple sector setting valid: 16
    uint32_t lba28 = std::min<uint64_t>(sectors, 0x0fffffff);
    id[60] = lba28 & 0xffff;
    id[61] = lba28 >> 16;
    id[63] = 0x0007;
    id[64] = 0x0003;
    id[65] = id[66] = id[67] = id[68] = 120;
    bool trim = !o.no_delete && !o.read_only;
    if (trim) id[69] = 0x4020;  // deterministic read after TRIM, zeroes after TRIM
    id[75] = kSlots - 1;        // queue depth 32
    id[76] = 0x010e;            // NCQ, SATA Gen1-3
    id[80] = 0x01f0;
    id[82] = 0x4060;            // NOP, read look-ahead, volatile write cache
    id[83] = 0x7400;            // FLUSH CACHE EXT, FLUSH CACHE, 48-bit LBA
    id[84] = 0x4000;
    id[85] = 0x4040 | (write_cache ? 0x0020 : 0);
    id[86] = 0x3400;
    id[87] = 0x4000;
    id[88] = 0x407f;
    id[93] = 0;
    for (int i = 0; i < 4; ++i) id[100 + i] = (sectors >> (16 * i)) & 0xffff;
    id[105] = trim ? kMaxDsmBlocks : 0;
    uint32_t physical = std::max(port.options.physical_sector_size, logical_sector_size);
    id[106] = 0x4000;
    if (physical > logical_sector_size) id[106] |= 0x2000 | Log2(physical / logical_sector_size);
    if (logical_sector_size > 512) {
      id[106] |= 0x1000;
      id[117] = (logical_sector_size / 2) & 0xffff;
      id[118] = (logical_sector_size / 2) >> 16;
    }
    id[169] = trim ? 1 : 0;  // DATA SET MANAGEMENT TRIM
    id[209] = 0x4000;        // logical sectors aligned at 0
    id[217] = o.rotation_rate;
  }
  // Integrity word: signature A5h and a checksum that makes all 512 bytes sum to 0.
  id[255] = 0x00a5;
  uint8_t sum = 0;
  for (int i = 0; i < 255; ++i) sum += (id[i] & 0xff) + (id[i] >> 8);
  sum += 0xa5;
  id[255] |= uint16_t(uint8_t(-sum)) << 8;
  return id;
}

struct Hba::Command {
  int slot = 0;
  uint64_t header = 0;  // guest address of its command header
  uint64_t table = 0;   // CTBA
  uint16_t prdtl = 0;
  bool atapi = false;
  bool ncq = false;
  int tag = 0;
  uint8_t fis[20] = {};
  uint8_t acmd[16] = {};
};

struct Hba::Port {
  int index = 0;
  PortSetup setup;
  std::unique_ptr<AtapiCdrom> cd;
  uint64_t sectors = 0;
  uint32_t sector_size = 512;
  bool write_cache = true;
  uint32_t clb = 0, clbu = 0, fb = 0, fbu = 0, is = 0, ie = 0, cmd = 0, tfd = 0, sig = 0;
  uint32_t ssts = 0, sctl = 0, serr = 0, sact = 0, ci = 0;
  uint32_t issued = 0;          // slots taken from PxCI and not finished
  bool halted = false;          // a task-file error stops the port until ST goes 0 -> 1
  bool signature_pending = false;  // the reset's D2H FIS waits for FIS receive
  uint64_t generation = 0;      // bumped when commands in flight stop counting
  size_t in_flight = 0;

  uint64_t command_list() const { return uint64_t{clbu} << 32 | clb; }
  uint64_t fis_base() const { return uint64_t{fbu} << 32 | fb; }
  bool atapi() const { return setup.options.cdrom; }
};

Hba::Hba(const GuestMemory& memory, std::vector<PortSetup> ports, std::function<void()> interrupt)
    : memory_(memory), interrupt_(std::move(interrupt)) {
  for (size_t i = 0; i < ports.size() && i < kMaxPorts; ++i) {
    auto p = std::make_unique<Port>();
    p->index = i;
    p->setup = std::move(ports[i]);
    uint64_t bytes = p->setup.backend->size();
    if (p->atapi()) {
      p->cd = std::make_unique<AtapiCdrom>(bytes);
      p->sector_size = kCdSectorSize;
    } else {
      p->sector_size = p->setup.backend->logical_block_size();
    }
    p->sectors = bytes / p->sector_size;
    ports_.push_back(std::move(p));
  }
  ResetHba();
}

Hba::~Hba() { WaitIdle(); }

uint32_t Hba::abar_size() const {
  uint32_t need = kPortBase + kPortStride * ports_.size();
  uint32_t size = 0x1000;
  while (size < need) size <<= 1;
  return size;
}

size_t Hba::in_flight() const {
  size_t n = 0;
  for (const auto& p : ports_) n += p->in_flight;
  return n;
}

void Hba::DrainCompletions() {
  for (auto& p : ports_) p->setup.backend->DrainCompletions();
}

void Hba::WaitIdle() {
  for (bool busy = true; busy;) {
    busy = false;
    for (auto& p : ports_) {
      block::BlockBackend& b = *p->setup.backend;
      while (b.pending() > 0) {
        busy = true;
        b.WaitForCompletion();
        b.DrainCompletions();
      }
    }
  }
}

bool Hba::InterruptPending() const { return (ghc_ & kGhcIe) && is_ != 0; }

void Hba::UpdateInterrupt() {
  if (InterruptPending()) interrupt_();
}

void Hba::RaisePort(Port& p, uint32_t bits) {
  p.is |= bits;
  if (p.is & p.ie) {
    is_ |= 1u << p.index;
    UpdateInterrupt();
  }
}

// ---------------------------------------------------------------- registers

uint64_t Hba::Read(uint32_t offset, uint8_t size) {
  if (size == 8) return ReadReg(offset) | uint64_t{ReadReg(offset + 4)} << 32;
  uint32_t v = ReadReg(offset & ~3u);
  v >>= 8 * (offset & 3);
  return size >= 4 ? v : v & ((1u << (8 * size)) - 1);
}

void Hba::Write(uint32_t offset, uint8_t size, uint64_t value) {
  if (size == 8) {
    WriteReg(offset, value & 0xffffffff);
    WriteReg(offset + 4, value >> 32);
    return;
  }
  if (size == 4 && (offset & 3) == 0) {
    WriteReg(offset, value);
    return;
  }
  // A narrow write: merge into the dword. Write-1-to-clear and write-1-to-set
  // registers must see only the written bytes' bits.
  uint32_t aligned = offset & ~3u;
  uint32_t shift = 8 * (offset & 3);
  uint32_t mask = (size >= 4 ? 0xffffffffu : ((1u << (8 * size)) - 1)) << shift;
  uint32_t bits = (static_cast<uint32_t>(value) << shift) & mask;
  bool one_bits_only = aligned == kRegIs ||
                       (aligned >= kPortBase && ((aligned - kPortBase) % kPortStride == kPxIs ||
                                                 (aligned - kPortBase) % kPortStride == kPxSerr ||
                                                 (aligned - kPortBase) % kPortStride == kPxSact ||
                                                 (aligned - kPortBase) % kPortStride == kPxCi));
  WriteReg(aligned, one_bits_only ? bits : ((ReadReg(aligned) & ~mask) | bits));
}

uint32_t Hba::ReadReg(uint32_t offset) {
  if (offset >= kPortBase) {
    uint32_t n = (offset - kPortBase) / kPortStride;
    if (n >= ports_.size()) return 0;
    return ReadPort(*ports_[n], (offset - kPortBase) % kPortStride);
  }
  switch (offset) {
    case kRegCap: {
      uint32_t cap = (1u << 31)                 // S64A: 64-bit addressing
                     | (1u << 30)               // SNCQ: native command queuing
                     | (1u << 24)               // SCLO: command list override
                     | (3u << 20)               // ISS: Gen3
                     | (1u << 18)               // SAM: AHCI only
                     | ((kSlots - 1u) << 8)     // NCS: 32 command slots
                     | (ports_.size() - 1);     // NP
      return cap;
    }
    case kRegGhc: return ghc_;
    case kRegIs: return is_;
    case kRegPi:
      return ports_.size() >= 32 ? 0xffffffffu : (1u << ports_.size()) - 1;
    case kRegVs: return kVersion;
    default: return 0;  // CCC, enclosure management, CAP2, BOHC: none
  }
}

void Hba::WriteReg(uint32_t offset, uint32_t value) {
  if (offset >= kPortBase) {
    uint32_t n = (offset - kPortBase) / kPortStride;
    if (n < ports_.size()) WritePort(*ports_[n], (offset - kPortBase) % kPortStride, value);
    return;
  }
  switch (offset) {
    case kRegGhc:
      if (value & kGhcHr) {
        ResetHba();
        return;
      }
      ghc_ = kGhcAe | (value & kGhcIe);  // AE is fixed at 1 (CAP.SAM)
      UpdateInterrupt();
      return;
    case kRegIs:
      is_ &= ~value;
      // A port whose enabled status is still set keeps asking.
      for (auto& p : ports_) {
        if (p->is & p->ie) is_ |= 1u << p->index;
      }
      UpdateInterrupt();
      return;
    default:
      return;
  }
}

uint32_t Hba::ReadPort(Port& p, uint32_t reg) {
  switch (reg) {
    case kPxClb: return p.clb;
    case kPxClbu: return p.clbu;
    case kPxFb: return p.fb;
    case kPxFbu: return p.fbu;
    case kPxIs: return p.is;
    case kPxIe: return p.ie;
    case kPxCmd: return p.cmd;
    case kPxTfd: return p.tfd;
    case kPxSig: return p.sig;
    case kPxSsts: return p.ssts;
    case kPxSctl: return p.sctl;
    case kPxSerr: return p.serr;
    case kPxSact: return p.sact;
    case kPxCi: return p.ci;
    default: return 0;
  }
}

void Hba::WritePort(Port& p, uint32_t reg, uint32_t value) {
  switch (reg) {
    case kPxClb: p.clb = value & ~0x3ffu; return;
    case kPxClbu: p.clbu = value; return;
    case kPxFb: p.fb = value & ~0xffu; return;
    case kPxFbu: p.fbu = value; return;
    case kPxIs:
      p.is &= ~value;
      return;
    case kPxIe:
      p.ie = value & kPortIeMask;
      if (p.is & p.ie) {
        is_ |= 1u << p.index;
        UpdateInterrupt();
      }
      return;
    case kPxCmd: {
      uint32_t old = p.cmd;
      p.cmd = (p.cmd & ~kCmdWritable) | (value & kCmdWritable);
      if (value & kCmdClo) p.tfd &= ~uint32_t{kStatusBsy | kStatusDrq};  // CLO clears at once
      if ((p.cmd & kCmdFre) && !(old & kCmdFre)) {
        p.cmd |= kCmdFr;
        if (p.signature_pending) PostD2h(p, p.tfd & 0xff, 0, false, nullptr);
      } else if (!(p.cmd & kCmdFre)) {
        p.cmd &= ~kCmdFr;
      }
      if ((p.cmd & kCmdSt) && !(old & kCmdSt)) {
        p.cmd |= kCmdCr;
        p.halted = false;
        StartCommands(p);
      } else if (!(p.cmd & kCmdSt) && (old & kCmdSt)) {
        // Stopping the engine drops every command; ones still running on a
        // backend complete into nothing.
        p.cmd &= ~(kCmdCr | (0x1fu << 8));
        p.ci = p.sact = p.issued = 0;
        p.halted = false;
        ++p.generation;
      }
      return;
    }
    case kPxSctl: {
      uint32_t old_det = p.sctl & 0xf;
      p.sctl = value & 0xfff;
      uint32_t det = value & 0xf;
      if (det == 1) {
        // COMRESET: the link drops while DET stays 1.
        p.ssts = 0;
        p.tfd = kStatusBsy | 0x7f;
        ++p.generation;
        p.ci = p.sact = p.issued = 0;
      } else if (det == 0 && old_det == 1) {
        LinkUp(p);
      } else if (det == 4) {
        p.ssts = 4;  // offline
      }
      return;
    }
    case kPxSerr: p.serr &= ~value; return;
    case kPxSact:
      if (p.cmd & kCmdSt) p.sact |= value;
      return;
    case kPxCi:
      if (p.cmd & kCmdSt) {
        p.ci |= value;
        StartCommands(p);
      }
      return;
    default:
      return;
  }
}

void Hba::ResetHba() {
  ghc_ = kGhcAe;
  is_ = 0;
  for (auto& p : ports_) ResetPort(*p, true);
}

void Hba::ResetPort(Port& p, bool power_on) {
  ++p.generation;
  p.clb = p.clbu = p.fb = p.fbu = 0;
  p.is = p.ie = 0;
  p.cmd = kCmdSud | kCmdPod | (p.atapi() ? kCmdAtapi : 0);
  p.sctl = p.serr = p.sact = p.ci = p.issued = 0;
  p.halted = false;
  if (power_on) {
    p.write_cache = true;
    p.sig = 0xffffffff;
  }
  LinkUp(p);
}

// The device answers a reset with its signature in a D2H register FIS.
void Hba::LinkUp(Port& p) {
  p.ssts = kLinkUpSsts;
  p.sig = p.atapi() ? kAtapiSignature : kDiskSignature;
  p.tfd = p.atapi() ? 0 : kStatusReady;
  p.signature_pending = true;
  if (p.cmd & kCmdFr) PostD2h(p, p.tfd & 0xff, 0, false, nullptr);
}

// --------------------------------------------------------------------- FISes

void Hba::PostD2h(Port& p, uint8_t status, uint8_t error, bool interrupt, const uint8_t* echo) {
  uint8_t fis[20] = {kFisD2h, uint8_t(interrupt ? 0x40 : 0), status, error};
  if (p.signature_pending) {
    // The signature: count 1, LBA 1 (disk) or 0x14/0xEB in the cylinder registers (ATAPI).
    fis[4] = p.sig & 0xff;
    fis[5] = (p.sig >> 16) & 0xff;
    fis[6] = p.sig >> 24;
    fis[12] = p.sig >> 8;
    p.signature_pending = !(p.cmd & kCmdFr);
  } else if (echo != nullptr) {
    memcpy(&fis[4], &echo[4], 7);  // LBA and device
    fis[12] = echo[12];
    fis[13] = echo[13];
  }
  if (p.cmd & kCmdFr) (void)memory_.Write(p.fis_base() + kRfisD2h, fis, sizeof(fis));
  if (interrupt) RaisePort(p, kIsDhrs);
}

void Hba::PostPioSetup(Port& p, uint8_t status, uint32_t bytes) {
  uint8_t fis[20] = {kFisPioSetup, 0x60 /* device to host, interrupt */, uint8_t(status | kStatusDrq),
                     0};
  fis[15] = status;  // E_Status: the status after the transfer
  fis[16] = bytes & 0xff;
  fis[17] = bytes >> 8;
  if (p.cmd & kCmdFr) (void)memory_.Write(p.fis_base() + kRfisPioSetup, fis, sizeof(fis));
  p.is |= kIsPss;  // raised together with the D2H FIS that ends the command
}

void Hba::PostSdb(Port& p, uint32_t tags, uint8_t status, uint8_t error) {
  uint8_t fis[8] = {kFisSdb, 0x40, uint8_t(status & 0x77), error};
  memcpy(&fis[4], &tags, 4);
  if (p.cmd & kCmdFr) (void)memory_.Write(p.fis_base() + kRfisSdb, fis, sizeof(fis));
  RaisePort(p, kIsSdbs);
}

// ------------------------------------------------------------------ commands

void Hba::StartCommands(Port& p) {
  if (!(p.cmd & kCmdSt) || p.halted) return;
  uint32_t fresh = p.ci & ~p.issued;
  for (int slot = 0; slot < kSlots && fresh != 0; ++slot) {
    uint32_t bit = 1u << slot;
    if (!(fresh & bit)) continue;
    fresh &= ~bit;
    if (p.halted || !(p.cmd & kCmdSt)) return;
    p.issued |= bit;
    p.cmd = (p.cmd & ~(0x1fu << 8)) | (uint32_t(slot) << 8);  // CCS
    ExecuteSlot(p, slot);
  }
}

void Hba::ExecuteSlot(Port& p, int slot) {
  Command c;
  c.slot = slot;
  c.header = p.command_list() + 32ull * slot;
  uint8_t header[16];
  if (!memory_.Read(c.header, header, sizeof(header)).ok()) {
    HV_DEBUG("ahci port %d: command header of slot %d is outside RAM", p.index, slot);
    Fail(p, c, kErrorAbrt);
    return;
  }
  uint32_t dw0 = Le32(header);
  uint32_t cfl = dw0 & 0x1f;
  c.atapi = dw0 & (1u << 5);
  c.prdtl = dw0 >> 16;
  c.table = Le64(&header[8]) & ~0x7full;
  if (cfl < 5 || cfl > 16 || !memory_.Read(c.table, c.fis, sizeof(c.fis)).ok() ||
      (c.atapi && !memory_.Read(c.table + 0x40, c.acmd, sizeof(c.acmd)).ok())) {
    HV_DEBUG("ahci port %d: slot %d: bad command FIS length %u or table %#llx", p.index, slot, cfl,
             static_cast<unsigned long long>(c.table));
    Fail(p, c, kErrorAbrt);
    return;
  }
  if (c.fis[0] != kFisH2d) {
    Fail(p, c, kErrorAbrt);
    return;
  }
  if (!(c.fis[1] & 0x80)) {
    // A device control update: SRST set, then cleared, is a software reset.
    bool srst = c.fis[15] & 0x04;
    p.ci &= ~(1u << slot);
    p.issued &= ~(1u << slot);
    if (srst) {
      p.tfd = kStatusBsy;
    } else {
      p.sig = p.atapi() ? kAtapiSignature : kDiskSignature;
      p.tfd = p.atapi() ? 0 : kStatusReady;
      p.signature_pending = true;
      PostD2h(p, p.tfd, 0, false, nullptr);
    }
    return;
  }
  if (p.atapi()) {
    ExecuteAtapi(p, c);
  } else {
    ExecuteAta(p, c);
  }
}

void Hba::ExecuteAta(Port& p, Command& c) {
  const uint8_t* f = c.fis;
  uint8_t command = f[2];
  uint64_t lba48 = uint64_t{f[4]} | uint64_t{f[5]} << 8 | uint64_t{f[6]} << 16 |
                   uint64_t{f[8]} << 24 | uint64_t{f[9]} << 32 | uint64_t{f[10]} << 40;
  uint64_t lba28 = uint64_t{f[4]} | uint64_t{f[5]} << 8 | uint64_t{f[6]} << 16 |
                   uint64_t{f[7] & 0x0fu} << 24;
  uint32_t count16 = f[12] | f[13] << 8;
  switch (command) {
    case kAtaIdentify: {
      auto id = IdentifyData(p.setup, p.sectors, p.sector_size, p.write_cache);
      PioIn(p, c, reinterpret_cast<const uint8_t*>(id.data()), 512);
      return;
    }
    case kAtaReadDmaExt:
    case kAtaWriteDmaExt:
      StartDma(p, c, command == kAtaWriteDmaExt, lba48, count16 == 0 ? 65536 : count16, false);
      return;
    case kAtaReadDma:
    case kAtaWriteDma:
      StartDma(p, c, command == kAtaWriteDma, lba28, f[12] == 0 ? 256 : f[12], false);
      return;
    case kAtaReadFpdma:
    case kAtaWriteFpdma: {
      uint32_t count = f[3] | f[11] << 8;
      c.ncq = true;
      c.tag = f[12] >> 3;
      if (!(p.sact & (1u << c.tag))) {
        // A queued command whose tag the driver did not mark active.
        c.ncq = false;
        Fail(p, c, kErrorAbrt);
        return;
      }
      // The device takes the command at once (BSY clears, PxCI's bit with it);
      // its data phase ends later with a Set Device Bits FIS.
      p.ci &= ~(1u << c.slot);
      p.issued &= ~(1u << c.slot);
      p.tfd = kStatusDrdy;
      PostD2h(p, kStatusDrdy, 0, false, nullptr);
      StartDma(p, c, command == kAtaWriteFpdma, lba48, count == 0 ? 65536 : count, true);
      return;
    }
    case kAtaFlushCache:
    case kAtaFlushCacheExt:
      StartFlush(p, c);
      return;
    case kAtaDsm:
      StartTrim(p, c);
      return;
    case kAtaSetFeatures:
      switch (f[3]) {
        case 0x02: p.write_cache = true; break;   // enable volatile write cache
        case 0x82: p.write_cache = false; break;  // disable it: writes go through
        case 0x03:                                // set transfer mode
        case 0x10: case 0x90:                     // SATA features
        case 0x55: case 0xaa:                     // read look-ahead
        case 0x66: case 0xcc:                     // power-on defaults
          break;
        default:
          Fail(p, c, kErrorAbrt);
          return;
      }
      Complete(p, c, 0);
      return;
    case kAtaReadVerify:
    case kAtaReadVerifyExt: {
      bool ext = command == kAtaReadVerifyExt;
      uint64_t lba = ext ? lba48 : lba28;
      uint64_t count = ext ? (count16 == 0 ? 65536 : count16) : (f[12] == 0 ? 256 : f[12]);
      if (lba + count > p.sectors) {
        Fail(p, c, kErrorIdnf);
        return;
      }
      Complete(p, c, 0);
      return;
    }
    case kAtaCheckPowerMode: {
      p.tfd = kStatusReady;
      uint8_t echo[20] = {};
      echo[12] = 0xff;  // active or idle
      p.ci &= ~(1u << c.slot);
      p.issued &= ~(1u << c.slot);
      PostD2h(p, kStatusReady, 0, true, echo);
      return;
    }
    case kAtaSetMultiple:
    case kAtaStandbyImmediate:
    case kAtaIdleImmediate:
    case kAtaIdle:
    case 0x10:  // RECALIBRATE
    case 0x91:  // INITIALIZE DEVICE PARAMETERS
      Complete(p, c, 0);
      return;
    default:
      HV_DEBUG("ahci port %d: ATA command %#x aborted", p.index, command);
      Fail(p, c, kErrorAbrt);
      return;
  }
}

void Hba::ExecuteAtapi(Port& p, Command& c) {
  uint8_t command = c.fis[2];
  switch (command) {
    case kAtaIdentifyPacket: {
      auto id = IdentifyData(p.setup, p.sectors, p.sector_size, false);
      PioIn(p, c, reinterpret_cast<const uint8_t*>(id.data()), 512);
      return;
    }
    case kAtaDeviceReset:
      p.ci &= ~(1u << c.slot);
      p.issued &= ~(1u << c.slot);
      p.tfd = 0;
      p.signature_pending = true;
      PostD2h(p, 0, 0, true, nullptr);
      return;
    case kAtaIdentify:
      // An ATAPI device aborts IDENTIFY DEVICE and shows its signature.
      p.signature_pending = true;
      Fail(p, c, kErrorAbrt);
      return;
    case kAtaSetFeatures:
    case kAtaCheckPowerMode:
    case kAtaIdleImmediate:
    case kAtaStandbyImmediate:
      Complete(p, c, 0);
      return;
    case kAtaPacket:
      break;
    default:
      Fail(p, c, kErrorAbrt);
      return;
  }
  if (!c.atapi) {
    Fail(p, c, kErrorAbrt);  // PACKET without the header's ATAPI bit: no packet to read
    return;
  }
  AtapiResult r = p.cd->Execute(c.acmd);
  if (!r.read) {
    AtapiDone(p, c, r);
    return;
  }
  auto iov = MapPrdt(c, r.read_length);
  if (!iov.ok()) {
    HV_DEBUG("ahci port %d: ATAPI read: %s", p.index, std::string(iov.status().message()).c_str());
    AtapiDone(p, c, p.cd->ReadFailed());
    return;
  }
  block::BlockOp op;
  op.kind = block::BlockOp::Kind::kRead;
  op.offset = r.read_offset;
  op.iov = std::move(*iov);
  uint64_t length = r.read_length;
  Submit(p, c, std::move(op), [this, length](Port& p, Command& c, absl::Status s) {
    if (!s.ok()) {
      AtapiDone(p, c, p.cd->ReadFailed());
      return;
    }
    SetPrdbc(p, c, length);
    Complete(p, c, length);
  });
}

void Hba::AtapiDone(Port& p, Command& c, const AtapiResult& r) {
  if (r.check_condition) {
    uint8_t error = r.sense_key << 4 | (r.sense_key == kSenseIllegalRequest ? kErrorAbrt : 0);
    Fail(p, c, error, kStatusDrdy | kStatusErr);
    return;
  }
  if (!r.data.empty()) {
    // Up to what the PRD table holds: the allocation length already cut it.
    if (auto s = CopyToPrdt(c, r.data.data(), r.data.size()); !s.ok()) {
      Fail(p, c, uint8_t(kSenseIllegalRequest << 4 | kErrorAbrt));
      return;
    }
  }
  SetPrdbc(p, c, r.data.size());
  Complete(p, c, r.data.size());
}

void Hba::StartDma(Port& p, Command& c, bool write, uint64_t lba, uint64_t count, bool ncq) {
  auto fail = [&](uint8_t error) {
    if (ncq) {
      FailNcq(p, c, error);
    } else {
      Fail(p, c, error);
    }
  };
  if (lba > p.sectors || count > p.sectors - lba) {
    fail(kErrorIdnf);
    return;
  }
  if (write && p.setup.backend->read_only()) {
    fail(kErrorAbrt);
    return;
  }
  auto iov = MapPrdt(c, count * p.sector_size);
  if (!iov.ok()) {
    HV_DEBUG("ahci port %d: slot %d: %s", p.index, c.slot,
             std::string(iov.status().message()).c_str());
    fail(kErrorAbrt);
    return;
  }
  block::BlockOp op;
  op.kind = write ? block::BlockOp::Kind::kWrite : block::BlockOp::Kind::kRead;
  op.offset = lba * p.sector_size;
  op.iov = std::move(*iov);
  uint64_t bytes = count * p.sector_size;
  Submit(p, c, std::move(op), [this, write, bytes](Port& p, Command& c, absl::Status s) {
    auto finish = [this, bytes](Port& p, Command& c, absl::Status s, bool write) {
      if (!s.ok()) {
        HV_WARN("ahci port %d: %s", p.index, std::string(s.message()).c_str());
        uint8_t error = write ? kErrorAbrt : kErrorUnc;
        if (c.ncq) {
          FailNcq(p, c, error);
        } else {
          Fail(p, c, error);
        }
        return;
      }
      if (c.ncq) {
        CompleteNcq(p, c);
      } else {
        SetPrdbc(p, c, bytes);
        Complete(p, c, bytes);
      }
    };
    if (s.ok() && write && !p.write_cache) {
      // Write cache off: the write is done once it is on stable storage.
      block::BlockOp flush;
      flush.kind = block::BlockOp::Kind::kFlush;
      Submit(p, c, std::move(flush), [finish](Port& p, Command& c, absl::Status s) {
        finish(p, c, s, true);
      });
      return;
    }
    finish(p, c, s, write);
  });
}

void Hba::StartFlush(Port& p, Command& c) {
  block::BlockOp op;
  op.kind = block::BlockOp::Kind::kFlush;
  Submit(p, c, std::move(op), [this](Port& p, Command& c, absl::Status s) {
    if (!s.ok()) {
      Fail(p, c, kErrorAbrt);
      return;
    }
    Complete(p, c, 0);
  });
}

void Hba::StartTrim(Port& p, Command& c) {
  uint32_t blocks = c.fis[12] | c.fis[13] << 8;
  bool trim = c.fis[3] & 1;
  if (!trim || p.setup.options.no_delete || p.setup.backend->read_only() || blocks == 0 ||
      blocks > kMaxDsmBlocks) {
    Fail(p, c, kErrorAbrt);
    return;
  }
  auto payload = CopyFromPrdt(c, blocks * 512);
  if (!payload.ok()) {
    Fail(p, c, kErrorAbrt);
    return;
  }
  block::BlockOp op;
  op.kind = block::BlockOp::Kind::kDiscard;
  for (size_t at = 0; at + 8 <= payload->size(); at += 8) {
    uint64_t entry = Le64(&(*payload)[at]);
    uint64_t lba = entry & 0xffffffffffffull;
    uint64_t length = entry >> 48;
    if (length == 0) continue;  // an unused entry
    if (lba > p.sectors || length > p.sectors - lba) {
      Fail(p, c, kErrorIdnf);
      return;
    }
    op.ranges.push_back({lba * p.sector_size, length * p.sector_size});
  }
  if (op.ranges.empty()) {
    Complete(p, c, 0);
    return;
  }
  Submit(p, c, std::move(op), [this](Port& p, Command& c, absl::Status s) {
    if (!s.ok()) {
      Fail(p, c, kErrorAbrt);
      return;
    }
    Complete(p, c, 0);
  });
}

void Hba::Submit(Port& p, Command c, block::BlockOp op,
                 std::function<void(Port&, Command&, absl::Status)> then) {
  ++p.in_flight;
  uint64_t generation = p.generation;
  Port* port = &p;
  p.setup.backend->Submit(std::move(op), [port, c, generation, then = std::move(then)](
                                             absl::Status s) mutable {
    --port->in_flight;
    if (port->generation != generation) return;  // the port was stopped or reset meanwhile
    then(*port, c, s);
  });
}

void Hba::PioIn(Port& p, Command& c, const uint8_t* data, size_t len) {
  if (auto s = CopyToPrdt(c, data, len); !s.ok()) {
    HV_DEBUG("ahci port %d: PIO data: %s", p.index, std::string(s.message()).c_str());
    Fail(p, c, kErrorAbrt);
    return;
  }
  SetPrdbc(p, c, len);
  PostPioSetup(p, kStatusReady, len);
  Complete(p, c, len);
}

void Hba::Complete(Port& p, const Command& c, uint64_t bytes) {
  (void)bytes;
  uint32_t bit = 1u << c.slot;
  if (!(p.issued & bit)) return;  // not ours any more (the port was restarted)
  p.ci &= ~bit;
  p.issued &= ~bit;
  p.tfd = kStatusReady;
  PostD2h(p, kStatusReady, 0, true, c.fis);
}

void Hba::CompleteNcq(Port& p, const Command& c) {
  uint32_t bit = 1u << c.tag;
  if (!(p.sact & bit)) return;
  p.sact &= ~bit;
  p.tfd = kStatusDrdy;
  PostSdb(p, bit, kStatusDrdy, 0);
}

void Hba::Fail(Port& p, const Command& c, uint8_t error, uint8_t status) {
  // The failed command keeps its PxCI bit; the port stops until the driver
  // restarts it (AHCI 1.3.1, 6.2.2.1).
  p.tfd = uint32_t{error} << 8 | status;
  p.halted = true;
  PostD2h(p, status, error, false, c.fis);
  RaisePort(p, kIsTfes | kIsDhrs);
}

void Hba::FailNcq(Port& p, const Command& c, uint8_t error) {
  p.tfd = uint32_t{error} << 8 | kStatusDrdy | kStatusErr;
  p.halted = true;
  uint8_t fis[8] = {kFisSdb, 0x40, uint8_t((kStatusDrdy | kStatusErr) & 0x77), error};
  if (p.cmd & kCmdFr) (void)memory_.Write(p.fis_base() + kRfisSdb, fis, sizeof(fis));
  (void)c;
  RaisePort(p, kIsTfes | kIsSdbs);
}

// ------------------------------------------------------------------ PRD table

absl::StatusOr<std::vector<struct iovec>> Hba::MapPrdt(const Command& c, uint64_t bytes) const {
  std::vector<struct iovec> iov;
  if (bytes == 0) return iov;
  if (c.prdtl == 0) return absl::InvalidArgumentError("an empty PRD table for a data transfer");
  auto table = memory_.Translate(c.table + 0x80, 16ull * c.prdtl);
  if (!table.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("PRD table of ", c.prdtl, " entries at ", c.table + 0x80, " leaves RAM"));
  }
  uint64_t left = bytes;
  for (uint32_t i = 0; i < c.prdtl && left > 0; ++i) {
    uint8_t entry[16];
    memcpy(entry, *table + 16ull * i, 16);  // one copy: the guest may change it meanwhile
    uint64_t address = Le64(entry) & ~1ull;
    uint64_t length = std::min<uint64_t>((Le32(&entry[12]) & 0x3fffff) + 1, left);
    auto host = memory_.Translate(address, length);
    if (!host.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("PRD entry ", i, " (", length,
                                                     " bytes at ", address, ") leaves RAM"));
    }
    iov.push_back({*host, length});
    left -= length;
  }
  if (left > 0) {
    return absl::InvalidArgumentError(absl::StrCat("the PRD table holds ", bytes - left,
                                                   " bytes; the command moves ", bytes));
  }
  return iov;
}

absl::Status Hba::CopyToPrdt(const Command& c, const uint8_t* data, size_t len) const {
  // Data-in shorter than the table is fine; a table shorter than the data cuts it.
  uint64_t room = 0;
  auto table = c.prdtl == 0 ? absl::StatusOr<uint8_t*>(nullptr)
                            : memory_.Translate(c.table + 0x80, 16ull * c.prdtl);
  if (!table.ok()) return table.status();
  for (uint32_t i = 0; i < c.prdtl && room < len; ++i) {
    room += (Le32(*table + 16ull * i + 12) & 0x3fffff) + 1;
  }
  auto iov = MapPrdt(c, std::min<uint64_t>(len, room));
  if (!iov.ok()) return iov.status();
  size_t at = 0;
  for (const auto& v : *iov) {
    memcpy(v.iov_base, data + at, v.iov_len);
    at += v.iov_len;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint8_t>> Hba::CopyFromPrdt(const Command& c, size_t len) const {
  auto iov = MapPrdt(c, len);
  if (!iov.ok()) return iov.status();
  std::vector<uint8_t> out;
  out.reserve(len);
  for (const auto& v : *iov) {
    const uint8_t* p = static_cast<const uint8_t*>(v.iov_base);
    out.insert(out.end(), p, p + v.iov_len);
  }
  return out;
}

void Hba::SetPrdbc(Port& p, const Command& c, uint32_t bytes) {
  (void)p;
  (void)memory_.Write(c.header + 4, &bytes, 4);
}

}  // namespace hv::ahci
