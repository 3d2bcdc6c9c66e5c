#include "devproc/virtio_blk/blk_requests.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace hv::virtio_blk {
namespace {

constexpr uint64_t kRam = 32 * kMiB;
constexpr uint64_t kDisk = 8 * kMiB;

std::vector<uint8_t> Pattern(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = rng() & 0xff;
  return v;
}

class BlkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Fd memfd(memfd_create("guest", MFD_CLOEXEC));
    ASSERT_TRUE(memfd.valid());
    ASSERT_EQ(ftruncate(memfd.get(), kRam), 0);
    auto mem = GuestMemory::Map(memfd.get(), kRam, {{0, kRam, 0}});
    ASSERT_TRUE(mem.ok()) << mem.status();
    mem_ = std::move(*mem);
  }
  void TearDown() override {
    engine_.reset();
    backend_.reset();
  }

  // A fresh disk of `bytes` and an engine over it.
  void OpenDisk(const BlkOptions& options = {}, uint64_t bytes = kDisk, int workers = 2,
                uint16_t num_queues = 1) {
    engine_.reset();
    backend_.reset();
    const char* dir = getenv("TEST_TMPDIR");
    std::string path = std::string(dir ? dir : "/tmp") + "/disk.img";
    unlink(path.c_str());
    int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(ftruncate(fd, bytes), 0);
    disk_ = Fd(dup(fd));
    auto b = BlockBackend::Create(Fd(fd), BackendOptions(options, workers));
    ASSERT_TRUE(b.ok()) << b.status();
    backend_ = std::move(*b);
    auto config = MakeDeviceConfig(options, *backend_, num_queues);
    ASSERT_TRUE(config.ok()) << config.status();
    config_ = *config;
    engine_ = std::make_unique<BlkRequestEngine>(
        *mem_, *backend_, config_, [this](const Completion& c) { done_.push_back(c); });
  }

  // Guest memory: a bump allocator, each allocation on its own cache line.
  uint64_t Alloc(size_t n) {
    uint64_t gpa = next_gpa_;
    next_gpa_ = (next_gpa_ + n + 63) & ~63ull;
    EXPECT_LE(next_gpa_, kRam);
    return gpa;
  }
  Buffer Put(const void* data, size_t n) {
    Buffer b{Alloc(n), static_cast<uint32_t>(n)};
    EXPECT_TRUE(mem_->Write(b.gpa, data, n).ok());
    return b;
  }
  Buffer Put(const std::vector<uint8_t>& v) { return Put(v.data(), v.size()); }
  Buffer Space(size_t n, uint8_t fill = 0xee) { return Put(std::vector<uint8_t>(n, fill)); }
  static std::vector<uint8_t> HeaderBytes(uint32_t type, uint64_t sector) {
    std::vector<uint8_t> h(16, 0);
    memcpy(h.data(), &type, 4);  // x86: little-endian
    memcpy(h.data() + 8, &sector, 8);
    return h;
  }
  Buffer Header(uint32_t type, uint64_t sector) { return Put(HeaderBytes(type, sector)); }
  static std::vector<uint8_t> Segment(uint64_t sector, uint32_t count, uint32_t flags) {
    std::vector<uint8_t> s(16);
    memcpy(s.data(), &sector, 8);
    memcpy(s.data() + 8, &count, 4);
    memcpy(s.data() + 12, &flags, 4);
    return s;
  }
  std::vector<uint8_t> Get(const Buffer& b) {
    std::vector<uint8_t> v(b.len);
    EXPECT_TRUE(mem_->Read(b.gpa, v.data(), b.len).ok());
    return v;
  }
  uint8_t LastByte(const Buffer& b) { return Get(b).back(); }

  // Submits and waits for the request's completion.
  Completion Run(uint16_t head, const std::vector<Buffer>& readable,
                 const std::vector<Buffer>& writable) {
    size_t before = done_.size();
    absl::Status s = engine_->Submit(head, readable, writable);
    EXPECT_TRUE(s.ok()) << s;
    if (!s.ok()) return Completion{head, 0, 0xff, 0};
    WaitForCompletions(before + 1);
    EXPECT_EQ(done_.size(), before + 1);
    EXPECT_EQ(done_.back().head, head);
    return done_.back();
  }
  void WaitForCompletions(size_t n) {
    while (done_.size() < n) {
      struct pollfd p = {backend_->event_fd(), POLLIN, 0};
      ASSERT_EQ(poll(&p, 1, 10000), 1) << "no completion within 10 s";
      engine_->DrainCompletions();
    }
  }

  // Disk helpers, through a second fd.
  void DiskWrite(uint64_t offset, const std::vector<uint8_t>& data) {
    ASSERT_EQ(pwrite(disk_.get(), data.data(), data.size(), offset), (ssize_t)data.size());
  }
  std::vector<uint8_t> DiskRead(uint64_t offset, size_t n) {
    std::vector<uint8_t> v(n);
    EXPECT_EQ(pread(disk_.get(), v.data(), n, offset), (ssize_t)n);
    return v;
  }
  uint64_t DiskBlocks() {
    struct stat st;
    EXPECT_EQ(fstat(disk_.get(), &st), 0);
    return st.st_blocks;
  }

  // Convenience: whole requests.
  Completion Write(uint16_t head, uint64_t sector, const std::vector<uint8_t>& data) {
    Buffer status = Space(1);
    Completion c = Run(head, {Header(kTypeOut, sector), Put(data)}, {status});
    EXPECT_EQ(LastByte(status), c.status);
    return c;
  }
  Completion Read(uint16_t head, uint64_t sector, size_t n, std::vector<uint8_t>* out) {
    Buffer data = Space(n);
    Buffer status = Space(1);
    Completion c = Run(head, {Header(kTypeIn, sector)}, {data, status});
    EXPECT_EQ(LastByte(status), c.status);
    *out = Get(data);
    return c;
  }
  Completion Segments(uint16_t head, uint32_t type, const std::vector<uint8_t>& segments) {
    Buffer status = Space(1);
    Completion c = Run(head, {Header(type, 0), Put(segments)}, {status});
    EXPECT_EQ(LastByte(status), c.status);
    return c;
  }

  std::unique_ptr<GuestMemory> mem_;
  std::unique_ptr<BlockBackend> backend_;
  std::unique_ptr<BlkRequestEngine> engine_;
  BlkDeviceConfig config_;
  Fd disk_;
  std::vector<Completion> done_;
  uint64_t next_gpa_ = 0x1000;
};

TEST_F(BlkTest, WriteAndReadRoundTripOverManyBuffers) {
  OpenDisk();
  auto data = Pattern(8192, 1);
  // OUT: header, then data in three unequal buffers.
  Buffer status = Space(1);
  Completion w = Run(7,
                     {Header(kTypeOut, 16), Put(data.data(), 512), Put(data.data() + 512, 1536),
                      Put(data.data() + 2048, 6144)},
                     {status});
  EXPECT_EQ(w.status, kStatusOk);
  EXPECT_EQ(w.used_len, 1u);
  EXPECT_EQ(LastByte(status), kStatusOk);
  EXPECT_EQ(DiskRead(16 * 512, data.size()), data);

  // IN: data in two buffers, the status byte alone in a third.
  Buffer a = Space(4096), b = Space(4096), st = Space(1);
  Completion r = Run(9, {Header(kTypeIn, 16)}, {a, b, st});
  EXPECT_EQ(r.status, kStatusOk);
  EXPECT_EQ(r.used_len, 8193u);
  auto back = Get(a);
  auto second = Get(b);
  back.insert(back.end(), second.begin(), second.end());
  EXPECT_EQ(back, data);
  EXPECT_TRUE(engine_->InFlight().empty());
}

TEST_F(BlkTest, HeaderSplitAndSharedBuffers) {
  OpenDisk();
  auto data = Pattern(1024, 2);
  // The header in two buffers (6 + 10 bytes); the second also carries data.
  auto h = HeaderBytes(kTypeOut, 3);
  std::vector<uint8_t> tail(h.begin() + 6, h.end());
  tail.insert(tail.end(), data.begin(), data.begin() + 100);
  std::vector<uint8_t> rest(data.begin() + 100, data.end());
  Buffer status = Space(1);
  Completion w = Run(1, {Put(h.data(), 6), Put(tail), Put(rest)}, {status});
  EXPECT_EQ(w.status, kStatusOk);
  EXPECT_EQ(DiskRead(3 * 512, data.size()), data);

  // IN whose data and status share one writable buffer.
  Buffer both = Space(1025);
  Completion r = Run(2, {Header(kTypeIn, 3)}, {both});
  EXPECT_EQ(r.status, kStatusOk);
  EXPECT_EQ(r.used_len, 1025u);
  auto got = Get(both);
  EXPECT_EQ(got.back(), kStatusOk);
  got.pop_back();
  EXPECT_EQ(got, data);
}

TEST_F(BlkTest, FourKSectors) {
  BlkOptions o;
  o.logical_sector_size = 4096;
  OpenDisk(o);
  EXPECT_EQ(config_.logical_block_size, 4096u);
  auto data = Pattern(3 * 4096, 3);
  EXPECT_EQ(Write(1, 8, data).status, kStatusOk);  // sector 8 = byte 4096
  std::vector<uint8_t> back;
  EXPECT_EQ(Read(2, 8, data.size(), &back).status, kStatusOk);
  EXPECT_EQ(back, data);
  // Not whole 4K blocks: IOERR.
  EXPECT_EQ(Read(3, 8, 512, &back).status, kStatusIoErr);
  EXPECT_EQ(Read(4, 9, 4096, &back).status, kStatusIoErr);
  EXPECT_EQ(Write(5, 1, std::vector<uint8_t>(4096)).status, kStatusIoErr);
  EXPECT_EQ(DiskRead(512, 3584), std::vector<uint8_t>(3584, 0));  // nothing written
}

TEST_F(BlkTest, Flush) {
  OpenDisk();
  Buffer status = Space(1);
  Completion c = Run(4, {Header(kTypeFlush, 0)}, {status});
  EXPECT_EQ(c.status, kStatusOk);
  EXPECT_EQ(c.used_len, 1u);
  EXPECT_EQ(LastByte(status), kStatusOk);
}

TEST_F(BlkTest, DiscardGivesTheSpaceBack) {
  OpenDisk();
  auto data = Pattern(kMiB, 4);
  ASSERT_EQ(Write(1, 2048, data).status, kStatusOk);
  ASSERT_EQ(fdatasync(disk_.get()), 0);
  uint64_t before = DiskBlocks();
  ASSERT_GE(before, kMiB / 512);
  EXPECT_EQ(Segments(2, kTypeDiscard, Segment(2048, kMiB / 512, 0)).status, kStatusOk);
  uint64_t after = DiskBlocks();
  EXPECT_LE(after + kMiB / 512, before) << "st_blocks before " << before << " after " << after;
}

TEST_F(BlkTest, DiscardChecks) {
  OpenDisk();
  // unmap on a discard, unknown flags: UNSUPP.
  EXPECT_EQ(Segments(1, kTypeDiscard, Segment(0, 8, kSegmentFlagUnmap)).status, kStatusUnsupp);
  EXPECT_EQ(Segments(2, kTypeDiscard, Segment(0, 8, 2)).status, kStatusUnsupp);
  // Past the end, too long, a partial segment, no segment, too many: IOERR.
  uint64_t sectors = kDisk / 512;
  EXPECT_EQ(Segments(3, kTypeDiscard, Segment(sectors - 4, 8, 0)).status, kStatusIoErr);
  EXPECT_EQ(Segments(4, kTypeDiscard, Segment(0, config_.max_discard_sectors + 1, 0)).status,
            kStatusIoErr);
  EXPECT_EQ(Segments(5, kTypeDiscard, std::vector<uint8_t>(20)).status, kStatusIoErr);
  Buffer status = Space(1);
  EXPECT_EQ(Run(6, {Header(kTypeDiscard, 0)}, {status}).status, kStatusIoErr);
  std::vector<uint8_t> many;
  for (uint32_t i = 0; i <= config_.max_discard_seg; ++i) {
    auto s = Segment(i * 8, 8, 0);
    many.insert(many.end(), s.begin(), s.end());
  }
  EXPECT_EQ(Segments(7, kTypeDiscard, many).status, kStatusIoErr);
  many.resize(many.size() - 16);
  EXPECT_EQ(Segments(8, kTypeDiscard, many).status, kStatusOk);

  // nodelete: DISCARD is not offered and answered UNSUPP.
  BlkOptions o;
  o.no_delete = true;
  OpenDisk(o);
  EXPECT_EQ(Segments(9, kTypeDiscard, Segment(0, 8, 0)).status, kStatusUnsupp);
}

TEST_F(BlkTest, WriteZeroesReadsBackZeroes) {
  OpenDisk();
  auto data = Pattern(64 * 1024, 5);
  DiskWrite(0, data);
  // Two segments, one that may unmap.
  std::vector<uint8_t> segs = Segment(8, 8, 0);
  auto second = Segment(64, 32, kSegmentFlagUnmap);
  segs.insert(segs.end(), second.begin(), second.end());
  EXPECT_EQ(Segments(1, kTypeWriteZeroes, segs).status, kStatusOk);
  std::vector<uint8_t> back;
  ASSERT_EQ(Read(2, 0, data.size(), &back).status, kStatusOk);
  auto want = data;
  std::fill(want.begin() + 8 * 512, want.begin() + 16 * 512, 0);
  std::fill(want.begin() + 64 * 512, want.begin() + 96 * 512, 0);
  EXPECT_EQ(back, want);
  // Unknown flags: UNSUPP; past the end: IOERR.
  EXPECT_EQ(Segments(3, kTypeWriteZeroes, Segment(0, 8, 4)).status, kStatusUnsupp);
  EXPECT_EQ(Segments(4, kTypeWriteZeroes, Segment(kDisk / 512, 1, 0)).status, kStatusIoErr);
}

TEST_F(BlkTest, WriteZeroesWithUnmapGivesTheSpaceBack) {
  OpenDisk();
  ASSERT_EQ(Write(1, 0, Pattern(kMiB, 6)).status, kStatusOk);
  ASSERT_EQ(fdatasync(disk_.get()), 0);
  uint64_t before = DiskBlocks();
  EXPECT_EQ(Segments(2, kTypeWriteZeroes, Segment(0, kMiB / 512, kSegmentFlagUnmap)).status,
            kStatusOk);
  EXPECT_LE(DiskBlocks() + kMiB / 512, before);
  EXPECT_EQ(DiskRead(0, kMiB), std::vector<uint8_t>(kMiB, 0));
}

TEST_F(BlkTest, GetId) {
  BlkOptions o;
  o.serial = "hv-disk-0001";
  OpenDisk(o);
  std::vector<uint8_t> want(20, 0);
  memcpy(want.data(), "hv-disk-0001", 12);

  Buffer id = Space(20), status = Space(1);
  Completion c = Run(1, {Header(kTypeGetId, 0)}, {id, status});
  EXPECT_EQ(c.status, kStatusOk);
  EXPECT_EQ(c.used_len, 21u);
  EXPECT_EQ(Get(id), want);

  // A short buffer gets what fits.
  Buffer shortid = Space(8);
  c = Run(2, {Header(kTypeGetId, 0)}, {shortid, Space(1)});
  EXPECT_EQ(c.status, kStatusOk);
  EXPECT_EQ(c.used_len, 9u);
  EXPECT_EQ(Get(shortid), std::vector<uint8_t>(want.begin(), want.begin() + 8));

  // A longer one: the 20 bytes, then NULs.
  Buffer longid = Space(32);
  c = Run(3, {Header(kTypeGetId, 0)}, {longid, Space(1)});
  EXPECT_EQ(c.status, kStatusOk);
  auto got = Get(longid);
  EXPECT_EQ(std::vector<uint8_t>(got.begin(), got.begin() + 20), want);
  EXPECT_EQ(std::vector<uint8_t>(got.begin() + 20, got.end()), std::vector<uint8_t>(12, 0));

  // A full 20-byte serial has no NUL.
  o.serial = "ABCDEFGHIJKLMNOPQRST";
  OpenDisk(o);
  id = Space(20);
  EXPECT_EQ(Run(4, {Header(kTypeGetId, 0)}, {id, Space(1)}).status, kStatusOk);
  auto full = Get(id);
  EXPECT_EQ(std::string(full.begin(), full.end()), "ABCDEFGHIJKLMNOPQRST");
}

TEST_F(BlkTest, ReadOnlyRefusesWrites) {
  BlkOptions o;
  o.read_only = true;
  OpenDisk(o);
  uint64_t features = DeviceFeatures(config_);
  EXPECT_TRUE(features & (1ull << kFeatureRo));
  EXPECT_FALSE(features & (1ull << kFeatureDiscard));
  EXPECT_FALSE(features & (1ull << kFeatureWriteZeroes));

  auto data = Pattern(4096, 7);
  DiskWrite(0, data);
  EXPECT_EQ(Write(1, 0, std::vector<uint8_t>(4096, 0x55)).status, kStatusIoErr);
  EXPECT_EQ(Segments(2, kTypeDiscard, Segment(0, 8, 0)).status, kStatusIoErr);
  EXPECT_EQ(Segments(3, kTypeWriteZeroes, Segment(0, 8, 0)).status, kStatusIoErr);
  EXPECT_EQ(DiskRead(0, 4096), data);  // untouched
  std::vector<uint8_t> back;
  EXPECT_EQ(Read(4, 0, 4096, &back).status, kStatusOk);
  EXPECT_EQ(back, data);
  Buffer status = Space(1);
  EXPECT_EQ(Run(5, {Header(kTypeFlush, 0)}, {status}).status, kStatusOk);
}

TEST_F(BlkTest, OutOfRangeSectors) {
  OpenDisk();
  const uint64_t sectors = kDisk / 512;
  std::vector<uint8_t> back;
  EXPECT_EQ(Read(1, sectors - 1, 512, &back).status, kStatusOk);  // the last sector
  EXPECT_EQ(Read(2, sectors - 1, 1024, &back).status, kStatusIoErr);
  EXPECT_EQ(Read(3, sectors, 512, &back).status, kStatusIoErr);
  EXPECT_EQ(Read(4, ~0ull, 512, &back).status, kStatusIoErr);
  EXPECT_EQ(Read(5, ~0ull / 512 + 1, 512, &back).status, kStatusIoErr);
  EXPECT_EQ(Write(6, sectors - 1, std::vector<uint8_t>(1024)).status, kStatusIoErr);
}

TEST_F(BlkTest, MisalignedLengths) {
  OpenDisk();
  std::vector<uint8_t> back;
  EXPECT_EQ(Read(1, 0, 100, &back).status, kStatusIoErr);
  EXPECT_EQ(Read(2, 0, 513, &back).status, kStatusIoErr);
  EXPECT_EQ(Write(3, 0, std::vector<uint8_t>(513, 1)).status, kStatusIoErr);
  EXPECT_EQ(DiskRead(0, 1024), std::vector<uint8_t>(1024, 0));
}

TEST_F(BlkTest, DataInTheWrongDirection) {
  OpenDisk();
  // IN with device-readable data.
  Buffer st = Space(1);
  EXPECT_EQ(Run(1, {Header(kTypeIn, 0), Space(512)}, {Space(512), st}).status, kStatusIoErr);
  EXPECT_EQ(LastByte(st), kStatusIoErr);
  EXPECT_EQ(Run(2, {Header(kTypeIn, 0), Space(512)}, {Space(1)}).status, kStatusIoErr);
  // OUT with device-writable data.
  EXPECT_EQ(Run(3, {Header(kTypeOut, 0)}, {Space(512), Space(1)}).status, kStatusIoErr);
  EXPECT_EQ(Run(4, {Header(kTypeOut, 0), Space(512, 9)}, {Space(512), Space(1)}).status,
            kStatusIoErr);
  EXPECT_EQ(DiskRead(0, 512), std::vector<uint8_t>(512, 0));
  // Discard segments must be readable.
  EXPECT_EQ(Run(5, {Header(kTypeDiscard, 0)}, {Put(Segment(0, 8, 0)), Space(1)}).status,
            kStatusIoErr);
}

TEST_F(BlkTest, UnknownTypesAreUnsupported) {
  OpenDisk();
  for (uint32_t type : {2u, 3u, 5u, 10u, 14u, 99u, 0x80000000u}) {
    Buffer st = Space(1);
    Completion c = Run(static_cast<uint16_t>(type & 0xff), {Header(type, 0)}, {st});
    EXPECT_EQ(c.status, kStatusUnsupp) << type;
    EXPECT_EQ(c.used_len, 1u);
    EXPECT_EQ(LastByte(st), kStatusUnsupp);
  }
}

TEST_F(BlkTest, ChainsThatCannotBeCompletedAreDriverErrors) {
  OpenDisk();
  // No writable byte at all, or only empty writable buffers.
  EXPECT_FALSE(engine_->Submit(1, {Header(kTypeIn, 0)}, {}).ok());
  EXPECT_FALSE(engine_->Submit(2, {Header(kTypeFlush, 0)}, {Buffer{Alloc(1), 0}}).ok());
  // A header shorter than 16 bytes.
  auto h = HeaderBytes(kTypeFlush, 0);
  EXPECT_FALSE(engine_->Submit(3, {Put(h.data(), 15)}, {Space(1)}).ok());
  EXPECT_FALSE(engine_->Submit(4, {}, {Space(1)}).ok());
  // Buffers outside guest RAM.
  EXPECT_FALSE(engine_->Submit(5, {Buffer{kRam, 16}}, {Space(1)}).ok());
  EXPECT_FALSE(engine_->Submit(6, {Header(kTypeFlush, 0)}, {Buffer{kRam + 4096, 1}}).ok());
  EXPECT_FALSE(engine_->Submit(7, {Header(kTypeIn, 0)}, {Buffer{kRam - 256, 512}, Space(1)}).ok());
  engine_->DrainCompletions();
  EXPECT_TRUE(done_.empty());
  EXPECT_TRUE(engine_->InFlight().empty());
}

// Holds back requests at a chosen disk offset until released.
class Gate {
 public:
  void Hold(uint64_t offset) {
    std::lock_guard<std::mutex> l(mu_);
    held_offset_ = offset;
  }
  void Release() {
    {
      std::lock_guard<std::mutex> l(mu_);
      released_ = true;
    }
    cv_.notify_all();
  }
  void OnExecute(const BlockOp& op) {
    std::unique_lock<std::mutex> l(mu_);
    if (op.kind == BlockOp::Kind::kWrite && op.offset == held_offset_) {
      cv_.wait(l, [this] { return released_; });
    }
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t held_offset_ = ~0ull;
  bool released_ = false;
};

TEST_F(BlkTest, ManyConcurrentRequestsCompleteOutOfOrder) {
  OpenDisk({}, kDisk, /*workers=*/4);
  Gate gate;
  gate.Hold(0);
  backend_->set_execute_hook([&gate](const BlockOp& op) { gate.OnExecute(op); });

  constexpr int kRequests = 64;
  std::vector<std::vector<uint8_t>> data;
  std::vector<Buffer> status;
  for (int i = 0; i < kRequests; ++i) {
    data.push_back(Pattern(4096 * (1 + i % 3), 100 + i));
    status.push_back(Space(1));
    // Request i writes at sector 64 * i; request 0 (sector 0) is held.
    ASSERT_TRUE(engine_->Submit(static_cast<uint16_t>(i), {Header(kTypeOut, 64 * i), Put(data[i])},
                                {status[i]})
                    .ok());
  }
  EXPECT_EQ(engine_->InFlight().size(), static_cast<size_t>(kRequests));
  EXPECT_EQ(engine_->InFlight().front(), 0);
  WaitForCompletions(kRequests - 1);
  // Everything but the held request finished; it is the one still in flight.
  EXPECT_EQ(engine_->InFlight(), std::vector<uint16_t>{0});
  for (const auto& c : done_) EXPECT_NE(c.head, 0);
  gate.Release();
  WaitForCompletions(kRequests);
  EXPECT_EQ(done_.back().head, 0);
  EXPECT_TRUE(engine_->InFlight().empty());

  std::vector<bool> seen(kRequests, false);
  for (const auto& c : done_) {
    EXPECT_EQ(c.status, kStatusOk);
    EXPECT_EQ(c.id, c.head);  // ids in order of acceptance
    seen[c.head] = true;
  }
  EXPECT_EQ(std::count(seen.begin(), seen.end(), true), kRequests);
  for (int i = 0; i < kRequests; ++i) {
    EXPECT_EQ(LastByte(status[i]), kStatusOk);
    EXPECT_EQ(DiskRead(64 * 512 * i, data[i].size()), data[i]) << i;
  }

  // And reads, concurrently, of what was written.
  done_.clear();
  std::vector<Buffer> bufs;
  for (int i = 0; i < kRequests; ++i) {
    bufs.push_back(Space(data[i].size()));
    ASSERT_TRUE(engine_->Submit(static_cast<uint16_t>(i), {Header(kTypeIn, 64 * i)},
                                {bufs[i], Space(1)})
                    .ok());
  }
  WaitForCompletions(kRequests);
  for (int i = 0; i < kRequests; ++i) EXPECT_EQ(Get(bufs[i]), data[i]) << i;
}

TEST_F(BlkTest, DestroyingTheEngineWaitsForItsRequests) {
  OpenDisk();
  for (int i = 0; i < 16; ++i) {
    ASSERT_TRUE(
        engine_->Submit(i, {Header(kTypeOut, 8 * i), Put(Pattern(4096, i))}, {Space(1)}).ok());
  }
  engine_.reset();
  EXPECT_EQ(done_.size(), 16u);
  EXPECT_EQ(backend_->pending(), 0u);
}

TEST_F(BlkTest, ConfigSpaceAndFeatures) {
  BlkOptions o;
  o.logical_sector_size = 4096;
  o.physical_sector_size = 16384;
  OpenDisk(o, kDisk, 2, /*num_queues=*/4);
  auto cfg = BuildConfig(config_);
  ASSERT_EQ(cfg.size(), kConfigSize);
  auto le32 = [&](size_t at) {
    uint32_t v;
    memcpy(&v, &cfg[at], 4);
    return v;
  };
  uint64_t capacity;
  memcpy(&capacity, &cfg[0], 8);
  EXPECT_EQ(capacity, kDisk / 512);
  EXPECT_EQ(le32(8), config_.size_max);
  EXPECT_EQ(le32(12), 254u);  // queue size 256 - header - status
  EXPECT_EQ(le32(16), 0u);    // no geometry
  EXPECT_EQ(le32(20), 4096u);
  EXPECT_EQ(cfg[24], 2);      // 16K physical = 4 logical blocks = 2^2
  EXPECT_EQ(cfg[25], 0);
  EXPECT_EQ(cfg[26] | cfg[27] << 8, 4);  // min_io_size in logical blocks
  EXPECT_EQ(le32(28), 0u);
  EXPECT_EQ(cfg[32], 0);      // writeback
  EXPECT_EQ(cfg[34] | cfg[35] << 8, 4);  // num_queues
  EXPECT_EQ(le32(36), config_.max_discard_sectors);
  EXPECT_EQ(le32(40), config_.max_discard_seg);
  EXPECT_EQ(le32(44), 32u);   // discard alignment = 16K in sectors
  EXPECT_EQ(le32(48), config_.max_write_zeroes_sectors);
  EXPECT_EQ(le32(52), config_.max_write_zeroes_seg);
  EXPECT_EQ(cfg[56], 1);      // write zeroes may unmap
  EXPECT_EQ(cfg[57] | cfg[58] | cfg[59], 0);

  uint64_t f = DeviceFeatures(config_);
  for (int bit : {kFeatureVersion1, kFeatureRingIndirectDesc, kFeatureRingEventIdx,
                  kFeatureSizeMax, kFeatureSegMax, kFeatureBlkSize, kFeatureTopology,
                  kFeatureFlush, kFeatureMq, kFeatureDiscard, kFeatureWriteZeroes}) {
    EXPECT_TRUE(f & (1ull << bit)) << bit;
  }
  EXPECT_FALSE(f & (1ull << kFeatureRo));

  // One queue, nodelete: no MQ, no DISCARD, write zeroes never unmaps.
  BlkOptions nd;
  nd.no_delete = true;
  OpenDisk(nd);
  f = DeviceFeatures(config_);
  EXPECT_FALSE(f & (1ull << kFeatureMq));
  EXPECT_FALSE(f & (1ull << kFeatureDiscard));
  EXPECT_TRUE(f & (1ull << kFeatureWriteZeroes));
  cfg = BuildConfig(config_);
  EXPECT_EQ(le32(20), 512u);
  EXPECT_EQ(cfg[24], 0);
  EXPECT_EQ(le32(36), 0u);
  EXPECT_EQ(cfg[56], 0);
}

TEST(BlkOptionsTest, ParsesBhyveOptions) {
  auto o = ParseBlkOptions({{"ro", ""},
                            {"nocache", ""},
                            {"direct", ""},
                            {"nodelete", "true"},
                            {"sectorsize", "4096/16384"},
                            {"ser", "BHYVE-1234"},
                            {"bootindex", "2"}});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_TRUE(o->read_only);
  EXPECT_TRUE(o->no_cache);
  EXPECT_TRUE(o->sync_writes);
  EXPECT_TRUE(o->no_delete);
  EXPECT_EQ(o->logical_sector_size, 4096u);
  EXPECT_EQ(o->physical_sector_size, 16384u);
  EXPECT_EQ(o->serial, "BHYVE-1234");
  EXPECT_EQ(o->boot_index, 2u);

  o = ParseBlkOptions({{"sectorsize", "512"}, {"serial", "x"}, {"sync", "on"}, {"ro", "off"}});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->logical_sector_size, 512u);
  EXPECT_EQ(o->physical_sector_size, 0u);
  EXPECT_EQ(o->serial, "x");
  EXPECT_TRUE(o->sync_writes);
  EXPECT_FALSE(o->read_only);

  o = ParseBlkOptions({});
  ASSERT_TRUE(o.ok());
  EXPECT_FALSE(o->read_only);
  EXPECT_EQ(o->logical_sector_size, 0u);
  EXPECT_FALSE(o->boot_index.has_value());
}

TEST(BlkOptionsTest, ErrorsNameTheOption) {
  struct Case {
    std::vector<std::pair<std::string, std::string>> options;
    std::string message;
  };
  std::vector<Case> cases = {
      {{{"bogus", ""}}, "unknown virtio-blk option 'bogus'"},
      {{{"ro", ""}, {"ro", ""}}, "option 'ro' is given twice"},
      {{{"ser", "a"}, {"serial", "b"}}, "options 'ser' and 'serial' mean the same"},
      {{{"ro", "maybe"}}, "ro=maybe: 'ro' is a flag"},
      {{{"sectorsize", ""}}, "expected logical[/physical]"},
      {{{"sectorsize", "1000"}}, "logical size 1000 is not a power of two from 512 to 4096"},
      {{{"sectorsize", "8192"}}, "logical size 8192 is not a power of two"},
      {{{"sectorsize", "256"}}, "logical size 256"},
      {{{"sectorsize", "abc"}}, "logical size 'abc' is not a number"},
      {{{"sectorsize", "4096/512"}}, "physical size 512 is not a power of two from 4096"},
      {{{"sectorsize", "512/x"}}, "physical size 'x' is not a number"},
      {{{"sectorsize", "512/1024/2048"}}, "expected logical[/physical]"},
      {{{"ser", "123456789012345678901"}}, "the serial is 21 bytes; at most 20"},
      {{{"serial", "caf\xc3\xa9"}}, "printable ASCII"},
      {{{"bootindex", "-1"}}, "bootindex=-1: expected a non-negative number"},
  };
  for (const auto& c : cases) {
    auto o = ParseBlkOptions(c.options);
    ASSERT_FALSE(o.ok()) << c.message;
    EXPECT_EQ(o.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(o.status().message().find(c.message), std::string::npos)
        << "got: " << o.status().message() << "\nwant: " << c.message;
  }
}

TEST(BlkOptionsTest, DefaultSerial) {
  std::string a = DefaultSerial("/var/vm/disk0.img");
  EXPECT_EQ(a.size(), 17u);
  EXPECT_EQ(a.substr(0, 3), "HV-");
  EXPECT_EQ(a, DefaultSerial("/var/vm/disk0.img"));
  EXPECT_NE(a, DefaultSerial("/var/vm/disk1.img"));
  EXPECT_TRUE(ParseBlkOptions({{"serial", a}}).ok());
}

}  // namespace
}  // namespace hv::virtio_blk
