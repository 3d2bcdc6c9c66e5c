#include "devproc/ahci/ahci_options.h"

#include "gtest/gtest.h"

namespace hv::ahci {
namespace {

TEST(AhciOptions, ParsesBhyvesOptions) {
  auto o = ParseAhciPortOptions(false, {{"ro", ""},
                                        {"nocache", ""},
                                        {"sync", ""},
                                        {"sectorsize", "512/4096"},
                                        {"ser", "ABC"},
                                        {"nmrr", "1"},
                                        {"model", "Disk"},
                                        {"rev", "2.0"}});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_TRUE(o->read_only && o->no_cache && o->sync_writes);
  EXPECT_EQ(o->logical_sector_size, 512u);
  EXPECT_EQ(o->physical_sector_size, 4096u);
  EXPECT_EQ(o->serial, "ABC");
  EXPECT_EQ(o->rotation_rate, 1);
  EXPECT_TRUE(ParseAhciPortOptions(true, {})->read_only);
}

TEST(AhciOptions, ErrorsNameTheOption) {
  auto e = ParseAhciPortOptions(false, {{"bogus", ""}});
  EXPECT_NE(e.status().message().find("unknown ahci port option 'bogus'"), std::string::npos);
  e = ParseAhciPortOptions(false, {{"ser", std::string(21, 'x')}});
  EXPECT_NE(e.status().message().find("at most 20"), std::string::npos);
  e = ParseAhciPortOptions(false, {{"sectorsize", "4096/512"}});
  EXPECT_NE(e.status().message().find("sectorsize=4096/512"), std::string::npos);
  e = ParseAhciPortOptions(true, {{"ro", "off"}});
  EXPECT_NE(e.status().message().find("always read-only"), std::string::npos);
  e = ParseAhciPortOptions(false, {{"sync", ""}, {"direct", ""}});
  EXPECT_FALSE(e.ok());
  EXPECT_LE(DefaultAhciSerial("/some/long/path/disk.img", 31).size(), 20u);
}

}  // namespace
}  // namespace hv::ahci
