#include "common/guest_memory.h"

#include <sys/mman.h>
#include <unistd.h>

#include "gtest/gtest.h"

namespace hv {
namespace {

TEST(GuestMemoryTest, TranslatesInsideRamAndRefusesEverythingElse) {
  int fd = memfd_create("ram", MFD_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, 2 * kMiB), 0);
  // Two regions: [0, 1M) at offset 0 and [4G, 4G+1M) at offset 1M.
  auto mem = GuestMemory::Map(fd, 2 * kMiB, {{0, kMiB, 0}, {kHighRamStart, kMiB, kMiB}});
  ASSERT_TRUE(mem.ok()) << mem.status();
  EXPECT_TRUE((*mem)->Translate(0, kMiB).ok());
  EXPECT_TRUE((*mem)->Translate(kHighRamStart + kMiB - 1, 1).ok());
  EXPECT_FALSE((*mem)->Translate(kMiB - 1, 2).ok());               // crosses the end
  EXPECT_FALSE((*mem)->Translate(kMiB, 1).ok());                   // the hole
  EXPECT_FALSE((*mem)->Translate(~0ull, 2).ok());                  // wraps
  EXPECT_FALSE((*mem)->Translate(kHighRamStart, ~0ull).ok());      // huge length
  EXPECT_FALSE((*mem)->Translate(kHighRamStart - 1, 2).ok());      // straddles into a region
  uint32_t v = 0x12345678, back = 0;
  ASSERT_TRUE((*mem)->Write(kHighRamStart + 16, &v, 4).ok());
  ASSERT_TRUE((*mem)->Read(kHighRamStart + 16, &back, 4).ok());
  EXPECT_EQ(back, v);
  // The high region is at memfd offset 1M.
  uint32_t raw = 0;
  ASSERT_EQ(pread(fd, &raw, 4, kMiB + 16), 4);
  EXPECT_EQ(raw, v);
  close(fd);
}

TEST(GuestMemoryTest, RegionsLargerThanTheMemfdAreRefused) {
  int fd = memfd_create("ram", MFD_CLOEXEC);
  ASSERT_EQ(ftruncate(fd, kMiB), 0);
  EXPECT_FALSE(GuestMemory::Map(fd, kMiB, {{0, 2 * kMiB, 0}}).ok());
  EXPECT_FALSE(GuestMemory::Map(fd, kMiB, {{0, kMiB, 1}}).ok());
  close(fd);
}

TEST(GuestLayoutTest, RamAbove3GiBMovesAbove4GiB) {
  auto small = GuestRamRegions(512 * kMiB);
  ASSERT_EQ(small.size(), 1u);
  EXPECT_EQ(small[0].size, 512 * kMiB);
  auto big = GuestRamRegions(5 * kGiB);
  ASSERT_EQ(big.size(), 2u);
  EXPECT_EQ(big[0].size, 3 * kGiB);
  EXPECT_EQ(big[1].gpa, 4 * kGiB);
  EXPECT_EQ(big[1].size, 2 * kGiB);
  EXPECT_EQ(big[1].offset, 3 * kGiB);
}

}  // namespace
}  // namespace hv
