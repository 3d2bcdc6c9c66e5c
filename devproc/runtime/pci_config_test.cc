#include "devproc/runtime/pci_config.h"

#include <cstdlib>

#include "gtest/gtest.h"

namespace hv::devproc {
namespace {

PciIdentity TestIdentity() {
  PciIdentity id;
  id.vendor = 0x1af4;
  id.device = 0x1042;
  id.class_code = 0x010000;
  id.interrupt_pin = 1;
  return id;
}

TEST(PciConfigTest, IdentityIsReadOnly) {
  PciConfigSpace cfg(TestIdentity());
  EXPECT_EQ(cfg.Read(0, 4), 0x10421af4u);
  cfg.Write(0, 4, 0xdeadbeef);
  EXPECT_EQ(cfg.Read(0, 2), 0x1af4u);
  EXPECT_EQ(cfg.Read(0x09, 1) | cfg.Read(0x0a, 1) << 8 | cfg.Read(0x0b, 1) << 16, 0x010000u);
  EXPECT_EQ(cfg.Read(0x3d, 1), 1u);
}

TEST(PciConfigTest, CommandKeepsOnlyWritableBits) {
  PciConfigSpace cfg(TestIdentity());
  cfg.Write(0x04, 2, 0xffff);
  EXPECT_EQ(cfg.command(), 0x0547);
  EXPECT_TRUE(cfg.io_enabled());
  EXPECT_TRUE(cfg.memory_enabled());
  cfg.Write(0x04, 1, 0x00);
  EXPECT_FALSE(cfg.memory_enabled());
}

TEST(PciConfigTest, Mem32BarSizingAndPlacement) {
  PciConfigSpace cfg(TestIdentity());
  cfg.AddBar(0, BarKind::kMem32, 0x4000);
  int moved = -1;
  uint64_t where = 0;
  cfg.OnBarMoved([&](int bar, uint64_t base) { moved = bar, where = base; });
  cfg.Write(0x10, 4, 0xffffffff);
  EXPECT_EQ(cfg.Read(0x10, 4), 0xffffc000u);  // size 16 KiB, 32-bit, not prefetchable
  cfg.Write(0x10, 4, 0xfebf0000);
  EXPECT_EQ(cfg.BarAddress(0), 0xfebf0000u);
  EXPECT_EQ(moved, 0);
  EXPECT_EQ(where, 0xfebf0000u);
}

TEST(PciConfigTest, Mem64BarSpansTwoDwords) {
  PciConfigSpace cfg(TestIdentity());
  cfg.AddBar(2, BarKind::kMem64, 0x100000, true);
  EXPECT_EQ(cfg.Read(0x18, 4), 0xcu);  // 64-bit, prefetchable
  cfg.Write(0x18, 4, 0xffffffff);
  cfg.Write(0x1c, 4, 0xffffffff);
  EXPECT_EQ(cfg.Read(0x18, 4), 0xfff0000cu);
  EXPECT_EQ(cfg.Read(0x1c, 4), 0xffffffffu);
  cfg.Write(0x18, 4, 0x00000000);
  cfg.Write(0x1c, 4, 0x00000008);
  EXPECT_EQ(cfg.BarAddress(2), 0x800000000ull);
}

TEST(PciConfigTest, IoBarAndUnimplementedBars) {
  PciConfigSpace cfg(TestIdentity());
  cfg.AddBar(1, BarKind::kIo, 0x40);
  cfg.Write(0x14, 4, 0xffffffff);
  EXPECT_EQ(cfg.Read(0x14, 4), 0xffffffc1u);
  cfg.Write(0x14, 4, 0xc040);
  EXPECT_EQ(cfg.BarAddress(1), 0xc040u);
  cfg.Write(0x10, 4, 0xffffffff);  // BAR0 is not implemented
  EXPECT_EQ(cfg.Read(0x10, 4), 0u);
}

TEST(PciConfigTest, PartialBarWritesMerge) {
  PciConfigSpace cfg(TestIdentity());
  cfg.AddBar(0, BarKind::kMem32, 0x1000);
  cfg.Write(0x10, 4, 0xfe000000);
  cfg.Write(0x12, 2, 0xfeb0);
  EXPECT_EQ(cfg.BarAddress(0), 0xfeb00000u);
}

TEST(PciConfigTest, CapabilitiesChainAndKeepTheirWritableBits) {
  PciConfigSpace cfg(TestIdentity());
  uint8_t a = cfg.AddCapability({0x09, 0, 4, 0xaa});
  uint8_t b = cfg.AddCapability({0x11, 0, 0x03, 0x00}, {0, 0, 0, 0xc0});
  EXPECT_EQ(cfg.Read(0x06, 2) & 0x10, 0x10u);  // list present
  EXPECT_EQ(cfg.Read(0x34, 1), a);
  EXPECT_EQ(cfg.Read(a + 1, 1), b);
  EXPECT_EQ(cfg.Read(b + 1, 1), 0u);
  cfg.Write(a + 3, 1, 0x55);  // read-only capability byte
  EXPECT_EQ(cfg.Read(a + 3, 1), 0xaau);
  cfg.Write(b + 3, 1, 0xff);  // only the top two bits stick
  EXPECT_EQ(cfg.Read(b + 3, 1), 0xc0u);
}

TEST(PciConfigTest, HostileAccessesStayInBounds) {
  PciConfigSpace cfg(TestIdentity());
  cfg.AddBar(0, BarKind::kMem64, 0x1000);
  srand(1);
  for (int i = 0; i < 100000; ++i) {
    uint32_t reg = rand() % 300;
    uint32_t size = rand() % 6;
    if (rand() % 2) {
      cfg.Write(reg, size, rand());
    } else {
      (void)cfg.Read(reg, size);
    }
  }
  EXPECT_EQ(cfg.Read(0, 2), 0x1af4u);
  EXPECT_EQ(cfg.Read(0x100, 4), 0xffffffffu);
}

}  // namespace
TEST(PciConfigRestartTest, RestoreKeepsTheGuestsWritesAndNothingElse) {
  PciIdentity id;
  id.vendor = 0x1af4;
  id.device = 0x1042;
  PciConfigSpace first(id);
  first.AddBar(0, BarKind::kMem64, 0x8000);
  first.Write(0x04, 2, 0x0006);        // memory + bus master
  first.Write(0x10, 4, 0xfebf0000);    // BAR 0, low
  first.Write(0x14, 4, 0x00000001);    // BAR 0, high
  auto saved = first.Save();
  saved[0x00] = 0x00;                  // a read-only vendor id must not come back
  saved[0x10] = 0xff;                  // nor BAR bits below its size

  PciConfigSpace second(id);
  second.AddBar(0, BarKind::kMem64, 0x8000);
  int moved = -1;
  uint64_t moved_to = 0;
  second.OnBarMoved([&](int bar, uint64_t base) {
    moved = bar;
    moved_to = base;
  });
  second.Restore(saved);
  EXPECT_EQ(second.command(), 0x0006);
  EXPECT_EQ(second.BarAddress(0), 0x1febf0000ull);
  EXPECT_EQ(second.Read(0x00, 2), 0x1af4u);
  EXPECT_EQ(moved, 0);
  EXPECT_EQ(moved_to, 0x1febf0000ull);
}

}  // namespace hv::devproc
