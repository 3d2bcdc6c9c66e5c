// The AHCI HBA driven by a fake driver that writes command lists, command
// tables and PRD tables into a fake guest RAM, as a guest's ahci driver does;
// the disk and ISO are real files. Half of it is a malicious guest: addresses
// outside RAM, empty and oversized PRD tables, tables crossing the end of RAM,
// unknown opcodes. Each must end in a task-file error (or sense data), never a
// crash or a host access outside the image.
#include "devproc/ahci/ahci_hba.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/fd.h"
#include "common/guest_memory.h"
#include "gtest/gtest.h"

namespace hv::ahci {
namespace {

constexpr uint64_t kRam = 16ull << 20;
constexpr uint64_t kDiskBytes = 8ull << 20;
constexpr uint64_t kIsoBytes = 2048ull * 64;
constexpr uint64_t kData = 0x400000;  // data buffers from here

std::string TempPath(const std::string& name) {
  const char* dir = getenv("TEST_TMPDIR");
  return std::string(dir ? dir : "/tmp") + "/" + name;
}

std::vector<uint8_t> Pattern(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = rng() & 0xff;
  return v;
}

struct Prd {
  uint64_t address;
  uint32_t bytes;  // 1 .. 4 MiB; written as DBC = bytes - 1
};

class AhciTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Fd memfd(memfd_create("guest", MFD_CLOEXEC));
    ASSERT_TRUE(memfd.valid());
    ASSERT_EQ(ftruncate(memfd.get(), kRam), 0);
    auto mem = GuestMemory::Map(memfd.get(), kRam, {{0, kRam, 0}});
    ASSERT_TRUE(mem.ok()) << mem.status();
    memory_ = std::move(*mem);

    disk_path_ = TempPath("ahci-disk.img");
    unlink(disk_path_.c_str());
    disk_fd_ = open(disk_path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    ASSERT_GE(disk_fd_, 0);
    ASSERT_EQ(ftruncate(disk_fd_, kDiskBytes), 0);
    iso_ = Pattern(kIsoBytes, 7);
    std::string iso_path = TempPath("ahci.iso");
    {
      Fd w(open(iso_path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
      ASSERT_EQ(pwrite(w.get(), iso_.data(), iso_.size(), 0), static_cast<ssize_t>(iso_.size()));
    }
    auto disk = block::BlockBackend::Create(Fd(dup(disk_fd_)), {});
    ASSERT_TRUE(disk.ok()) << disk.status();
    block::BlockBackendOptions ro;
    ro.read_only = true;
    auto iso = block::BlockBackend::Create(Fd(open(iso_path.c_str(), O_RDONLY | O_CLOEXEC)), ro);
    ASSERT_TRUE(iso.ok()) << iso.status();
    disk_ = std::move(*disk);
    cd_ = std::move(*iso);
    PortSetup hd;
    hd.serial = "HVTESTDISK";
    hd.backend = disk_.get();
    PortSetup cd;
    cd.options.cdrom = true;
    cd.options.read_only = true;
    cd.serial = "HVTESTCD";
    cd.backend = cd_.get();
    hba_ = std::make_unique<Hba>(*memory_, std::vector<PortSetup>{hd, cd}, [this] { ++interrupts_; });
  }
  void TearDown() override {
    hba_.reset();
    if (disk_fd_ >= 0) close(disk_fd_);
  }

  uint32_t Reg(uint32_t offset) { return hba_->Read(offset, 4); }
  void SetReg(uint32_t offset, uint32_t v) { hba_->Write(offset, 4, v); }
  uint32_t PortReg(int port, uint32_t reg) { return Reg(kPortBase + kPortStride * port + reg); }
  void SetPortReg(int port, uint32_t reg, uint32_t v) {
    SetReg(kPortBase + kPortStride * port + reg, v);
  }
  static uint64_t CommandList(int port) { return 0x10000 + 0x1000 * port; }
  static uint64_t FisArea(int port) { return 0x20000 + 0x1000 * port; }
  static uint64_t Table(int port, int slot) { return 0x100000 + 0x10000 * port + 0x800 * slot; }

  // What the driver does at start-up: reset, command list and FIS area, FRE, ST.
  void StartPort(int port) {
    SetReg(kRegGhc, kGhcIe);
    SetPortReg(port, kPxClb, CommandList(port));
    SetPortReg(port, kPxClbu, 0);
    SetPortReg(port, kPxFb, FisArea(port));
    SetPortReg(port, kPxFbu, 0);
    SetPortReg(port, kPxCmd, kCmdFre);
    SetPortReg(port, kPxSerr, ~0u);
    SetPortReg(port, kPxIs, ~0u);
    SetPortReg(port, kPxIe, 0xfdc000ff);
    SetPortReg(port, kPxCmd, kCmdFre | kCmdSt);
  }

  void Put(uint64_t gpa, const void* p, size_t n) { ASSERT_TRUE(memory_->Write(gpa, p, n).ok()); }
  std::vector<uint8_t> Get(uint64_t gpa, size_t n) {
    std::vector<uint8_t> v(n);
    EXPECT_TRUE(memory_->Read(gpa, v.data(), n).ok());
    return v;
  }

  // Writes a command header and table for `slot`: the FIS, an ATAPI packet if
  // any, and the PRD table.
  void Prepare(int port, int slot, const std::vector<uint8_t>& fis, const std::vector<Prd>& prds,
               bool write = false, const std::vector<uint8_t>& packet = {},
               uint64_t table = 0, uint32_t prdtl_override = 0xffffffff) {
    if (table == 0) table = Table(port, slot);
    uint32_t prdtl = prdtl_override != 0xffffffff ? prdtl_override : prds.size();
    uint32_t dw0 = 5 | (packet.empty() ? 0 : 1u << 5) | (write ? 1u << 6 : 0) | prdtl << 16;
    uint8_t header[32] = {};
    memcpy(header, &dw0, 4);
    memcpy(&header[8], &table, 8);
    Put(CommandList(port) + 32 * slot, header, 32);
    if (table + 0x80 + 16 * prds.size() > kRam) return;  // a table outside RAM: nothing to write
    uint8_t cfis[64] = {};
    memcpy(cfis, fis.data(), fis.size());
    Put(table, cfis, 64);
    if (!packet.empty()) Put(table + 0x40, packet.data(), packet.size());
    for (size_t i = 0; i < prds.size(); ++i) {
      uint8_t e[16] = {};
      memcpy(e, &prds[i].address, 8);
      uint32_t dbc = prds[i].bytes - 1;
      memcpy(&e[12], &dbc, 4);
      Put(table + 0x80 + 16 * i, e, 16);
    }
  }
  void Issue(int port, int slot) {
    SetPortReg(port, kPxCi, 1u << slot);
    hba_->WaitIdle();
  }

  static std::vector<uint8_t> H2d(uint8_t command, uint64_t lba = 0, uint32_t count = 0,
                                  uint16_t features = 0) {
    std::vector<uint8_t> f(20, 0);
    f[0] = 0x27;
    f[1] = 0x80;
    f[2] = command;
    f[3] = features & 0xff;
    f[4] = lba;
    f[5] = lba >> 8;
    f[6] = lba >> 16;
    f[7] = 0x40;
    f[8] = lba >> 24;
    f[9] = lba >> 32;
    f[10] = lba >> 40;
    f[11] = features >> 8;
    f[12] = count & 0xff;
    f[13] = count >> 8;
    return f;
  }
  static std::vector<uint8_t> Packet(std::initializer_list<uint8_t> bytes) {
    std::vector<uint8_t> p(bytes);
    p.resize(16, 0);
    return p;
  }

  bool TaskFileError(int port) { return (PortReg(port, kPxIs) & kIsTfes) && (PortReg(port, kPxTfd) & 1); }
  // What the driver's error handler does: stop the engine, clear errors, start again.
  void Recover(int port) {
    SetPortReg(port, kPxCmd, kCmdFre);
    SetPortReg(port, kPxIs, ~0u);
    SetReg(kRegIs, ~0u);
    SetPortReg(port, kPxCmd, kCmdFre | kCmdSt);
  }
  std::vector<uint8_t> DiskBytes(uint64_t offset, size_t n) {
    std::vector<uint8_t> v(n);
    EXPECT_EQ(pread(disk_fd_, v.data(), n, offset), static_cast<ssize_t>(n));
    return v;
  }
  // A plain read of sector 0 that must work (the port is usable).
  void ExpectPortWorks(int port) {
    Prepare(port, 3, H2d(kAtaReadDmaExt, 0, 1), {{kData, 512}});
    Issue(port, 3);
    EXPECT_EQ(PortReg(port, kPxCi), 0u);
    EXPECT_FALSE(PortReg(port, kPxIs) & kIsTfes);
  }

  std::unique_ptr<GuestMemory> memory_;
  std::string disk_path_;
  int disk_fd_ = -1;
  std::vector<uint8_t> iso_;
  std::unique_ptr<block::BlockBackend> disk_, cd_;
  std::unique_ptr<Hba> hba_;
  std::atomic<int> interrupts_{0};
};

TEST_F(AhciTest, HostRegistersAndSignatures) {
  uint32_t cap = Reg(kRegCap);
  EXPECT_EQ(cap & 0x1f, 1u);           // two ports
  EXPECT_EQ((cap >> 8) & 0x1f, 31u);   // 32 slots
  EXPECT_TRUE(cap & (1u << 30));       // NCQ
  EXPECT_TRUE(cap & (1u << 31));       // 64-bit
  EXPECT_EQ(Reg(kRegPi), 3u);
  EXPECT_EQ(Reg(kRegVs), 0x00010301u);
  EXPECT_TRUE(Reg(kRegGhc) & kGhcAe);
  EXPECT_EQ(PortReg(0, kPxSig), 0x00000101u);
  EXPECT_EQ(PortReg(1, kPxSig), 0xeb140101u);
  EXPECT_EQ(PortReg(0, kPxSsts) & 0xf, 3u);
  EXPECT_EQ(hba_->abar_size(), 0x1000u);
  // A byte read of CAP's low byte.
  EXPECT_EQ(hba_->Read(kRegCap, 1), cap & 0xff);
}

TEST_F(AhciTest, ComresetPostsTheSignatureFis) {
  StartPort(1);
  SetPortReg(1, kPxSctl, 1);
  EXPECT_EQ(PortReg(1, kPxSsts) & 0xf, 0u);
  SetPortReg(1, kPxSctl, 0);
  EXPECT_EQ(PortReg(1, kPxSsts) & 0xf, 3u);
  auto fis = Get(FisArea(1) + kRfisD2h, 16);
  EXPECT_EQ(fis[0], 0x34);
  EXPECT_EQ(fis[5], 0x14);
  EXPECT_EQ(fis[6], 0xeb);
}

TEST_F(AhciTest, IdentifyDevice) {
  StartPort(0);
  Prepare(0, 0, H2d(kAtaIdentify), {{kData, 512}});
  int before = interrupts_;
  Issue(0, 0);
  EXPECT_EQ(PortReg(0, kPxCi), 0u);
  EXPECT_TRUE(PortReg(0, kPxIs) & kIsDhrs);
  EXPECT_GT(interrupts_, before);
  EXPECT_TRUE(Reg(kRegIs) & 1);
  auto raw = Get(kData, 512);
  uint16_t id[256];
  memcpy(id, raw.data(), 512);
  uint64_t sectors = id[100] | uint64_t{id[101]} << 16 | uint64_t{id[102]} << 32;
  EXPECT_EQ(sectors, kDiskBytes / 512);
  EXPECT_TRUE(id[76] & 0x100);  // NCQ
  EXPECT_EQ(id[75], 31);
  EXPECT_EQ(id[169] & 1, 1);    // TRIM
  EXPECT_TRUE(id[85] & 0x20);   // write cache on
  // Serial: byte-swapped words, space padded.
  EXPECT_EQ(std::string(reinterpret_cast<char*>(&raw[20]), 2), "VH");
  uint8_t sum = 0;
  for (uint8_t b : raw) sum += b;
  EXPECT_EQ(sum, 0);            // integrity word
  EXPECT_EQ(id[255] & 0xff, 0xa5);
  uint32_t prdbc;
  ASSERT_TRUE(memory_->Read(CommandList(0) + 4, &prdbc, 4).ok());
  EXPECT_EQ(prdbc, 512u);
}

TEST_F(AhciTest, DmaWriteAndReadBackAcrossSeveralPrds) {
  StartPort(0);
  auto data = Pattern(8192, 1);
  Put(kData, data.data(), 3000);
  Put(kData + 0x10000, data.data() + 3000, 8192 - 3000);
  Prepare(0, 1, H2d(kAtaWriteDmaExt, 100, 16), {{kData, 3000}, {kData + 0x10000, 8192 - 3000}},
          true);
  Issue(0, 1);
  EXPECT_EQ(PortReg(0, kPxCi), 0u);
  EXPECT_FALSE(PortReg(0, kPxIs) & kIsTfes);
  EXPECT_EQ(DiskBytes(100 * 512, 8192), data);
  Prepare(0, 2, H2d(kAtaReadDmaExt, 100, 16), {{kData + 0x200000, 8192}});
  Issue(0, 2);
  EXPECT_EQ(Get(kData + 0x200000, 8192), data);
  // The D2H FIS that ended it is in the received-FIS area.
  auto fis = Get(FisArea(0) + kRfisD2h, 4);
  EXPECT_EQ(fis[0], 0x34);
  EXPECT_EQ(fis[2], 0x50);
}

TEST_F(AhciTest, NcqCommandsCompleteWithSetDeviceBits) {
  StartPort(0);
  auto a = Pattern(4096, 2), b = Pattern(4096, 3);
  Put(kData, a.data(), a.size());
  Put(kData + 0x10000, b.data(), b.size());
  auto fpdma = [](uint8_t command, uint64_t lba, uint32_t count, int tag) {
    auto f = H2d(command, lba, tag << 3, count);
    return f;
  };
  Prepare(0, 4, fpdma(kAtaWriteFpdma, 8, 8, 4), {{kData, 4096}}, true);
  Prepare(0, 9, fpdma(kAtaWriteFpdma, 64, 8, 9), {{kData + 0x10000, 4096}}, true);
  SetPortReg(0, kPxSact, (1u << 4) | (1u << 9));
  SetPortReg(0, kPxCi, (1u << 4) | (1u << 9));
  EXPECT_EQ(PortReg(0, kPxCi), 0u);  // taken at once, before the data moved
  hba_->WaitIdle();
  EXPECT_EQ(PortReg(0, kPxSact), 0u);
  EXPECT_TRUE(PortReg(0, kPxIs) & 0x8);  // SDBS
  auto sdb = Get(FisArea(0) + kRfisSdb, 8);
  EXPECT_EQ(sdb[0], 0xa1);
  EXPECT_EQ(DiskBytes(8 * 512, 4096), a);
  EXPECT_EQ(DiskBytes(64 * 512, 4096), b);
  Prepare(0, 5, fpdma(kAtaReadFpdma, 64, 8, 5), {{kData + 0x300000, 4096}});
  SetPortReg(0, kPxSact, 1u << 5);
  SetPortReg(0, kPxCi, 1u << 5);
  hba_->WaitIdle();
  EXPECT_EQ(Get(kData + 0x300000, 4096), b);
}

TEST_F(AhciTest, TrimPunchesHolesAndReadsZero) {
  StartPort(0);
  auto data = Pattern(1 << 20, 4);
  Put(kData, data.data(), data.size());
  Prepare(0, 0, H2d(kAtaWriteDmaExt, 2048, 2048), {{kData, 1 << 20}}, true);
  Issue(0, 0);
  Prepare(0, 1, H2d(kAtaFlushCacheExt), {});
  Issue(0, 1);
  struct stat st;
  ASSERT_EQ(fstat(disk_fd_, &st), 0);
  uint64_t before = st.st_blocks;
  // One 512-byte block of ranges: sectors 2048..4095, then an unused entry.
  uint8_t ranges[512] = {};
  uint64_t entry = 2048 | uint64_t{2048} << 48;
  memcpy(ranges, &entry, 8);
  Put(kData + 0x200000, ranges, 512);
  Prepare(0, 2, H2d(kAtaDsm, 0, 1, 1), {{kData + 0x200000, 512}}, true);
  Issue(0, 2);
  EXPECT_FALSE(PortReg(0, kPxIs) & kIsTfes);
  ASSERT_EQ(fstat(disk_fd_, &st), 0);
  EXPECT_LE(st.st_blocks + 2048 - 16, before) << "no space given back";
  EXPECT_EQ(DiskBytes(2048 * 512, 4096), std::vector<uint8_t>(4096, 0));
}

TEST_F(AhciTest, WriteCacheSetting) {
  StartPort(0);
  Prepare(0, 0, H2d(kAtaSetFeatures, 0, 0, 0x82), {});
  Issue(0, 0);
  EXPECT_EQ(PortReg(0, kPxCi), 0u);
  Prepare(0, 1, H2d(kAtaIdentify), {{kData, 512}});
  Issue(0, 1);
  uint16_t id[256];
  ASSERT_TRUE(memory_->Read(kData, id, 512).ok());
  EXPECT_FALSE(id[85] & 0x20);
  // A write with the cache off still lands (and is flushed before it completes).
  auto data = Pattern(512, 5);
  Put(kData, data.data(), 512);
  Prepare(0, 2, H2d(kAtaWriteDmaExt, 1, 1), {{kData, 512}}, true);
  Issue(0, 2);
  EXPECT_EQ(DiskBytes(512, 512), data);
  Prepare(0, 3, H2d(kAtaSetFeatures, 0, 0, 0x02), {});
  Issue(0, 3);
  ASSERT_TRUE(memory_->Write(kData, std::vector<uint8_t>(512, 0).data(), 512).ok());
  Prepare(0, 4, H2d(kAtaIdentify), {{kData, 512}});
  Issue(0, 4);
  ASSERT_TRUE(memory_->Read(kData, id, 512).ok());
  EXPECT_TRUE(id[85] & 0x20);
}

// ----------------------------------------------------------- malicious guest

TEST_F(AhciTest, PrdOutsideRamIsATaskFileError) {
  StartPort(0);
  auto before = DiskBytes(0, 4096);
  Prepare(0, 0, H2d(kAtaWriteDmaExt, 0, 8), {{kData, 2048}, {kRam - 1024, 2048}}, true);
  Issue(0, 0);
  EXPECT_TRUE(TaskFileError(0));
  EXPECT_EQ((PortReg(0, kPxTfd) >> 8) & kErrorAbrt, kErrorAbrt);
  EXPECT_EQ(DiskBytes(0, 4096), before);  // nothing reached the disk
  Prepare(0, 1, H2d(kAtaReadDmaExt, 0, 1), {{1ull << 40, 512}});
  Issue(0, 1);
  EXPECT_EQ(PortReg(0, kPxCi), 3u);  // halted: the failed command keeps its bit; slot 1 waits
  Recover(0);
  Issue(0, 1);
  EXPECT_TRUE(TaskFileError(0));
  Recover(0);
  ExpectPortWorks(0);
}

TEST_F(AhciTest, EmptyAndShortPrdTables) {
  StartPort(0);
  Prepare(0, 0, H2d(kAtaReadDmaExt, 0, 8), {});  // PRDTL 0 for 4 KiB
  Issue(0, 0);
  EXPECT_TRUE(TaskFileError(0));
  Recover(0);
  Prepare(0, 0, H2d(kAtaReadDmaExt, 0, 8), {{kData, 1024}, {kData + 4096, 1024}});
  Issue(0, 0);
  EXPECT_TRUE(TaskFileError(0));
  Recover(0);
  // A huge entry (4 MiB) for a 512-byte read is cut to what the command moves.
  Prepare(0, 0, H2d(kAtaReadDmaExt, 0, 1), {{kData, 4u << 20}});
  Issue(0, 0);
  EXPECT_FALSE(PortReg(0, kPxIs) & kIsTfes);
  // The largest count of all (65536 sectors = 32 MiB) past the end of an 8 MiB disk.
  Prepare(0, 0, H2d(kAtaReadDmaExt, 0, 0), {{kData, 4u << 20}});
  Issue(0, 0);
  EXPECT_TRUE(TaskFileError(0));
  EXPECT_EQ((PortReg(0, kPxTfd) >> 8) & kErrorIdnf, kErrorIdnf);
}

TEST_F(AhciTest, TablesCrossingTheEndOfRam) {
  StartPort(0);
  // The command table starts 64 bytes before the end of RAM.
  Prepare(0, 0, H2d(kAtaReadDmaExt, 0, 1), {{kData, 512}}, false, {}, kRam - 0x40);
  Issue(0, 0);
  EXPECT_TRUE(TaskFileError(0));
  Recover(0);
  // The FIS fits; a PRD table of 65535 entries runs past the end.
  Prepare(0, 0, H2d(kAtaReadDmaExt, 0, 1), {}, false, {}, kRam - 0x100, 65535);
  Issue(0, 0);
  EXPECT_TRUE(TaskFileError(0));
  Recover(0);
  // The command list itself outside RAM.
  SetPortReg(0, kPxCmd, kCmdFre);
  SetPortReg(0, kPxClbu, 0x100);
  SetPortReg(0, kPxCmd, kCmdFre | kCmdSt);
  Issue(0, 0);
  EXPECT_TRUE(TaskFileError(0));
  // The received-FIS area outside RAM too: errors still reach the registers.
  SetPortReg(0, kPxCmd, 0);
  SetPortReg(0, kPxFb, kRam - 0x10);
  SetPortReg(0, kPxIs, ~0u);
  SetPortReg(0, kPxCmd, kCmdFre | kCmdSt);
  Issue(0, 0);
  EXPECT_TRUE(TaskFileError(0));
  SetPortReg(0, kPxCmd, 0);
  StartPort(0);
  ExpectPortWorks(0);
}

TEST_F(AhciTest, BadCommandHeadersAndFises) {
  StartPort(0);
  // A command FIS length below 5 dwords.
  uint8_t header[32] = {2};
  uint64_t table = Table(0, 0);
  memcpy(&header[8], &table, 8);
  Put(CommandList(0), header, 32);
  Issue(0, 0);
  EXPECT_TRUE(TaskFileError(0));
  Recover(0);
  // Not a host-to-device FIS.
  auto fis = H2d(kAtaReadDmaExt, 0, 1);
  fis[0] = 0x34;
  Prepare(0, 0, fis, {{kData, 512}});
  Issue(0, 0);
  EXPECT_TRUE(TaskFileError(0));
  Recover(0);
  ExpectPortWorks(0);
}

TEST_F(AhciTest, UnknownAtaOpcodesAbort) {
  StartPort(0);
  for (int op : {0x00, 0x20, 0x30, 0x2f, 0x47, 0xb0, 0xa0, 0xa1, 0xf5, 0xff}) {
    Prepare(0, 0, H2d(op, 0, 1), {{kData, 512}});
    Issue(0, 0);
    EXPECT_TRUE(TaskFileError(0)) << "opcode " << op;
    EXPECT_EQ((PortReg(0, kPxTfd) >> 8) & kErrorAbrt, kErrorAbrt);
    Recover(0);
  }
  // A queued command whose tag the driver did not set in PxSACT.
  Prepare(0, 0, H2d(kAtaReadFpdma, 0, 7 << 3, 1), {{kData, 512}});
  Issue(0, 0);
  EXPECT_TRUE(TaskFileError(0));
  Recover(0);
  // TRIM with no ranges block, or a range past the end of the disk.
  Prepare(0, 0, H2d(kAtaDsm, 0, 0, 1), {{kData, 512}}, true);
  Issue(0, 0);
  EXPECT_TRUE(TaskFileError(0));
  Recover(0);
  uint8_t ranges[512] = {};
  uint64_t entry = (kDiskBytes / 512 - 1) | uint64_t{2} << 48;
  memcpy(ranges, &entry, 8);
  Put(kData, ranges, 512);
  Prepare(0, 0, H2d(kAtaDsm, 0, 1, 1), {{kData, 512}}, true);
  Issue(0, 0);
  EXPECT_TRUE(TaskFileError(0));
  Recover(0);
  ExpectPortWorks(0);
}

TEST_F(AhciTest, EveryAtaOpcodeWithGarbageNeverCrashes) {
  StartPort(0);
  std::mt19937 rng(11);
  for (int op = 0; op < 256; ++op) {
    auto fis = H2d(op, rng() & 0xffff, rng() & 0xffff, rng() & 0xffff);
    if (op == kAtaWriteDmaExt || op == kAtaWriteDma || op == kAtaWriteFpdma || op == kAtaDsm) {
      continue;  // they would change the disk; covered above
    }
    Prepare(0, op % 32, fis, {{kData + 0x1000 * (rng() % 64), 1 + rng() % 4096}});
    SetPortReg(0, kPxSact, rng());
    Issue(0, op % 32);
    Recover(0);
  }
  ExpectPortWorks(0);
}

// --------------------------------------------------------------------- ATAPI

TEST_F(AhciTest, AtapiIdentifyInquiryAndRead) {
  StartPort(1);
  Prepare(1, 0, H2d(kAtaIdentifyPacket), {{kData, 512}});
  Issue(1, 0);
  uint16_t id[256];
  ASSERT_TRUE(memory_->Read(kData, id, 512).ok());
  EXPECT_EQ(id[0] >> 14, 2);          // ATAPI
  EXPECT_EQ((id[0] >> 8) & 0x1f, 5);  // CD-ROM
  Prepare(1, 1, H2d(kAtaPacket), {{kData, 36}}, false, Packet({0x12, 0, 0, 0, 36}));
  Issue(1, 1);
  EXPECT_EQ(PortReg(1, kPxCi), 0u);
  EXPECT_EQ(Get(kData, 1)[0], 0x05);
  Prepare(1, 2, H2d(kAtaPacket), {{kData, 8}}, false, Packet({0x25}));
  Issue(1, 2);
  auto cap = Get(kData, 8);
  EXPECT_EQ(cap[3], 63);  // last LBA
  // READ(10) of sectors 5..7 into two PRDs.
  Prepare(1, 3, H2d(kAtaPacket), {{kData, 4096}, {kData + 0x10000, 2048}}, false,
          Packet({0x28, 0, 0, 0, 0, 5, 0, 0, 3}));
  Issue(1, 3);
  EXPECT_FALSE(PortReg(1, kPxIs) & kIsTfes);
  auto first = Get(kData, 4096), second = Get(kData + 0x10000, 2048);
  EXPECT_TRUE(std::equal(first.begin(), first.end(), iso_.begin() + 5 * 2048));
  EXPECT_TRUE(std::equal(second.begin(), second.end(), iso_.begin() + 7 * 2048));
  // A disk command on the CD's port aborts.
  Prepare(1, 4, H2d(kAtaReadDmaExt, 0, 1), {{kData, 512}});
  Issue(1, 4);
  EXPECT_TRUE(TaskFileError(1));
}

TEST_F(AhciTest, AtapiErrorsGiveSenseData) {
  StartPort(1);
  // Unknown opcode: CHECK CONDITION, ILLEGAL REQUEST in the error register.
  Prepare(1, 0, H2d(kAtaPacket), {{kData, 512}}, false, Packet({0xee}));
  Issue(1, 0);
  EXPECT_TRUE(TaskFileError(1));
  EXPECT_EQ(PortReg(1, kPxTfd) >> 12 & 0xf, kSenseIllegalRequest);
  Recover(1);
  Prepare(1, 1, H2d(kAtaPacket), {{kData, 18}}, false, Packet({0x03, 0, 0, 0, 18}));
  Issue(1, 1);
  auto sense = Get(kData, 18);
  EXPECT_EQ(sense[2], kSenseIllegalRequest);
  EXPECT_EQ(sense[12], 0x20);  // invalid command operation code
  // READ past the end of the ISO, and a READ whose PRDs leave RAM.
  Prepare(1, 2, H2d(kAtaPacket), {{kData, 2048}}, false, Packet({0x28, 0, 0, 0, 0, 64, 0, 0, 1}));
  Issue(1, 2);
  EXPECT_TRUE(TaskFileError(1));
  Recover(1);
  Prepare(1, 2, H2d(kAtaPacket), {{kRam - 100, 2048}}, false, Packet({0x28, 0, 0, 0, 0, 1, 0, 0, 1}));
  Issue(1, 2);
  EXPECT_TRUE(TaskFileError(1));
  Recover(1);
  // PACKET without the header's ATAPI bit: there is no packet to read.
  Prepare(1, 3, H2d(kAtaPacket), {{kData, 512}});
  Issue(1, 3);
  EXPECT_TRUE(TaskFileError(1));
  Recover(1);
  // Every opcode with random bytes: an answer or sense data, never a crash.
  std::mt19937 rng(3);
  for (int op = 0; op < 256; ++op) {
    std::vector<uint8_t> packet(16);
    for (auto& b : packet) b = rng();
    packet[0] = op;
    Prepare(1, op % 32, H2d(kAtaPacket), {{kData, 1 + rng() % 65536}}, false, packet);
    Issue(1, op % 32);
    Recover(1);
  }
}

// A guest that writes anything anywhere in the ABAR, with RAM full of noise
// and the command lists pointed into it: only device errors, never a crash.
TEST_F(AhciTest, RandomRegisterWritesOverNoise) {
  std::mt19937_64 rng(99);
  auto noise = Pattern(0x200000, 42);
  Put(0, noise.data(), noise.size());
  StartPort(0);
  StartPort(1);
  for (int i = 0; i < 20000; ++i) {
    uint32_t offset = rng() % hba_->abar_size();
    uint8_t size = uint8_t{1} << (rng() % 4);
    uint64_t value = rng();
    if (rng() % 4 == 0) value &= 0x1fffff;  // addresses inside RAM more often
    hba_->Write(offset, size, value);
    (void)hba_->Read(rng() % hba_->abar_size(), uint8_t{1} << (rng() % 4));
    if (i % 64 == 0) hba_->DrainCompletions();
  }
  hba_->WaitIdle();
  SetReg(kRegGhc, kGhcHr);
  StartPort(0);
  ExpectPortWorks(0);
}

// The most ports a controller has: 32, the last at ABAR 0x1080.
TEST_F(AhciTest, ThirtyTwoPorts) {
  hba_.reset();
  std::vector<PortSetup> ports(32);
  for (auto& p : ports) {
    p.serial = "MANY";
    p.backend = disk_.get();  // one image behind every port is enough here
  }
  hba_ = std::make_unique<Hba>(*memory_, ports, [this] { ++interrupts_; });
  EXPECT_EQ(Reg(kRegCap) & 0x1f, 31u);
  EXPECT_EQ(Reg(kRegPi), 0xffffffffu);
  EXPECT_EQ(hba_->abar_size(), 0x2000u);
  auto data = Pattern(512, 9);
  ASSERT_EQ(pwrite(disk_fd_, data.data(), 512, 0), 512);
  StartPort(31);
  Prepare(31, 0, H2d(kAtaReadDmaExt, 0, 1), {{kData, 512}});
  Issue(31, 0);
  EXPECT_EQ(PortReg(31, kPxCi), 0u);
  EXPECT_EQ(Get(kData, 512), data);
  EXPECT_EQ(Reg(kRegIs), 1u << 31);
}

// One port whose disk is slow does not hold up another port.
TEST_F(AhciTest, ASlowPortDoesNotStallAnother) {
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  disk_->set_execute_hook([&](const block::BlockOp&) {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return release; });
  });
  StartPort(0);
  StartPort(1);
  Prepare(0, 0, H2d(kAtaReadDmaExt, 0, 8), {{kData, 4096}});
  SetPortReg(0, kPxCi, 1);
  Prepare(1, 0, H2d(kAtaPacket), {{kData + 0x100000, 2048}}, false,
          Packet({0x28, 0, 0, 0, 0, 1, 0, 0, 1}));
  SetPortReg(1, kPxCi, 1);
  while (cd_->pending() > 0) {
    cd_->WaitForCompletion();
    hba_->DrainCompletions();
  }
  EXPECT_EQ(PortReg(1, kPxCi), 0u);  // the CD read finished
  EXPECT_EQ(PortReg(0, kPxCi), 1u);  // the disk read is still running
  {
    std::lock_guard<std::mutex> lock(mu);
    release = true;
  }
  cv.notify_all();
  hba_->WaitIdle();
  EXPECT_EQ(PortReg(0, kPxCi), 0u);
}

// Stopping the engine while a command runs: its completion goes nowhere.
TEST_F(AhciTest, StoppedPortDropsLateCompletions) {
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  disk_->set_execute_hook([&](const block::BlockOp&) {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return release; });
  });
  StartPort(0);
  Prepare(0, 0, H2d(kAtaReadDmaExt, 0, 8), {{kData, 4096}});
  SetPortReg(0, kPxCi, 1);
  SetPortReg(0, kPxCmd, kCmdFre);  // stop
  EXPECT_EQ(PortReg(0, kPxCi), 0u);
  SetPortReg(0, kPxIs, ~0u);
  {
    std::lock_guard<std::mutex> lock(mu);
    release = true;
  }
  cv.notify_all();
  hba_->WaitIdle();
  EXPECT_EQ(PortReg(0, kPxIs), 0u);
  EXPECT_EQ(hba_->in_flight(), 0u);
}

TEST_F(AhciTest, InterruptsFollowEnableBits) {
  StartPort(0);
  SetReg(kRegGhc, 0);  // IE off
  int before = interrupts_;
  Prepare(0, 0, H2d(kAtaFlushCache), {});
  Issue(0, 0);
  EXPECT_EQ(interrupts_, before);
  EXPECT_FALSE(hba_->InterruptPending());
  SetReg(kRegGhc, kGhcIe);  // pending status shows once enabled
  EXPECT_TRUE(hba_->InterruptPending());
  EXPECT_GT(interrupts_, before);
  SetPortReg(0, kPxIs, ~0u);
  SetReg(kRegIs, ~0u);
  EXPECT_FALSE(hba_->InterruptPending());
  // HBA reset clears everything and keeps AE.
  SetReg(kRegGhc, kGhcHr);
  EXPECT_EQ(Reg(kRegGhc), kGhcAe);
  EXPECT_EQ(PortReg(0, kPxCmd) & kCmdSt, 0u);
}

}  // namespace
}  // namespace hv::ahci
