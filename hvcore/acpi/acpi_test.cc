#include "hvcore/acpi/acpi.h"

#include <cstring>
#include <map>
#include <string>

#include "gtest/gtest.h"

namespace hv::acpi {
namespace {

constexpr uint64_t kBase = 0xe0000;

// Reading the blob as the guest would, by guest-physical address.
class Blob {
 public:
  Blob(const Tables& t, uint64_t base) : t_(t), base_(base) {}

  bool Contains(uint64_t addr, uint64_t size) const {
    return addr >= base_ && addr - base_ + size <= t_.bytes.size();
  }
  const uint8_t* At(uint64_t addr) const { return t_.bytes.data() + (addr - base_); }
  uint64_t Le(uint64_t addr, int n) const {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = v << 8 | At(addr)[i];
    return v;
  }
  uint8_t U8(uint64_t a) const { return static_cast<uint8_t>(Le(a, 1)); }
  uint16_t U16(uint64_t a) const { return static_cast<uint16_t>(Le(a, 2)); }
  uint32_t U32(uint64_t a) const { return static_cast<uint32_t>(Le(a, 4)); }
  uint64_t U64(uint64_t a) const { return Le(a, 8); }
  std::string Str(uint64_t a, size_t n) const {
    return std::string(reinterpret_cast<const char*>(At(a)), n);
  }
  uint8_t Sum(uint64_t a, size_t n) const {
    uint8_t s = 0;
    for (size_t i = 0; i < n; ++i) s = static_cast<uint8_t>(s + At(a)[i]);
    return s;
  }

  uint64_t Rsdp() const { return t_.rsdp_address; }
  uint64_t Xsdt() const { return U64(Rsdp() + 24); }
  // Table address by signature, through the XSDT (and the FADT for DSDT/FACS).
  std::map<std::string, uint64_t> TablesBySignature() const {
    std::map<std::string, uint64_t> out;
    uint64_t x = Xsdt();
    out["XSDT"] = x;
    uint32_t n = (U32(x + 4) - 36) / 8;
    for (uint32_t i = 0; i < n; ++i) {
      uint64_t a = U64(x + 36 + 8 * i);
      out[Str(a, 4)] = a;
    }
    if (out.count("FACP")) {
      out["DSDT"] = U64(out["FACP"] + 140);
      out["FACS"] = U32(out["FACP"] + 36);
    }
    return out;
  }

 private:
  const Tables& t_;
  uint64_t base_;
};

IsaDevice Com1() { return {"COM1", "PNP0501", 1, {{0x3f8, 8}}, {4}}; }

Platform PcLike() {
  Platform p;
  p.cpus = 2;
  p.isa_devices = {
      Com1(),
      {"COM2", "PNP0501", 2, {{0x2f8, 8}}, {3}},
      {"RTC", "PNP0B00", 0, {{0x70, 2}}, {8}},
      {"KBD", "PNP0303", 0, {{0x60, 1}, {0x64, 1}}, {1}},
      {"MOU", "PNP0F13", 0, {}, {12}},
      {"PEVT", "QEMU0001", 0, {{0x505, 1}}, {}},
  };
  return p;
}

Tables Build(const Platform& p, uint64_t base = kBase) {
  auto t = BuildTables(p, base);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *std::move(t) : Tables{};
}

TEST(AcpiTablesTest, RsdpAtBaseWithBothChecksums) {
  Tables t = Build(PcLike());
  Blob b(t, kBase);
  EXPECT_EQ(t.rsdp_address, kBase);
  EXPECT_LE(t.bytes.size(), kMaxTablesSize);
  EXPECT_EQ(b.Str(kBase, 8), "RSD PTR ");
  EXPECT_EQ(b.Sum(kBase, 20), 0);
  EXPECT_EQ(b.Sum(kBase, 36), 0);
  EXPECT_EQ(b.Str(kBase + 9, 6), "HVVMM ");
  EXPECT_EQ(b.U8(kBase + 15), 2);        // revision
  EXPECT_EQ(b.U32(kBase + 16), 0u);      // no RSDT
  EXPECT_EQ(b.U32(kBase + 20), 36u);     // length
  EXPECT_TRUE(b.Contains(b.Xsdt(), 36));
  EXPECT_EQ(b.Str(b.Xsdt(), 4), "XSDT");
}

TEST(AcpiTablesTest, EveryTableIsReachableAndChecksummed) {
  for (bool ecam : {false, true}) {
    Platform p = PcLike();
    if (ecam) p.ecam_base = 0xb0000000;
    Tables t = Build(p);
    Blob b(t, kBase);
    auto tables = b.TablesBySignature();
    std::vector<std::string> want = {"XSDT", "FACP", "APIC", "DSDT", "FACS"};
    if (ecam) want.push_back("MCFG");
    EXPECT_EQ(tables.size(), want.size());
    for (const std::string& sig : want) {
      SCOPED_TRACE(sig);
      ASSERT_TRUE(tables.count(sig));
      uint64_t a = tables[sig];
      ASSERT_TRUE(b.Contains(a, 36));
      EXPECT_EQ(b.Str(a, 4), sig);
      uint32_t length = b.U32(a + 4);
      ASSERT_TRUE(b.Contains(a, length));
      EXPECT_EQ(a % 8, 0u);
      if (sig == "FACS") {
        EXPECT_EQ(length, 64u);
        EXPECT_EQ(a % 64, 0u);
        EXPECT_EQ(b.U8(a + 32), 2);  // version
        continue;                    // the FACS has no checksum
      }
      EXPECT_EQ(b.Sum(a, length), 0) << "checksum";
      EXPECT_EQ(b.Str(a + 10, 6), "HVVMM ");
      EXPECT_EQ(b.Str(a + 16, 8), "HVTABLES");
    }
  }
}

TEST(AcpiTablesTest, FacsStaysAlignedAtAnyBase) {
  for (uint64_t base : {0xe0000ull, 0xe0010ull, 0xe0030ull, 0x7fff0ull, 0x100000000ull + 0x20}) {
    Tables t = Build(PcLike(), base);
    Blob b(t, base);
    auto tables = b.TablesBySignature();
    uint64_t facs = base >= (1ull << 32) ? b.U64(tables["FACP"] + 132) : tables["FACS"];
    EXPECT_EQ(facs % 64, 0u) << std::hex << base;
    EXPECT_EQ(b.Str(facs, 4), "FACS");
    if (base >= (1ull << 32)) {
      // Above 4 GiB only the 64-bit fields can point at the FACS and DSDT.
      EXPECT_EQ(b.U32(tables["FACP"] + 36), 0u);
      EXPECT_EQ(b.U32(tables["FACP"] + 40), 0u);
      EXPECT_EQ(b.Str(b.U64(tables["FACP"] + 140), 4), "DSDT");
    }
  }
  EXPECT_FALSE(BuildTables(PcLike(), 0xe0008).ok());  // the RSDP needs 16-byte alignment
}

TEST(AcpiTablesTest, FadtFieldsAtTheirOffsets) {
  Platform p = PcLike();
  Tables t = Build(p);
  Blob b(t, kBase);
  auto tables = b.TablesBySignature();
  uint64_t f = tables["FACP"];
  EXPECT_EQ(b.U32(f + 4), 276u);
  EXPECT_EQ(b.U8(f + 8), 6);                 // revision
  EXPECT_EQ(b.U8(f + 131), 3);               // minor: ACPI 6.3
  EXPECT_EQ(b.U32(f + 36), tables["FACS"]);  // FIRMWARE_CTRL
  EXPECT_EQ(b.U64(f + 132), 0u);             // X_FIRMWARE_CTRL: not both
  EXPECT_EQ(b.U32(f + 40), tables["DSDT"]);
  EXPECT_EQ(b.U64(f + 140), tables["DSDT"]);
  EXPECT_EQ(b.U16(f + 46), 9);               // SCI_INT
  EXPECT_EQ(b.U32(f + 48), 0u);              // SMI_CMD
  EXPECT_EQ(b.U8(f + 52), 0);                // ACPI_ENABLE
  EXPECT_EQ(b.U32(f + 56), 0x400u);          // PM1a_EVT_BLK
  EXPECT_EQ(b.U32(f + 60), 0u);              // PM1b_EVT_BLK
  EXPECT_EQ(b.U32(f + 64), 0x404u);          // PM1a_CNT_BLK
  EXPECT_EQ(b.U32(f + 76), 0x408u);          // PM_TMR_BLK
  EXPECT_EQ(b.U32(f + 80), 0u);              // GPE0_BLK
  EXPECT_EQ(b.U8(f + 88), 4);                // PM1_EVT_LEN
  EXPECT_EQ(b.U8(f + 89), 2);                // PM1_CNT_LEN
  EXPECT_EQ(b.U8(f + 91), 4);                // PM_TMR_LEN
  EXPECT_EQ(b.U8(f + 92), 0);                // GPE0_BLK_LEN
  EXPECT_GT(b.U16(f + 96), 100);             // no C2
  EXPECT_GT(b.U16(f + 98), 1000);            // no C3
  // IAPC_BOOT_ARCH: LEGACY_DEVICES | 8042 | VGA Not Present (an RTC is listed).
  EXPECT_EQ(b.U16(f + 109), 0x0007);
  // Flags: WBINVD | PROC_C1 | SLP_BUTTON | RESET_REG_SUP; not TMR_VAL_EXT, not HW_REDUCED.
  EXPECT_EQ(b.U32(f + 112), 0x00000425u);
  // RESET_REG: System I/O, 8 bits at 0xcf9; RESET_VALUE.
  EXPECT_EQ(b.U8(f + 116), 1);
  EXPECT_EQ(b.U8(f + 117), 8);
  EXPECT_EQ(b.U8(f + 118), 0);
  EXPECT_EQ(b.U8(f + 119), 1);  // byte access
  EXPECT_EQ(b.U64(f + 120), 0xcf9u);
  EXPECT_EQ(b.U8(f + 128), 0x06);
  // X_PM1a_EVT_BLK, X_PM1a_CNT_BLK, X_PM_TMR_BLK: System I/O, width = length * 8.
  struct {
    int offset;
    uint8_t bits;
    uint64_t port;
  } gas[] = {{148, 32, 0x400}, {172, 16, 0x404}, {208, 32, 0x408}};
  for (auto g : gas) {
    SCOPED_TRACE(g.offset);
    EXPECT_EQ(b.U8(f + g.offset), 1);
    EXPECT_EQ(b.U8(f + g.offset + 1), g.bits);
    EXPECT_EQ(b.U8(f + g.offset + 2), 0);
    EXPECT_EQ(b.U64(f + g.offset + 4), g.port);
  }
  for (int zero : {160, 184, 196, 220, 232, 244, 256}) {
    for (int i = 0; i < 12; ++i) EXPECT_EQ(b.U8(f + zero + i), 0) << zero;
  }
}

TEST(AcpiTablesTest, FadtFollowsThePlatform) {
  Platform p;  // no ISA devices at all
  p.sci_irq = 10;
  p.pm1a_evt_port = 0x600;
  p.pm1a_cnt_port = 0x604;
  p.pm_tmr_port = 0x608;
  p.pm_tmr_32bit = true;
  p.reset_port = 0x64;
  p.reset_value = 0xfe;
  Tables t = Build(p);
  Blob b(t, kBase);
  uint64_t f = b.TablesBySignature()["FACP"];
  EXPECT_EQ(b.U16(f + 46), 10);
  EXPECT_EQ(b.U32(f + 56), 0x600u);
  EXPECT_EQ(b.U64(f + 172 + 4), 0x604u);
  EXPECT_EQ(b.U64(f + 208 + 4), 0x608u);
  EXPECT_EQ(b.U32(f + 112) & (1u << 8), 1u << 8);  // TMR_VAL_EXT
  EXPECT_EQ(b.U64(f + 120), 0x64u);
  EXPECT_EQ(b.U8(f + 128), 0xfe);
  // No legacy devices, no 8042, no VGA, no CMOS RTC.
  EXPECT_EQ(b.U16(f + 109), 0x0024);

  p.pm_tmr_port = 0;  // no PM timer
  t = Build(p);
  Blob b2(t, kBase);
  f = b2.TablesBySignature()["FACP"];
  EXPECT_EQ(b2.U32(f + 76), 0u);
  EXPECT_EQ(b2.U8(f + 91), 0);
  EXPECT_EQ(b2.U64(f + 208 + 4), 0u);
}

struct MadtSummary {
  std::vector<std::pair<uint32_t, uint32_t>> lapics;  // (uid, apic id), enabled ones
  std::vector<std::pair<uint32_t, uint32_t>> x2apics;
  int disabled = 0;
  std::vector<std::vector<uint32_t>> ioapics;  // id, address, gsi base
  std::vector<std::vector<uint32_t>> overrides;  // irq, gsi, flags
  int nmis = 0, x2nmis = 0, unknown = 0;
  bool lengths_ok = true;
};

MadtSummary ReadMadt(const Blob& b, uint64_t m) {
  MadtSummary s;
  uint32_t length = b.U32(m + 4);
  for (uint64_t a = m + 44; a < m + length;) {
    uint8_t type = b.U8(a), len = b.U8(a + 1);
    if (len < 2 || a + len > m + length) {
      s.lengths_ok = false;
      break;
    }
    switch (type) {
      case 0:
        s.lengths_ok &= len == 8;
        if (b.U32(a + 4) & 1) s.lapics.push_back({b.U8(a + 2), b.U8(a + 3)}); else ++s.disabled;
        break;
      case 9:
        s.lengths_ok &= len == 16;
        if (b.U32(a + 8) & 1) s.x2apics.push_back({b.U32(a + 12), b.U32(a + 4)}); else ++s.disabled;
        break;
      case 1:
        s.lengths_ok &= len == 12;
        s.ioapics.push_back({b.U8(a + 2), b.U32(a + 4), b.U32(a + 8)});
        break;
      case 2:
        s.lengths_ok &= len == 10 && b.U8(a + 2) == 0;
        s.overrides.push_back({b.U8(a + 3), b.U32(a + 4), b.U16(a + 8)});
        break;
      case 4:
        s.lengths_ok &= len == 6 && b.U8(a + 2) == 0xff && b.U8(a + 5) == 1;
        ++s.nmis;
        break;
      case 0x0a:
        s.lengths_ok &= len == 12 && b.U32(a + 4) == 0xffffffff && b.U8(a + 8) == 1;
        ++s.x2nmis;
        break;
      default:
        ++s.unknown;
    }
    a += len;
  }
  return s;
}

TEST(AcpiTablesTest, MadtListsEveryCpu) {
  for (uint32_t cpus : {1u, 2u, 64u}) {
    SCOPED_TRACE(cpus);
    Platform p;
    p.cpus = cpus;
    Tables t = Build(p);
    Blob b(t, kBase);
    uint64_t m = b.TablesBySignature()["APIC"];
    EXPECT_EQ(b.U8(m + 8), 5);               // revision
    EXPECT_EQ(b.U32(m + 36), 0xfee00000u);   // Local APIC address
    EXPECT_EQ(b.U32(m + 40), 1u);            // PCAT_COMPAT
    MadtSummary s = ReadMadt(b, m);
    EXPECT_TRUE(s.lengths_ok);
    ASSERT_EQ(s.lapics.size(), cpus);
    for (uint32_t i = 0; i < cpus; ++i) {
      EXPECT_EQ(s.lapics[i].first, i);   // UID
      EXPECT_EQ(s.lapics[i].second, i);  // APIC id
    }
    EXPECT_TRUE(s.x2apics.empty());
    EXPECT_EQ(s.disabled, 0);
    ASSERT_EQ(s.ioapics.size(), 1u);
    // The I/O APIC's id defaults to the first id no CPU has.
    EXPECT_EQ(s.ioapics[0], (std::vector<uint32_t>{cpus, 0xfec00000u, 0}));
    // IRQ0 -> GSI2 (conforming: ISA edge/high), IRQ9 -> GSI9 level/high.
    EXPECT_EQ(s.overrides, (std::vector<std::vector<uint32_t>>{{0, 2, 0}, {9, 9, 0x000d}}));
    EXPECT_EQ(s.nmis, 1);
    EXPECT_EQ(s.x2nmis, 0);
    EXPECT_EQ(s.unknown, 0);
  }
}

TEST(AcpiTablesTest, MadtUsesX2ApicAbove254) {
  Platform p;
  p.cpus = 300;
  Tables t = Build(p);
  Blob b(t, kBase);
  MadtSummary s = ReadMadt(b, b.TablesBySignature()["APIC"]);
  EXPECT_TRUE(s.lengths_ok);
  EXPECT_EQ(s.lapics.size(), 255u);  // ids 0..254
  ASSERT_EQ(s.x2apics.size(), 45u);  // ids 255..299
  EXPECT_EQ(s.x2apics.front(), (std::pair<uint32_t, uint32_t>{255, 255}));
  EXPECT_EQ(s.x2apics.back(), (std::pair<uint32_t, uint32_t>{299, 299}));
  EXPECT_EQ(s.x2nmis, 1);
  EXPECT_EQ(s.ioapics[0][0], 0u);  // every 8-bit id is a CPU's
}

TEST(AcpiTablesTest, MadtOptions) {
  Platform p;
  p.cpus = 4;
  p.ioapic_id = 8;
  p.timer_on_gsi2 = false;
  p.sci_irq = 11;
  p.ioapic_address = 0xfec10000;
  Tables t = Build(p);
  Blob b(t, kBase);
  MadtSummary s = ReadMadt(b, b.TablesBySignature()["APIC"]);
  EXPECT_EQ(s.ioapics[0], (std::vector<uint32_t>{8, 0xfec10000u, 0}));
  EXPECT_EQ(s.overrides, (std::vector<std::vector<uint32_t>>{{11, 11, 0x000d}}));
  p.ioapic_id = 3;  // a CPU's
  EXPECT_FALSE(BuildTables(p, kBase).ok());
}

TEST(AcpiTablesTest, McfgOnlyWithEcam) {
  Platform p = PcLike();
  EXPECT_EQ(Blob(Build(p), kBase).TablesBySignature().count("MCFG"), 0u);
  p.ecam_base = 0xb0000000;
  p.ecam_buses = 256;
  Tables t = Build(p);
  Blob b(t, kBase);
  uint64_t m = b.TablesBySignature()["MCFG"];
  EXPECT_EQ(b.U32(m + 4), 60u);
  EXPECT_EQ(b.U8(m + 8), 1);
  EXPECT_EQ(b.U64(m + 44), 0xb0000000u);
  EXPECT_EQ(b.U16(m + 52), 0);    // segment
  EXPECT_EQ(b.U8(m + 54), 0);     // start bus
  EXPECT_EQ(b.U8(m + 55), 255);   // end bus
}

// --- The DSDT, read with a minimal AML decoder of our own ---

class AmlReader {
 public:
  AmlReader(const uint8_t* p, size_t n) : p_(p), n_(n) {}
  size_t pos = 0;
  bool Failed() const { return failed_; }
  uint8_t Byte() {
    if (pos >= n_) {
      failed_ = true;
      return 0;
    }
    return p_[pos++];
  }
  // Returns the end offset of the package.
  size_t PkgLength() {
    size_t start = pos;
    uint8_t lead = Byte();
    int follow = lead >> 6;
    uint32_t v = follow == 0 ? lead & 0x3f : lead & 0x0f;
    for (int i = 0; i < follow; ++i) v |= uint32_t{Byte()} << (4 + 8 * i);
    return start + v;
  }
  uint64_t Integer() {
    uint8_t op = Byte();
    int n = 0;
    switch (op) {
      case 0x00: return 0;
      case 0x01: return 1;
      case 0x0a: n = 1; break;
      case 0x0b: n = 2; break;
      case 0x0c: n = 4; break;
      case 0x0e: n = 8; break;
      default:
        failed_ = true;
        return 0;
    }
    uint64_t v = 0;
    for (int i = 0; i < n; ++i) v |= uint64_t{Byte()} << (8 * i);
    return v;
  }

 private:
  const uint8_t* p_;
  size_t n_;
  bool failed_ = false;
};

// Offset just after the first occurrence of `name` (a NameSeg) in the DSDT.
size_t Find(const uint8_t* p, size_t n, const std::string& name) {
  for (size_t i = 0; i + name.size() <= n; ++i) {
    if (memcmp(p + i, name.data(), name.size()) == 0) return i + name.size();
  }
  return 0;
}

TEST(AcpiTablesTest, DsdtRoutesEveryPciSlotAndPin) {
  Tables t = Build(PcLike());
  Blob b(t, kBase);
  uint64_t d = b.TablesBySignature()["DSDT"];
  uint32_t length = b.U32(d + 4);
  EXPECT_EQ(b.U8(d + 8), 2);  // revision 2: 64-bit integers
  const uint8_t* p = b.At(d);
  size_t at = Find(p, length, "_PRT");
  ASSERT_NE(at, 0u);
  AmlReader r(p, length);
  r.pos = at;
  ASSERT_EQ(r.Byte(), 0x12);  // Package
  size_t end = r.PkgLength();
  ASSERT_EQ(r.Byte(), 128);   // 32 slots x 4 pins
  for (uint32_t slot = 0; slot < 32; ++slot) {
    for (uint32_t pin = 0; pin < 4; ++pin) {
      SCOPED_TRACE(slot * 4 + pin);
      ASSERT_EQ(r.Byte(), 0x12);
      size_t e = r.PkgLength();
      ASSERT_EQ(r.Byte(), 4);
      EXPECT_EQ(r.Integer(), (uint64_t{slot} << 16) | 0xffff);
      EXPECT_EQ(r.Integer(), pin);
      EXPECT_EQ(r.Integer(), 0u);  // Source: a GSI
      uint64_t gsi = r.Integer();
      EXPECT_EQ(gsi, PciIntxGsi(slot, pin));
      EXPECT_GE(gsi, 16u);
      EXPECT_LE(gsi, 23u);
      EXPECT_EQ(r.pos, e);
    }
  }
  EXPECT_EQ(r.pos, end);
  EXPECT_FALSE(r.Failed());
}

TEST(AcpiTablesTest, PciIntxGsiSpreadsPinsOverSixteenToTwentyThree) {
  EXPECT_EQ(PciIntxGsi(0, 0), 16u);
  EXPECT_EQ(PciIntxGsi(1, 0), 17u);
  EXPECT_EQ(PciIntxGsi(1, 3), 20u);
  EXPECT_EQ(PciIntxGsi(7, 1), 16u);
  EXPECT_EQ(PciIntxGsi(31, 3), 18u);
}

TEST(AcpiTablesTest, DsdtHasSoftOff) {
  Platform p;
  p.s5_slp_typ = 7;
  Tables t = Build(p);
  Blob b(t, kBase);
  uint64_t d = b.TablesBySignature()["DSDT"];
  const uint8_t* dsdt = b.At(d);
  uint32_t length = b.U32(d + 4);
  // Name (_S5_, Package (4) {7, 7, 0, 0}) at the root.
  size_t at = Find(dsdt, length, std::string("\x08_S5_", 5));
  ASSERT_NE(at, 0u);
  AmlReader r(dsdt, length);
  r.pos = at;
  ASSERT_EQ(r.Byte(), 0x12);
  r.PkgLength();
  ASSERT_EQ(r.Byte(), 4);
  EXPECT_EQ(r.Integer(), 7u);
  EXPECT_EQ(r.Integer(), 7u);
  EXPECT_EQ(r.Integer(), 0u);
  EXPECT_EQ(r.Integer(), 0u);
  EXPECT_FALSE(r.Failed());
}

TEST(AcpiTablesTest, DsdtListsIsaDevicesWithTheirIds) {
  Tables t = Build(PcLike());
  Blob b(t, kBase);
  uint64_t d = b.TablesBySignature()["DSDT"];
  const uint8_t* dsdt = b.At(d);
  uint32_t length = b.U32(d + 4);
  // Device (COM1) { Name (_HID, EisaId ("PNP0501")) ... }
  size_t com1 = Find(dsdt, length, "COM1");
  ASSERT_NE(com1, 0u);
  EXPECT_EQ(Find(dsdt + com1, length - com1, std::string("\x08_HID\x0c\x41\xd0\x05\x01", 10)), 10u);
  // pvpanic's _HID is a string.
  EXPECT_NE(Find(dsdt, length, std::string("\x08_HID\x0dQEMU0001\x00", 15)), 0u);
  // COM1's resources: IO (Decode16, 0x3F8, 0x3F8, 1, 8), IRQNoFlags () {4}, End.
  EXPECT_NE(Find(dsdt, length, std::string("\x47\x01\xf8\x03\xf8\x03\x01\x08\x22\x10\x00\x79\x00", 13)),
            0u);
  // The RTC's name is padded: "RTC_".
  EXPECT_NE(Find(dsdt, length, "\x5b\x82"), 0u);
  EXPECT_NE(Find(dsdt, length, "RTC_"), 0u);
}

TEST(AcpiTablesTest, RefusesPlatformsItCannotDescribe) {
  auto refuses = [](auto change) {
    Platform p = PcLike();
    change(p);
    return !BuildTables(p, kBase).ok();
  };
  EXPECT_TRUE(refuses([](Platform& p) { p.cpus = 0; }));
  EXPECT_TRUE(refuses([](Platform& p) { p.sci_irq = 0; }));
  EXPECT_TRUE(refuses([](Platform& p) { p.sci_irq = 16; }));
  EXPECT_TRUE(refuses([](Platform& p) { p.sci_irq = 4; }));  // COM1's
  EXPECT_TRUE(refuses([](Platform& p) { p.ioapic_pins = 16; }));
  EXPECT_TRUE(refuses([](Platform& p) { p.s5_slp_typ = 8; }));
  EXPECT_TRUE(refuses([](Platform& p) { p.ioapic_address = 0x100000000; }));
  EXPECT_TRUE(refuses([](Platform& p) { p.pci_mmio32_size = 0x40000000; }));  // covers the IOAPIC
  EXPECT_TRUE(refuses([](Platform& p) { p.pci_mmio32_base = 0xf0000000; p.pci_mmio32_size = 0x20000000; }));
  EXPECT_TRUE(refuses([](Platform& p) { p.ecam_base = 0xc0000000; }));  // inside the MMIO window
  EXPECT_TRUE(refuses([](Platform& p) { p.ecam_base = 0xb0080000; }));  // not 1 MiB-aligned
  EXPECT_TRUE(refuses([](Platform& p) { p.ecam_base = 0xb0000000; p.ecam_buses = 0; }));
  EXPECT_TRUE(refuses([](Platform& p) { p.ecam_base = 0xb0000000; p.ecam_buses = 257; }));
  EXPECT_TRUE(refuses([](Platform& p) { p.pci_mmio64_base = 0x1000000000; p.pci_mmio64_size = ~0ull; }));
  EXPECT_TRUE(refuses([](Platform& p) { p.pci_io_base = 0x800; }));
  EXPECT_TRUE(refuses([](Platform& p) { p.pci_io_size = 0xf001; }));
  EXPECT_TRUE(refuses([](Platform& p) { p.isa_devices.push_back(Com1()); }));  // name twice
  EXPECT_TRUE(refuses([](Platform& p) { p.isa_devices[0].name = "PCI0"; }));
  EXPECT_TRUE(refuses([](Platform& p) { p.isa_devices[0].name = "com1"; }));
  EXPECT_TRUE(refuses([](Platform& p) { p.isa_devices[0].name = "SERIAL"; }));
  EXPECT_TRUE(refuses([](Platform& p) { p.isa_devices[0].hid = ""; }));
  EXPECT_TRUE(refuses([](Platform& p) { p.isa_devices[0].io = {{0x3f8, 0}}; }));
  EXPECT_TRUE(refuses([](Platform& p) { p.isa_devices[0].io = {{0xfffc, 8}}; }));
  EXPECT_TRUE(refuses([](Platform& p) { p.isa_devices[0].irqs = {16}; }));
  EXPECT_TRUE(refuses([](Platform& p) { p.cpus = 20000; }));  // over 128 KiB of MADT
  EXPECT_FALSE(refuses([](Platform&) {}));
  EXPECT_FALSE(refuses([](Platform& p) {
    p.pci_mmio64_base = 0x1000000000;
    p.pci_mmio64_size = 0x1000000000;
    p.pci_io_size = 0;
    p.pci_mmio32_size = 0;
  }));
}

}  // namespace
}  // namespace hv::acpi
