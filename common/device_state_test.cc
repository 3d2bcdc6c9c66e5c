#include "common/device_state.h"

#include <sys/mman.h>
#include <unistd.h>

#include "gtest/gtest.h"

namespace hv {
namespace {

class DeviceStateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fd_ = memfd_create("state-test", MFD_CLOEXEC);
    ASSERT_GE(fd_, 0);
    ASSERT_TRUE(InitDeviceStateRegion(fd_, 4096).ok());
  }
  void TearDown() override { close(fd_); }
  int fd_ = -1;
};

TEST_F(DeviceStateTest, AFreshRegionHasNoState) {
  auto region = DeviceStateRegion::Map(fd_);
  ASSERT_TRUE(region.ok()) << region.status();
  EXPECT_TRUE((*region)->Load().empty());
  EXPECT_EQ((*region)->saves(), 0u);
}

TEST_F(DeviceStateTest, ASuccessorMappingTheSameFdLoadsTheLastSave) {
  {
    auto first = DeviceStateRegion::Map(fd_);
    ASSERT_TRUE(first.ok());
    ASSERT_TRUE((*first)->Store("one").ok());
    ASSERT_TRUE((*first)->Store("second state").ok());
  }  // the process is gone; the region stays with the fd
  auto next = DeviceStateRegion::Map(fd_);
  ASSERT_TRUE(next.ok());
  EXPECT_EQ((*next)->Load(), "second state");
  EXPECT_EQ((*next)->saves(), 2u);
}

TEST_F(DeviceStateTest, ACorruptedCopyIsNotLoaded) {
  auto region = DeviceStateRegion::Map(fd_);
  ASSERT_TRUE(region.ok());
  ASSERT_TRUE((*region)->Store("abcdef").ok());
  // Flip a byte of the active copy (the first save goes to copy 0).
  char byte;
  off_t at = sizeof(DeviceStateHeader) + 8 + 2;
  ASSERT_EQ(pread(fd_, &byte, 1, at), 1);
  byte ^= 0xff;
  ASSERT_EQ(pwrite(fd_, &byte, 1, at), 1);
  EXPECT_TRUE((*region)->Load().empty());
}

TEST_F(DeviceStateTest, StateLargerThanACopyIsRefused) {
  auto region = DeviceStateRegion::Map(fd_);
  ASSERT_TRUE(region.ok());
  EXPECT_FALSE((*region)->Store(std::string((*region)->capacity() + 1, 'x')).ok());
  EXPECT_TRUE((*region)->Store(std::string((*region)->capacity(), 'x')).ok());
}

TEST_F(DeviceStateTest, ARegionWithABadHeaderIsRefused) {
  uint32_t junk = 0;
  ASSERT_EQ(pwrite(fd_, &junk, sizeof(junk), 0), 4);
  EXPECT_FALSE(DeviceStateRegion::Map(fd_).ok());
}

TEST(StateBlobTest, ReaderStopsAtTheEnd) {
  std::string blob;
  StateWriter w(&blob);
  w.Put(uint32_t{7});
  w.Put(uint8_t{9});
  StateReader r(blob);
  uint32_t a = 0;
  uint8_t b = 0;
  uint64_t c = 42;
  EXPECT_TRUE(r.Get(&a));
  EXPECT_TRUE(r.Get(&b));
  EXPECT_FALSE(r.Get(&c));
  EXPECT_EQ(a, 7u);
  EXPECT_EQ(b, 9u);
  EXPECT_EQ(c, 42u);
}

}  // namespace
}  // namespace hv
