#include "devproc/block/block_backend.h"

#include <fcntl.h>
#include <linux/loop.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace hv::block {
namespace {

constexpr uint64_t kMiB = 1 << 20;

std::string TempPath(const std::string& name) {
  const char* dir = getenv("TEST_TMPDIR");
  return std::string(dir ? dir : "/tmp") + "/" + name;
}

// A fresh sparse file of `size` bytes, opened with `flags`.
Fd MakeDisk(const std::string& name, uint64_t size, int flags = O_RDWR) {
  std::string path = TempPath(name);
  unlink(path.c_str());
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  EXPECT_GE(fd, 0) << strerror(errno);
  EXPECT_EQ(ftruncate(fd, size), 0);
  if (flags != O_RDWR) {
    close(fd);
    fd = open(path.c_str(), flags | O_CLOEXEC);
  }
  return Fd(fd);
}

std::unique_ptr<BlockBackend> MakeBackend(Fd fd, BlockBackendOptions options = {}) {
  auto b = BlockBackend::Create(std::move(fd), options);
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? std::move(*b) : nullptr;
}

std::vector<uint8_t> Pattern(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = rng() & 0xff;
  return v;
}

uint64_t Blocks(int fd) {
  struct stat st;
  EXPECT_EQ(fstat(fd, &st), 0);
  return st.st_blocks;
}

// Waits for the eventfd and runs completions until `pending()` is 0.
void DrainAll(BlockBackend& b) {
  while (b.pending() > 0) {
    struct pollfd p = {b.event_fd(), POLLIN, 0};
    ASSERT_EQ(poll(&p, 1, 10000), 1) << "no completion within 10 s";
    b.DrainCompletions();
  }
}

TEST(BlockBackendTest, RejectsWhatIsNotADisk) {
  int pipefd[2];
  ASSERT_EQ(pipe(pipefd), 0);
  close(pipefd[1]);
  auto b = BlockBackend::Create(Fd(pipefd[0]), {});
  EXPECT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("neither a regular file nor a block device"),
            std::string::npos)
      << b.status();

  std::string path = TempPath("wronly.img");
  Fd w = MakeDisk("wronly.img", 4096, O_WRONLY);
  b = BlockBackend::Create(std::move(w), {});
  EXPECT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("write-only"), std::string::npos) << b.status();

  BlockBackendOptions o;
  o.logical_block_size = 1000;
  b = BlockBackend::Create(MakeDisk("bad.img", 4096), o);
  EXPECT_FALSE(b.ok());
  o.logical_block_size = 4096;
  o.physical_block_size = 512;
  b = BlockBackend::Create(MakeDisk("bad.img", 4096), o);
  EXPECT_FALSE(b.ok());
  o = {};
  o.num_workers = 0;
  b = BlockBackend::Create(MakeDisk("bad.img", 4096), o);
  EXPECT_FALSE(b.ok());
}

TEST(BlockBackendTest, SizeAndBlockSizes) {
  auto b = MakeBackend(MakeDisk("size.img", 3 * 4096 + 700));
  ASSERT_TRUE(b);
  EXPECT_EQ(b->size(), 3 * 4096 + 512u);  // whole 512-byte blocks
  EXPECT_EQ(b->logical_block_size(), 512u);
  EXPECT_EQ(b->physical_block_size(), 512u);
  EXPECT_FALSE(b->read_only());
  EXPECT_FALSE(b->is_block_device());

  BlockBackendOptions o;
  o.logical_block_size = 4096;
  auto b4 = MakeBackend(MakeDisk("size4k.img", 3 * 4096 + 700), o);
  ASSERT_TRUE(b4);
  EXPECT_EQ(b4->size(), 3 * 4096u);
  EXPECT_EQ(b4->physical_block_size(), 4096u);
}

TEST(BlockBackendTest, ReadOnlyFdMakesAReadOnlyBackend) {
  auto b = MakeBackend(MakeDisk("ro.img", 8192, O_RDONLY));
  ASSERT_TRUE(b);
  EXPECT_TRUE(b->read_only());
  std::vector<uint8_t> buf(512, 1);
  struct iovec iov = {buf.data(), buf.size()};
  EXPECT_FALSE(b->DoWrite(0, &iov, 1).ok());
  EXPECT_TRUE(b->DoRead(0, &iov, 1).ok());
  EXPECT_FALSE(b->DoDiscard(0, 512).ok());
  EXPECT_FALSE(b->DoWriteZeroes(0, 512, false).ok());

  BlockBackendOptions o;
  o.read_only = true;
  auto b2 = MakeBackend(MakeDisk("ro2.img", 8192), o);
  ASSERT_TRUE(b2);
  EXPECT_TRUE(b2->read_only());
  EXPECT_FALSE(b2->DoWrite(0, &iov, 1).ok());
}

TEST(BlockBackendTest, AsyncWriteReadRoundTrip) {
  auto b = MakeBackend(MakeDisk("rt.img", 4 * kMiB));
  ASSERT_TRUE(b);
  auto data = Pattern(64 * 1024, 1);
  // Three unequal pieces.
  std::vector<struct iovec> out = {{data.data(), 4096},
                                   {data.data() + 4096, 512},
                                   {data.data() + 4608, data.size() - 4608}};
  int done = 0;
  BlockOp w;
  w.kind = BlockOp::Kind::kWrite;
  w.offset = kMiB;
  w.iov = out;
  b->Submit(std::move(w), [&](absl::Status s) {
    EXPECT_TRUE(s.ok()) << s;
    ++done;
  });
  EXPECT_EQ(b->pending(), 1u);
  DrainAll(*b);
  EXPECT_EQ(done, 1);

  std::vector<uint8_t> back(data.size());
  BlockOp r;
  r.kind = BlockOp::Kind::kRead;
  r.offset = kMiB;
  r.iov = {{back.data(), 512}, {back.data() + 512, back.size() - 512}};
  b->Submit(std::move(r), [&](absl::Status s) {
    EXPECT_TRUE(s.ok()) << s;
    ++done;
  });
  DrainAll(*b);
  EXPECT_EQ(done, 2);
  EXPECT_EQ(back, data);

  BlockOp f;
  f.kind = BlockOp::Kind::kFlush;
  b->Submit(std::move(f), [&](absl::Status s) {
    EXPECT_TRUE(s.ok()) << s;
    ++done;
  });
  DrainAll(*b);
  EXPECT_EQ(done, 3);
}

TEST(BlockBackendTest, MoreThanIovMaxBuffers) {
  auto b = MakeBackend(MakeDisk("iov.img", 4 * kMiB));
  ASSERT_TRUE(b);
  auto data = Pattern(3000 * 512, 2);
  std::vector<struct iovec> iov;
  for (size_t i = 0; i < 3000; ++i) iov.push_back({data.data() + i * 512, 512});
  ASSERT_TRUE(b->DoWrite(512, iov.data(), iov.size()).ok());
  std::vector<uint8_t> back(data.size());
  std::vector<struct iovec> riov;
  for (size_t i = 0; i < 3000; ++i) riov.push_back({back.data() + i * 512, 512});
  ASSERT_TRUE(b->DoRead(512, riov.data(), riov.size()).ok());
  EXPECT_EQ(back, data);
}

TEST(BlockBackendTest, ReadPastTheEndFails) {
  auto b = MakeBackend(MakeDisk("eof.img", 4096));
  ASSERT_TRUE(b);
  std::vector<uint8_t> buf(8192);
  struct iovec iov = {buf.data(), buf.size()};
  EXPECT_FALSE(b->DoRead(0, &iov, 1).ok());
}

TEST(BlockBackendTest, DiscardGivesSpaceBack) {
  Fd fd = MakeDisk("discard.img", 4 * kMiB);
  int raw = fd.get();
  auto b = MakeBackend(std::move(fd));
  ASSERT_TRUE(b);
  auto data = Pattern(kMiB, 3);
  struct iovec iov = {data.data(), data.size()};
  ASSERT_TRUE(b->DoWrite(kMiB, &iov, 1).ok());
  ASSERT_TRUE(b->DoFlush().ok());
  uint64_t before = Blocks(raw);
  ASSERT_GE(before, kMiB / 512);
  ASSERT_TRUE(b->DoDiscard(kMiB, kMiB).ok());
  uint64_t after = Blocks(raw);
  EXPECT_LE(after + kMiB / 512, before) << "before " << before << " after " << after;
}

TEST(BlockBackendTest, WriteZeroes) {
  Fd fd = MakeDisk("zeroes.img", 4 * kMiB);
  int raw = fd.get();
  auto b = MakeBackend(std::move(fd));
  ASSERT_TRUE(b);
  auto data = Pattern(2 * kMiB, 4);
  struct iovec iov = {data.data(), data.size()};
  ASSERT_TRUE(b->DoWrite(0, &iov, 1).ok());
  ASSERT_TRUE(b->DoFlush().ok());

  // Without unmap: zeroes, space kept.
  ASSERT_TRUE(b->DoWriteZeroes(4096, 8192, false).ok());
  // With unmap: zeroes, space given back.
  uint64_t before = Blocks(raw);
  ASSERT_TRUE(b->DoWriteZeroes(kMiB, kMiB, true).ok());
  EXPECT_LE(Blocks(raw) + kMiB / 512, before);

  std::vector<uint8_t> back(data.size());
  struct iovec riov = {back.data(), back.size()};
  ASSERT_TRUE(b->DoRead(0, &riov, 1).ok());
  std::vector<uint8_t> want = data;
  std::fill(want.begin() + 4096, want.begin() + 4096 + 8192, 0);
  std::fill(want.begin() + kMiB, want.end(), 0);
  EXPECT_EQ(back, want);
}

TEST(BlockBackendTest, DirectIoBouncesUnalignedBuffers) {
  std::string path = TempPath("direct.img");
  { Fd f = MakeDisk("direct.img", kMiB); }
  int fd = open(path.c_str(), O_RDWR | O_DIRECT | O_CLOEXEC);
  if (fd < 0) GTEST_SKIP() << "O_DIRECT not supported here: " << strerror(errno);
  auto b = MakeBackend(Fd(fd));
  ASSERT_TRUE(b);
  EXPECT_TRUE(b->direct_io());
  auto data = Pattern(8192, 5);
  std::vector<uint8_t> unaligned(8192 + 3);
  memcpy(unaligned.data() + 3, data.data(), data.size());
  struct iovec iov[2] = {{unaligned.data() + 3, 1024}, {unaligned.data() + 3 + 1024, 7168}};
  // The kernel refuses these buffers with O_DIRECT (so the bounce path runs).
  errno = 0;
  EXPECT_LT(pwritev(b->fd(), iov, 2, 4096), 0);
  EXPECT_EQ(errno, EINVAL);
  ASSERT_TRUE(b->DoWrite(4096, iov, 2).ok());
  std::vector<uint8_t> back(8192 + 5);
  struct iovec riov[1] = {{back.data() + 5, 8192}};
  ASSERT_TRUE(b->DoRead(4096, riov, 1).ok());
  EXPECT_EQ(0, memcmp(back.data() + 5, data.data(), data.size()));
}

// A loop device gives the block-device paths (BLKGETSIZE64, BLKDISCARD,
// BLKZEROOUT) a real device; skipped where loop devices cannot be set up.
TEST(BlockBackendTest, BlockDevice) {
  Fd file = MakeDisk("loop.img", 4 * kMiB);
  int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
  if (ctl < 0) GTEST_SKIP() << "no /dev/loop-control: " << strerror(errno);
  int n = ioctl(ctl, LOOP_CTL_GET_FREE);
  close(ctl);
  if (n < 0) GTEST_SKIP() << "no free loop device: " << strerror(errno);
  std::string dev = "/dev/loop" + std::to_string(n);
  int fd = open(dev.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) GTEST_SKIP() << "cannot open " << dev << ": " << strerror(errno);
  struct loop_config config = {};
  config.fd = file.get();
  config.info.lo_flags = LO_FLAGS_AUTOCLEAR;  // detached when the last fd closes
  if (ioctl(fd, LOOP_CONFIGURE, &config) != 0) {
    int err = errno;
    close(fd);
    GTEST_SKIP() << "LOOP_CONFIGURE: " << strerror(err);
  }
  auto b = MakeBackend(Fd(fd));
  ASSERT_TRUE(b);
  EXPECT_TRUE(b->is_block_device());
  EXPECT_EQ(b->size(), 4 * kMiB);
  auto data = Pattern(kMiB, 6);
  struct iovec iov = {data.data(), data.size()};
  ASSERT_TRUE(b->DoWrite(0, &iov, 1).ok());
  ASSERT_TRUE(b->DoFlush().ok());
  EXPECT_TRUE(b->DoDiscard(0, 64 * 1024).ok());
  ASSERT_TRUE(b->DoWriteZeroes(128 * 1024, 64 * 1024, false).ok());
  ASSERT_TRUE(b->DoWriteZeroes(256 * 1024, 64 * 1024, true).ok());
  std::vector<uint8_t> back(kMiB);
  struct iovec riov = {back.data(), back.size()};
  ASSERT_TRUE(b->DoRead(0, &riov, 1).ok());
  for (size_t i = 128 * 1024; i < 192 * 1024; ++i) ASSERT_EQ(back[i], 0) << i;
  for (size_t i = 256 * 1024; i < 320 * 1024; ++i) ASSERT_EQ(back[i], 0) << i;
  EXPECT_EQ(0, memcmp(back.data() + 320 * 1024, data.data() + 320 * 1024, kMiB - 320 * 1024));
}

}  // namespace
}  // namespace hv::block
