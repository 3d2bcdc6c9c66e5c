#include "hvcore/acpi/acpi.h"

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "hvcore/acpi/aml.h"

namespace hv::acpi {
namespace {

using aml::Bytes;
using aml::Term;

// Identification in every header (ACPI 6.3, 5.2.6).
constexpr char kOemId[] = "HVVMM ";          // 6 characters
constexpr char kOemTableId[] = "HVTABLES";   // 8 characters
constexpr uint32_t kOemRevision = 1;
constexpr char kCreatorId[] = "HVVM";        // the "utility" that built the tables
constexpr uint32_t kCreatorRevision = 1;
constexpr size_t kHeaderSize = 36;

// Revisions: ACPI 6.3.
constexpr uint8_t kXsdtRevision = 1;
constexpr uint8_t kFadtRevision = 6;
constexpr uint8_t kFadtMinorRevision = 3;
constexpr uint8_t kMadtRevision = 5;
constexpr uint8_t kMcfgRevision = 1;
constexpr uint8_t kDsdtRevision = 2;  // 64-bit AML integers
constexpr uint8_t kFacsVersion = 2;

constexpr size_t kRsdpSize = 36;
constexpr size_t kFadtSize = 276;
constexpr size_t kFacsSize = 64;

// Generic Address Structure (5.2.3.2) address space ids and access sizes.
constexpr uint8_t kGasSystemIo = 1;
constexpr uint8_t kAccessByte = 1, kAccessWord = 2, kAccessDWord = 3;

// FADT Flags (5.2.9, Table 5.35).
constexpr uint32_t kFadtWbinvd = 1u << 0;
constexpr uint32_t kFadtProcC1 = 1u << 2;
constexpr uint32_t kFadtSlpButton = 1u << 5;
constexpr uint32_t kFadtTmrValExt = 1u << 8;
constexpr uint32_t kFadtResetRegSup = 1u << 10;

// IA-PC Boot Architecture Flags (5.2.9.3).
constexpr uint16_t kBootLegacyDevices = 1u << 0;
constexpr uint16_t kBoot8042 = 1u << 1;
constexpr uint16_t kBootVgaNotPresent = 1u << 2;
constexpr uint16_t kBootCmosRtcNotPresent = 1u << 5;

// MADT (5.2.12) structure types and flags.
constexpr uint32_t kMadtPcatCompat = 1u << 0;
constexpr uint8_t kMadtLocalApic = 0;
constexpr uint8_t kMadtIoApic = 1;
constexpr uint8_t kMadtIntSrcOverride = 2;
constexpr uint8_t kMadtLocalApicNmi = 4;
constexpr uint8_t kMadtLocalApicAddrOverride = 5;
constexpr uint8_t kMadtLocalX2Apic = 9;
constexpr uint8_t kMadtLocalX2ApicNmi = 0x0a;
constexpr uint32_t kMadtEnabled = 1u << 0;
// MPS INTI flags: bits 1-0 polarity (1 high, 3 low), bits 3-2 trigger (1 edge, 3 level).
constexpr uint16_t kIntiConforms = 0x0000;
constexpr uint16_t kIntiEdgeHigh = 0x0005;
constexpr uint16_t kIntiLevelHigh = 0x000d;
constexpr uint32_t kMaxXApicId = 254;  // 255 is the xAPIC broadcast id

constexpr uint64_t kFourGiB = 1ull << 32;
constexpr uint64_t kEcamBusSize = 1ull << 20;

uint64_t AlignUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

void Put(Bytes& b, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void Put8(Bytes& b, uint8_t v) { b.push_back(v); }
void Put16(Bytes& b, uint16_t v) { Put(b, v, 2); }
void Put32(Bytes& b, uint32_t v) { Put(b, v, 4); }
void Put64(Bytes& b, uint64_t v) { Put(b, v, 8); }
void PutChars(Bytes& b, const char* s, size_t n) { b.insert(b.end(), s, s + n); }
void Set(Bytes& b, size_t offset, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) b[offset + i] = static_cast<uint8_t>(v >> (8 * i));
}

uint8_t Checksum(const uint8_t* p, size_t n) {
  uint8_t sum = 0;
  for (size_t i = 0; i < n; ++i) sum = static_cast<uint8_t>(sum + p[i]);
  return static_cast<uint8_t>(-sum);
}

// The 36-byte System Description Table Header (5.2.6); length and checksum are
// filled in by Finish().
Bytes Header(const char signature[5], uint8_t revision) {
  Bytes b;
  PutChars(b, signature, 4);
  Put32(b, 0);  // Length
  Put8(b, revision);
  Put8(b, 0);  // Checksum
  PutChars(b, kOemId, 6);
  PutChars(b, kOemTableId, 8);
  Put32(b, kOemRevision);
  PutChars(b, kCreatorId, 4);
  Put32(b, kCreatorRevision);
  return b;
}

Bytes Finish(Bytes b) {
  Set(b, 4, b.size(), 4);
  b[9] = 0;
  b[9] = Checksum(b.data(), b.size());
  return b;
}

// Generic Address Structure for `bytes` bytes of System I/O at `port` (all zero
// when `bytes` is 0: the register does not exist).
void PutIoGas(Bytes& b, uint16_t port, uint8_t bytes, uint8_t access_size) {
  if (bytes == 0) {
    Put(b, 0, 12);
    return;
  }
  Put8(b, kGasSystemIo);
  Put8(b, static_cast<uint8_t>(bytes * 8));  // Register Bit Width
  Put8(b, 0);                                // Register Bit Offset
  Put8(b, access_size);
  Put64(b, port);
}
void PutZeroGas(Bytes& b) { Put(b, 0, 12); }

bool HasHid(const Platform& p, absl::string_view hid) {
  return std::any_of(p.isa_devices.begin(), p.isa_devices.end(),
                     [&](const IsaDevice& d) { return d.hid == hid; });
}

// [base, base + size) and [b, b + bsize) share a byte (sizes nonzero, no wrap).
bool Overlaps(uint64_t base, uint64_t size, uint64_t b, uint64_t bsize) {
  return base < b + bsize && b < base + size;
}

uint8_t IoApicId(const Platform& p) {
  if (p.ioapic_id) return *p.ioapic_id;
  return p.cpus <= kMaxXApicId ? static_cast<uint8_t>(p.cpus) : 0;
}

absl::Status Invalid(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("ACPI tables: ", what));
}

absl::Status Validate(const Platform& p, uint64_t base) {
  if (base % 16 != 0) return Invalid(absl::StrCat("base ", absl::Hex(base), " is not 16-byte aligned"));
  if (p.cpus == 0) return Invalid("no CPUs");
  if (p.ioapic_address >= kFourGiB) return Invalid("the I/O APIC must be below 4 GiB");
  if (p.ioapic_id && p.cpus <= kMaxXApicId && *p.ioapic_id < p.cpus) {
    return Invalid(absl::StrCat("I/O APIC id ", *p.ioapic_id, " is also a Local APIC id (0..",
                                p.cpus - 1, ")"));
  }
  if (p.ioapic_pins < 24 || p.ioapic_pins > 240) {
    return Invalid(absl::StrCat("I/O APIC with ", p.ioapic_pins, " pins (want 24..240)"));
  }
  if (p.sci_irq >= 16 || p.sci_irq == 0 || p.sci_irq == 2) {
    return Invalid(absl::StrCat("SCI on IRQ ", p.sci_irq, " (want an ISA IRQ other than 0 and 2)"));
  }
  if (p.pm1a_evt_port == 0 || p.pm1a_cnt_port == 0) return Invalid("PM1a event and control ports are required");
  if (p.pm1a_evt_port > 0xffff - 3 || p.pm1a_cnt_port > 0xffff - 1 || p.pm_tmr_port > 0xffff - 3) {
    return Invalid("a PM register block runs past port 0xffff");
  }
  if (p.s5_slp_typ > 7) return Invalid(absl::StrCat("SLP_TYP ", p.s5_slp_typ, " is not 3 bits"));

  struct Window {
    const char* name;
    uint64_t base, size;
  };
  std::vector<Window> windows;
  if (p.pci_mmio32_size != 0) {
    if (p.pci_mmio32_base >= kFourGiB || p.pci_mmio32_size > kFourGiB - p.pci_mmio32_base) {
      return Invalid("the 32-bit PCI MMIO window must end at or below 4 GiB");
    }
    windows.push_back({"the 32-bit PCI MMIO window", p.pci_mmio32_base, p.pci_mmio32_size});
  }
  if (p.pci_mmio64_size != 0) {
    if (p.pci_mmio64_size > ~0ull - p.pci_mmio64_base + 1 || p.pci_mmio64_base == 0) {
      return Invalid("bad 64-bit PCI MMIO window");
    }
    windows.push_back({"the 64-bit PCI MMIO window", p.pci_mmio64_base, p.pci_mmio64_size});
  }
  if (p.ecam_base != 0) {
    if (p.ecam_buses < 1 || p.ecam_buses > 256) {
      return Invalid(absl::StrCat("ECAM for ", p.ecam_buses, " buses (want 1..256)"));
    }
    if (p.ecam_base % kEcamBusSize != 0) return Invalid("the ECAM window must be 1 MiB-aligned");
    uint64_t size = p.ecam_buses * kEcamBusSize;
    if (p.ecam_base > ~0ull - size + 1) return Invalid("the ECAM window wraps");
    windows.push_back({"the ECAM window", p.ecam_base, size});
  }
  windows.push_back({"the I/O APIC", p.ioapic_address, 0x1000});
  windows.push_back({"the Local APIC", p.lapic_address, 0x1000});
  for (size_t i = 0; i < windows.size(); ++i) {
    for (size_t j = i + 1; j < windows.size(); ++j) {
      if (Overlaps(windows[i].base, windows[i].size, windows[j].base, windows[j].size)) {
        return Invalid(absl::StrCat(windows[i].name, " overlaps ", windows[j].name));
      }
    }
  }
  if (p.pci_io_size != 0 &&
      (p.pci_io_base < 0x1000 || uint32_t{p.pci_io_base} + p.pci_io_size > 0x10000)) {
    return Invalid("the PCI I/O window must lie within 0x1000..0xffff");
  }

  std::set<std::string> names = {"PCI0", "ECAM"};
  for (const IsaDevice& d : p.isa_devices) {
    std::string at = absl::StrCat("ISA device \"", d.name, "\": ");
    Term seg = aml::NameSeg(d.name);
    if (!seg.ok()) return Invalid(absl::StrCat(at, seg.status().message()));
    std::string padded(seg->begin(), seg->end());
    if (!names.insert(padded).second) return Invalid(absl::StrCat(at, "name used twice (or reserved)"));
    if (d.hid.empty()) return Invalid(absl::StrCat(at, "no _HID"));
    for (auto [port, length] : d.io) {
      if (length == 0 || length > 255 || uint32_t{port} + length > 0x10000) {
        return Invalid(absl::StrCat(at, "bad I/O range ", absl::Hex(port), "+", length));
      }
    }
    for (uint8_t irq : d.irqs) {
      if (irq >= 16) return Invalid(absl::StrCat(at, "IRQ ", irq, " is not an ISA IRQ"));
      if (irq == p.sci_irq) return Invalid(absl::StrCat(at, "IRQ ", irq, " is the SCI's"));
    }
  }
  return absl::OkStatus();
}

// --- Tables ---

Bytes BuildFacs() {
  // FACS (5.2.10): no header checksum; OSPM owns the global lock and waking vector.
  Bytes b;
  PutChars(b, "FACS", 4);
  Put32(b, kFacsSize);
  Put32(b, 0);  // Hardware Signature
  Put32(b, 0);  // Firmware Waking Vector
  Put32(b, 0);  // Global Lock
  Put32(b, 0);  // Flags: no S4BIOS, no 64-bit wake
  Put64(b, 0);  // X Firmware Waking Vector
  Put8(b, kFacsVersion);
  Put(b, 0, 3);  // Reserved
  Put32(b, 0);   // OSPM Flags
  Put(b, 0, 24);  // Reserved
  return b;
}

Bytes BuildFadt(const Platform& p, uint64_t facs, uint64_t dsdt) {
  uint16_t boot_arch = kBootVgaNotPresent;
  if (!p.isa_devices.empty()) boot_arch |= kBootLegacyDevices;
  if (HasHid(p, "PNP0303") || HasHid(p, "PNP0F13")) boot_arch |= kBoot8042;
  if (!HasHid(p, "PNP0B00")) boot_arch |= kBootCmosRtcNotPresent;
  uint32_t flags = kFadtWbinvd | kFadtProcC1 | kFadtSlpButton | kFadtResetRegSup;
  if (p.pm_tmr_32bit) flags |= kFadtTmrValExt;
  uint8_t tmr_len = p.pm_tmr_port != 0 ? 4 : 0;

  Bytes b = Header("FACP", kFadtRevision);
  // FIRMWARE_CTRL and X_FIRMWARE_CTRL: exactly one is nonzero (5.2.9).
  Put32(b, facs < kFourGiB ? static_cast<uint32_t>(facs) : 0);  // 36 FIRMWARE_CTRL
  Put32(b, dsdt < kFourGiB ? static_cast<uint32_t>(dsdt) : 0);  // 40 DSDT
  Put8(b, 0);             // 44 reserved (ACPI 1.0 INT_MODEL)
  Put8(b, 0);             // 45 Preferred_PM_Profile: unspecified
  Put16(b, p.sci_irq);    // 46 SCI_INT
  Put32(b, 0);            // 48 SMI_CMD: none, the platform is always in ACPI mode
  Put8(b, 0);             // 52 ACPI_ENABLE
  Put8(b, 0);             // 53 ACPI_DISABLE
  Put8(b, 0);             // 54 S4BIOS_REQ
  Put8(b, 0);             // 55 PSTATE_CNT
  Put32(b, p.pm1a_evt_port);  // 56 PM1a_EVT_BLK
  Put32(b, 0);                // 60 PM1b_EVT_BLK
  Put32(b, p.pm1a_cnt_port);  // 64 PM1a_CNT_BLK
  Put32(b, 0);                // 68 PM1b_CNT_BLK
  Put32(b, 0);                // 72 PM2_CNT_BLK
  Put32(b, p.pm_tmr_port);    // 76 PM_TMR_BLK
  Put32(b, 0);                // 80 GPE0_BLK
  Put32(b, 0);                // 84 GPE1_BLK
  Put8(b, 4);                 // 88 PM1_EVT_LEN
  Put8(b, 2);                 // 89 PM1_CNT_LEN
  Put8(b, 0);                 // 90 PM2_CNT_LEN
  Put8(b, tmr_len);           // 91 PM_TMR_LEN
  Put8(b, 0);                 // 92 GPE0_BLK_LEN
  Put8(b, 0);                 // 93 GPE1_BLK_LEN
  Put8(b, 0);                 // 94 GPE1_BASE
  Put8(b, 0);                 // 95 CST_CNT
  Put16(b, 101);              // 96 P_LVL2_LAT: > 100, no C2
  Put16(b, 1001);             // 98 P_LVL3_LAT: > 1000, no C3
  Put16(b, 0);                // 100 FLUSH_SIZE (WBINVD works)
  Put16(b, 0);                // 102 FLUSH_STRIDE
  Put8(b, 0);                 // 104 DUTY_OFFSET
  Put8(b, 0);                 // 105 DUTY_WIDTH
  Put8(b, 0);                 // 106 DAY_ALRM
  Put8(b, 0);                 // 107 MON_ALRM
  Put8(b, 0);                 // 108 CENTURY
  Put16(b, boot_arch);        // 109 IAPC_BOOT_ARCH
  Put8(b, 0);                 // 111 reserved
  Put32(b, flags);            // 112 Flags
  PutIoGas(b, p.reset_port, 1, kAccessByte);  // 116 RESET_REG
  Put8(b, p.reset_value);     // 128 RESET_VALUE
  Put16(b, 0);                // 129 ARM_BOOT_ARCH
  Put8(b, kFadtMinorRevision);  // 131 FADT Minor Version
  Put64(b, facs < kFourGiB ? 0 : facs);  // 132 X_FIRMWARE_CTRL
  Put64(b, dsdt);             // 140 X_DSDT
  PutIoGas(b, p.pm1a_evt_port, 4, kAccessWord);  // 148 X_PM1a_EVT_BLK (two 16-bit registers)
  PutZeroGas(b);                                 // 160 X_PM1b_EVT_BLK
  PutIoGas(b, p.pm1a_cnt_port, 2, kAccessWord);  // 172 X_PM1a_CNT_BLK
  PutZeroGas(b);                                 // 184 X_PM1b_CNT_BLK
  PutZeroGas(b);                                 // 196 X_PM2_CNT_BLK
  PutIoGas(b, p.pm_tmr_port, tmr_len, kAccessDWord);  // 208 X_PM_TMR_BLK
  PutZeroGas(b);                                 // 220 X_GPE0_BLK
  PutZeroGas(b);                                 // 232 X_GPE1_BLK
  PutZeroGas(b);                                 // 244 SLEEP_CONTROL_REG (HW-reduced only)
  PutZeroGas(b);                                 // 256 SLEEP_STATUS_REG
  PutChars(b, "HVVMM\0\0\0", 8);                 // 268 Hypervisor Vendor Identity
  return Finish(std::move(b));
}

Bytes BuildMadt(const Platform& p) {
  Bytes b = Header("APIC", kMadtRevision);
  Put32(b, p.lapic_address < kFourGiB ? static_cast<uint32_t>(p.lapic_address) : 0);
  Put32(b, kMadtPcatCompat);
  if (p.lapic_address >= kFourGiB) {
    Put8(b, kMadtLocalApicAddrOverride);
    Put8(b, 12);
    Put16(b, 0);
    Put64(b, p.lapic_address);
  }
  // Processors, the boot processor (APIC id 0) first.
  bool any_x2apic = false;
  for (uint32_t id = 0; id < p.cpus; ++id) {
    if (id <= kMaxXApicId) {
      Put8(b, kMadtLocalApic);
      Put8(b, 8);
      Put8(b, static_cast<uint8_t>(id));  // ACPI Processor UID
      Put8(b, static_cast<uint8_t>(id));  // APIC ID
      Put32(b, kMadtEnabled);
    } else {
      any_x2apic = true;
      Put8(b, kMadtLocalX2Apic);
      Put8(b, 16);
      Put16(b, 0);
      Put32(b, id);  // X2APIC ID
      Put32(b, kMadtEnabled);
      Put32(b, id);  // ACPI Processor UID
    }
  }
  Put8(b, kMadtIoApic);
  Put8(b, 12);
  Put8(b, IoApicId(p));
  Put8(b, 0);
  Put32(b, static_cast<uint32_t>(p.ioapic_address));
  Put32(b, 0);  // Global System Interrupt Base
  auto iso = [&](uint8_t irq, uint32_t gsi, uint16_t flags) {
    Put8(b, kMadtIntSrcOverride);
    Put8(b, 10);
    Put8(b, 0);  // Bus: ISA
    Put8(b, irq);
    Put32(b, gsi);
    Put16(b, flags);
  };
  if (p.timer_on_gsi2) iso(0, 2, kIntiConforms);  // ISA: edge, active high
  iso(p.sci_irq, p.sci_irq, kIntiLevelHigh);
  // NMI on LINT1 of every processor.
  Put8(b, kMadtLocalApicNmi);
  Put8(b, 6);
  Put8(b, 0xff);  // all processors
  Put16(b, kIntiEdgeHigh);
  Put8(b, 1);  // LINT1
  if (any_x2apic) {
    Put8(b, kMadtLocalX2ApicNmi);
    Put8(b, 12);
    Put16(b, kIntiEdgeHigh);
    Put32(b, 0xffffffff);  // all processors
    Put8(b, 1);            // LINT1
    Put(b, 0, 3);
  }
  return Finish(std::move(b));
}

Bytes BuildMcfg(const Platform& p) {
  Bytes b = Header("MCFG", kMcfgRevision);
  Put64(b, 0);  // reserved
  Put64(b, p.ecam_base);
  Put16(b, 0);  // PCI Segment Group
  Put8(b, 0);   // Start Bus
  Put8(b, static_cast<uint8_t>(p.ecam_buses - 1));  // End Bus
  Put32(b, 0);
  return Finish(std::move(b));
}

Bytes BuildXsdt(const std::vector<uint64_t>& tables) {
  Bytes b = Header("XSDT", kXsdtRevision);
  for (uint64_t t : tables) Put64(b, t);
  return Finish(std::move(b));
}

Bytes BuildRsdp(uint64_t xsdt) {
  Bytes b;
  PutChars(b, "RSD PTR ", 8);
  Put8(b, 0);  // Checksum of bytes 0-19
  PutChars(b, kOemId, 6);
  Put8(b, 2);   // Revision: ACPI 2.0+ layout
  Put32(b, 0);  // RsdtAddress: none, the XSDT is used
  Put32(b, kRsdpSize);
  Put64(b, xsdt);
  Put8(b, 0);  // Extended Checksum of all 36 bytes
  Put(b, 0, 3);
  b[8] = Checksum(b.data(), 20);
  b[32] = Checksum(b.data(), kRsdpSize);
  return b;
}

// --- DSDT ---

Term PciRootBridge(const Platform& p) {
  using aml::Integer;
  using aml::Name;
  using RT = aml::ResourceTemplate;
  uint32_t last_bus = p.ecam_base != 0 ? p.ecam_buses - 1 : 0;
  RT crs;
  crs.WordBusNumber(true, 0, static_cast<uint16_t>(last_bus));
  crs.Io(0x0cf8, 0x0cf8, 1, 8);  // configuration mechanism #1, consumed by the bridge
  crs.WordIo(true, 0x0000, 0x0cf7);
  crs.WordIo(true, 0x0d00, 0x0fff);
  if (p.pci_io_size != 0) {
    crs.WordIo(true, p.pci_io_base, static_cast<uint16_t>(p.pci_io_base + p.pci_io_size - 1));
  }
  // Non-prefetchable windows: Linux places prefetchable BARs in them too, but would
  // keep non-prefetchable BARs out of a prefetchable one.
  if (p.pci_mmio32_size != 0) {
    crs.DWordMemory(true, RT::Cacheability::kNonCacheable, true,
                    static_cast<uint32_t>(p.pci_mmio32_base),
                    static_cast<uint32_t>(p.pci_mmio32_base + p.pci_mmio32_size - 1));
  }
  if (p.pci_mmio64_size != 0) {
    crs.QWordMemory(true, RT::Cacheability::kNonCacheable, true, p.pci_mmio64_base,
                    p.pci_mmio64_base + p.pci_mmio64_size - 1);
  }

  // _PRT (6.2.13): {Address 0xSSSSFFFF (any function of slot SSSS), Pin, Source 0
  // (a GSI, level-triggered, active low), Source Index = the GSI}.
  std::vector<Term> prt;
  for (uint32_t slot = 0; slot < 32; ++slot) {
    for (uint32_t pin = 0; pin < 4; ++pin) {
      prt.push_back(aml::Package({Integer((uint64_t{slot} << 16) | 0xffff), Integer(pin),
                                  Integer(0), Integer(PciIntxGsi(slot, pin))}));
    }
  }

  // No _ADR: a device has _HID or _ADR, not both (6.1), and a root bridge is
  // found by its _HID.
  return aml::Device("PCI0", {
      Name("_HID", aml::EisaId("PNP0A08")),  // PCI Express root bridge
      Name("_CID", aml::EisaId("PNP0A03")),  // PCI root bridge
      Name("_UID", Integer(0)),
      Name("_SEG", Integer(0)),
      Name("_BBN", Integer(0)),
      Name("_CRS", crs.Build()),
      Name("_PRT", aml::Package(prt)),
  });
}

Term EcamReservation(const Platform& p) {
  using RT = aml::ResourceTemplate;
  uint64_t size = p.ecam_buses * kEcamBusSize;
  RT crs;
  if (p.ecam_base + size <= kFourGiB) {
    crs.Memory32Fixed(true, static_cast<uint32_t>(p.ecam_base), static_cast<uint32_t>(size));
  } else {
    crs.QWordMemory(false, RT::Cacheability::kNonCacheable, true, p.ecam_base,
                    p.ecam_base + size - 1);
  }
  return aml::Device("ECAM", {
      aml::Name("_HID", aml::EisaId("PNP0C02")),  // motherboard resources
      aml::Name("_UID", aml::String("ECAM")),
      aml::Name("_CRS", crs.Build()),
  });
}

Term IsaDeviceNode(const IsaDevice& d) {
  aml::ResourceTemplate crs;
  for (auto [port, length] : d.io) {
    crs.Io(port, port, 1, static_cast<uint8_t>(length));
  }
  if (!d.irqs.empty()) crs.IrqNoFlags(d.irqs);
  Term hid = aml::IsEisaId(d.hid) ? aml::EisaId(d.hid) : aml::String(d.hid);
  return aml::Device(d.name, {
      aml::Name("_HID", hid),
      aml::Name("_UID", aml::Integer(d.uid)),
      aml::Method("_STA", 0, false, {aml::Return(aml::Integer(0x0f))}),  // present, enabled, shown, working
      aml::Name("_CRS", crs.Build()),
  });
}

absl::StatusOr<Bytes> BuildDsdt(const Platform& p) {
  std::vector<Term> sb = {PciRootBridge(p)};
  if (p.ecam_base != 0) sb.push_back(EcamReservation(p));
  for (const IsaDevice& d : p.isa_devices) sb.push_back(IsaDeviceNode(d));
  // The DSDT's body runs in the root scope, so "_S5_" is \_S5_ and "_SB" is \_SB
  // (iasl writes them so too, without the root prefix).
  Term body = aml::Concat({
      // \_S0_ and \_S5_: {SLP_TYPa, SLP_TYPb, reserved, reserved}. S0 (working)
      // is SLP_TYP 0; ACPICA looks it up when it leaves a sleep state.
      aml::Name("_S0_", aml::Package({aml::Integer(0), aml::Integer(0), aml::Integer(0),
                                      aml::Integer(0)})),
      aml::Name("_S5_", aml::Package({aml::Integer(p.s5_slp_typ), aml::Integer(p.s5_slp_typ),
                                      aml::Integer(0), aml::Integer(0)})),
      aml::Scope("_SB", sb),
  });
  if (!body.ok()) return Invalid(body.status().message());
  Bytes b = Header("DSDT", kDsdtRevision);
  b.insert(b.end(), body->begin(), body->end());
  return Finish(std::move(b));
}

}  // namespace

absl::StatusOr<Tables> BuildTables(const Platform& platform, uint64_t base) {
  if (auto s = Validate(platform, base); !s.ok()) return s;
  absl::StatusOr<Bytes> dsdt = BuildDsdt(platform);
  if (!dsdt.ok()) return dsdt.status();
  Bytes facs = BuildFacs();
  Bytes madt = BuildMadt(platform);
  Bytes mcfg = platform.ecam_base != 0 ? BuildMcfg(platform) : Bytes{};
  size_t xsdt_entries = mcfg.empty() ? 2 : 3;

  // Layout: RSDP, FACS, XSDT, FADT, MADT, [MCFG], DSDT. Offsets are chosen on the
  // absolute address so that alignment holds in the guest.
  uint64_t end = base;
  auto place = [&](size_t size, uint64_t align) {
    uint64_t at = AlignUp(end, align);
    end = at + size;
    return at;
  };
  uint64_t rsdp_at = place(kRsdpSize, 16);
  uint64_t facs_at = place(kFacsSize, 64);
  uint64_t xsdt_at = place(kHeaderSize + 8 * xsdt_entries, 16);
  uint64_t fadt_at = place(kFadtSize, 16);
  uint64_t madt_at = place(madt.size(), 16);
  uint64_t mcfg_at = mcfg.empty() ? 0 : place(mcfg.size(), 16);
  uint64_t dsdt_at = place(dsdt->size(), 16);
  if (end - base > kMaxTablesSize) {
    return Invalid(absl::StrCat(end - base, " bytes of tables exceed ", kMaxTablesSize));
  }

  Bytes fadt = BuildFadt(platform, facs_at, dsdt_at);
  std::vector<uint64_t> entries = {fadt_at, madt_at};
  if (!mcfg.empty()) entries.push_back(mcfg_at);
  Bytes xsdt = BuildXsdt(entries);
  Bytes rsdp = BuildRsdp(xsdt_at);

  Tables t;
  t.rsdp_address = rsdp_at;
  t.bytes.assign(end - base, 0);
  auto copy = [&](const Bytes& table, uint64_t at) {
    std::copy(table.begin(), table.end(), t.bytes.begin() + (at - base));
  };
  copy(rsdp, rsdp_at);
  copy(facs, facs_at);
  copy(xsdt, xsdt_at);
  copy(fadt, fadt_at);
  copy(madt, madt_at);
  if (!mcfg.empty()) copy(mcfg, mcfg_at);
  copy(*dsdt, dsdt_at);
  return t;
}

}  // namespace hv::acpi
