#include "devproc/ahci/atapi_cdrom.h"

#include <vector>

#include "gtest/gtest.h"

namespace hv::ahci {
namespace {

std::vector<uint8_t> Cdb(std::initializer_list<uint8_t> bytes) {
  std::vector<uint8_t> c(bytes);
  c.resize(12, 0);
  return c;
}

TEST(AtapiCdrom, ReadTocHasOneTrackAndTheLeadOut) {
  AtapiCdrom cd(2048 * 1000);
  auto r = cd.Execute(Cdb({0x43, 0, 0, 0, 0, 0, 0, 0, 100}).data());
  ASSERT_FALSE(r.check_condition);
  ASSERT_EQ(r.data.size(), 20u);
  EXPECT_EQ(r.data[1], 18);   // data length
  EXPECT_EQ(r.data[6], 1);    // track 1
  EXPECT_EQ(r.data[14], 0xaa);
  EXPECT_EQ(r.data[18] << 8 | r.data[19], 1000);  // lead-out at LBA 1000
  // MSF: the lead-out at 1000 + 150 frames = 00:15:25.
  r = cd.Execute(Cdb({0x43, 2, 0, 0, 0, 0, 0, 0, 100}).data());
  EXPECT_EQ(r.data[17], 0);
  EXPECT_EQ(r.data[18], 15);
  EXPECT_EQ(r.data[19], 25);
  // Session information, and an allocation length that cuts the answer.
  r = cd.Execute(Cdb({0x43, 0, 1, 0, 0, 0, 0, 0, 4}).data());
  EXPECT_EQ(r.data.size(), 4u);
  r = cd.Execute(Cdb({0x43, 0, 5}).data());
  EXPECT_TRUE(r.check_condition);
}

TEST(AtapiCdrom, ReadRangesAreChecked) {
  AtapiCdrom cd(2048 * 10);
  auto r = cd.Execute(Cdb({0x28, 0, 0, 0, 0, 8, 0, 0, 2}).data());
  EXPECT_TRUE(r.read);
  EXPECT_EQ(r.read_offset, 8u * 2048);
  EXPECT_EQ(r.read_length, 2u * 2048);
  r = cd.Execute(Cdb({0x28, 0, 0, 0, 0, 9, 0, 0, 2}).data());
  EXPECT_TRUE(r.check_condition);
  EXPECT_EQ(r.sense_key, kSenseIllegalRequest);
  r = cd.Execute(Cdb({0xa8, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}).data());
  EXPECT_TRUE(r.check_condition);
}

TEST(AtapiCdrom, EjectLockAndMediaEvents) {
  AtapiCdrom cd(2048 * 10);
  EXPECT_FALSE(cd.Execute(Cdb({0x00}).data()).check_condition);
  cd.Execute(Cdb({0x1e, 0, 0, 0, 1}).data());  // prevent removal
  auto r = cd.Execute(Cdb({0x1b, 0, 0, 0, 2}).data());  // eject
  EXPECT_TRUE(r.check_condition);
  EXPECT_FALSE(cd.tray_open());
  cd.Execute(Cdb({0x1e, 0, 0, 0, 0}).data());
  EXPECT_FALSE(cd.Execute(Cdb({0x1b, 0, 0, 0, 2}).data()).check_condition);
  EXPECT_TRUE(cd.tray_open());
  r = cd.Execute(Cdb({0x00}).data());
  EXPECT_TRUE(r.check_condition);
  EXPECT_EQ(r.sense_key, kSenseNotReady);
  r = cd.Execute(Cdb({0x03, 0, 0, 0, 18}).data());
  EXPECT_EQ(r.data[2], kSenseNotReady);
  EXPECT_EQ(r.data[12], 0x3a);
  // GET EVENT STATUS NOTIFICATION reports the removal once.
  r = cd.Execute(Cdb({0x4a, 1, 0, 0, 0x10, 0, 0, 0, 8}).data());
  ASSERT_EQ(r.data.size(), 8u);
  EXPECT_EQ(r.data[4], 3);
  r = cd.Execute(Cdb({0x4a, 1, 0, 0, 0x10, 0, 0, 0, 8}).data());
  EXPECT_EQ(r.data[4], 0);
  EXPECT_EQ(r.data[5], 1);  // door open
  cd.Execute(Cdb({0x1b, 0, 0, 0, 3}).data());  // load
  r = cd.Execute(Cdb({0x4a, 1, 0, 0, 0x10, 0, 0, 0, 8}).data());
  EXPECT_EQ(r.data[4], 2);  // new media
  EXPECT_EQ(r.data[5], 2);  // present
  // Asynchronous GESN is not supported.
  EXPECT_TRUE(cd.Execute(Cdb({0x4a, 0, 0, 0, 0x10, 0, 0, 0, 8}).data()).check_condition);
}

TEST(AtapiCdrom, ConfigurationAndModePages) {
  AtapiCdrom cd(2048 * 100);
  auto r = cd.Execute(Cdb({0x46, 0, 0, 0, 0, 0, 0, 1, 0}).data());
  ASSERT_GE(r.data.size(), 8u);
  EXPECT_EQ(r.data[6] << 8 | r.data[7], 0x0008);  // current profile: CD-ROM
  uint32_t length = r.data[0] << 24 | r.data[1] << 16 | r.data[2] << 8 | r.data[3];
  EXPECT_EQ(length + 4, r.data.size());
  // One feature (RT = 2): the removable medium feature.
  r = cd.Execute(Cdb({0x46, 2, 0, 3, 0, 0, 0, 1, 0}).data());
  ASSERT_EQ(r.data.size(), 16u);
  EXPECT_EQ(r.data[9], 3);
  r = cd.Execute(Cdb({0x5a, 0, 0x2a, 0, 0, 0, 0, 0, 128}).data());
  ASSERT_FALSE(r.check_condition);
  EXPECT_EQ(r.data[8], 0x2a);
  EXPECT_EQ(r.data[0] << 8 | r.data[1], static_cast<int>(r.data.size()) - 2);
  r = cd.Execute(Cdb({0x1a, 0, 0x3f, 0, 255}).data());
  EXPECT_FALSE(r.check_condition);
  EXPECT_EQ(r.data[0], r.data.size() - 1);
  EXPECT_TRUE(cd.Execute(Cdb({0x5a, 0, 0xc0 | 0x2a, 0, 0, 0, 0, 0, 128}).data()).check_condition);
  EXPECT_TRUE(cd.Execute(Cdb({0x5a, 0, 0x05, 0, 0, 0, 0, 0, 128}).data()).check_condition);
  r = cd.Execute(Cdb({0x12, 0, 0, 0, 36}).data());
  EXPECT_EQ(r.data.size(), 36u);
  EXPECT_EQ(r.data[1], 0x80);
  EXPECT_TRUE(cd.Execute(Cdb({0x12, 1, 0x80, 0, 36}).data()).check_condition);
}

}  // namespace
}  // namespace hv::ahci
