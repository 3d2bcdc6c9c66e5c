#include "hvcore/io_dispatch.h"

#include "gtest/gtest.h"

namespace hv {
namespace {

using msg::AddressSpace;

TEST(IoDispatchTest, FindsTheOwnerOfEveryByteAndNothingElse) {
  IoDispatch d;
  ASSERT_TRUE(d.Add({AddressSpace::PIO, 0x3f8, 8, 1, true}, "com1").ok());
  ASSERT_TRUE(d.Add({AddressSpace::PIO, 0x2f8, 8, 2, true}, "com2").ok());
  ASSERT_TRUE(d.Add({AddressSpace::MMIO, 0x3f8, 8, 3, true}, "same-number-other-space").ok());
  ASSERT_NE(d.Find(AddressSpace::PIO, 0x3f8, 1), nullptr);
  EXPECT_EQ(d.Find(AddressSpace::PIO, 0x3ff, 1)->device, 1u);
  EXPECT_EQ(d.Find(AddressSpace::PIO, 0x2f8, 2)->device, 2u);
  EXPECT_EQ(d.Find(AddressSpace::MMIO, 0x3f8, 4)->device, 3u);
  EXPECT_EQ(d.Find(AddressSpace::PIO, 0x400, 1), nullptr);
  EXPECT_EQ(d.Find(AddressSpace::PIO, 0x3f7, 1), nullptr);
  EXPECT_EQ(d.Find(AddressSpace::PIO, 0x3fe, 4), nullptr);  // runs past the end
  EXPECT_EQ(d.Find(AddressSpace::PIO, 0, 1), nullptr);
}

TEST(IoDispatchTest, RefusesOverlapsAndBadRanges) {
  IoDispatch d;
  ASSERT_TRUE(d.Add({AddressSpace::PIO, 0x3f8, 8, 1, true}, "com1").ok());
  auto overlap = d.Add({AddressSpace::PIO, 0x3fc, 8, 2, true}, "other");
  EXPECT_FALSE(overlap.ok());
  EXPECT_NE(std::string(overlap.message()).find("com1"), std::string::npos);
  EXPECT_FALSE(d.Add({AddressSpace::PIO, 0x100, 0, 2, true}, "empty").ok());
  EXPECT_FALSE(d.Add({AddressSpace::PIO, 0xfff0, 0x20, 2, true}, "past-64k").ok());
  EXPECT_FALSE(d.Add({AddressSpace::MMIO, ~0ull - 4, 8, 2, true}, "wraps").ok());
  EXPECT_EQ(d.size(), 1u);
}

}  // namespace
}  // namespace hv
