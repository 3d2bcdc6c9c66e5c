#include "broker/vm_identity.h"

#include <stdlib.h>
#include <unistd.h>

#include "gtest/gtest.h"

namespace hv::broker {
namespace {

TEST(UidRangeTest, ParsesFirstAndCount) {
  auto range = ParseUidRange("3000000:16");
  ASSERT_TRUE(range.ok()) << range.status();
  EXPECT_EQ(range->first, 3000000u);
  EXPECT_EQ(range->count, 16u);
}

TEST(UidRangeTest, RefusesRootEmptyAndOverflowingRanges) {
  EXPECT_FALSE(ParseUidRange("0:10").ok());       // uid 0 is the host's root
  EXPECT_FALSE(ParseUidRange("1000:0").ok());
  EXPECT_FALSE(ParseUidRange("4294967290:10").ok());
  EXPECT_FALSE(ParseUidRange("1000").ok());
  EXPECT_FALSE(ParseUidRange("a:b").ok());
}

TEST(VmIdentityTest, RunningVmsGetDifferentUidsAndAFreedUidIsTakenAgain) {
  if (getuid() != 0) GTEST_SKIP() << "SKIPPED: only a root broker gives VMs uids of their own";
  char dir[] = "/tmp/hvuid.XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  setenv("HV_UID_LOCK_DIR", dir, 1);
  UidRange range{3000000, 2};
  auto a = ClaimVmIdentity(range);
  auto b = ClaimVmIdentity(range);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(a->uid, 3000000u);
  EXPECT_EQ(b->uid, 3000001u);
  EXPECT_EQ(b->gid, b->uid);
  EXPECT_FALSE(ClaimVmIdentity(range).ok()) << "the range is full";
  a->lock.Reset();  // that VM ended
  auto c = ClaimVmIdentity(range);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->uid, 3000000u);
  unsetenv("HV_UID_LOCK_DIR");
  system((std::string("rm -rf ") + dir).c_str());
}

}  // namespace
}  // namespace hv::broker
