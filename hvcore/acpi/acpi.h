// The ACPI tables hvcore gives a guest (ACPI 6.3): RSDP, XSDT, FADT, FACS, MADT,
// DSDT and, with ECAM, MCFG, built from a description of the platform into one
// blob that the core copies to guest memory.
//
// The DSDT describes:
//   \_S0_            Package {0, 0, 0, 0}: the working state's SLP_TYP.
//   \_S5_            Package {s5_slp_typ, s5_slp_typ, 0, 0}: soft-off through PM1a_CNT.
//   \_SB.PCI0        the PCI root bridge (PNP0A08, _CID PNP0A03), _UID/_SEG/_BBN 0,
//                    bus 0 (0..ecam_buses-1 with ECAM), its windows in _CRS and the
//                    INTx routing of every slot and pin in _PRT (PciIntxGsi). No _ADR:
//                    ACPI 6.3 section 6.1 wants _HID or _ADR, not both (iasl warning 3073).
//   \_SB.ECAM        only with ECAM: a PNP0C02 motherboard resource reserving the
//                    ECAM window (Linux checks for one, or an E820 reservation,
//                    before it uses the MCFG).
//   \_SB.<name>      one device per IsaDevice (COM1, RTC_, KBD_, ...).
//
// The ISA devices sit directly under \_SB, not under \_SB.PCI0.ISA: hv has no
// PCI-to-ISA bridge function at a fixed address (the lpc device's slot is the
// user's choice, as in bhyve's -s 31,lpc, and legacy ports reach their device
// process through the core's port dispatch, not through a bridge), so an ISA node with _ADR 0x001F0000 would name a PCI function that
// may not exist or may be some other device, and Linux would attach the node to
// it. Linux's drivers for these devices (8250_pnp, i8042, rtc_cmos through
// PNP-ACPI; pvpanic through the ACPI platform bus) match on _HID wherever the
// node is, so \_SB binds them all without a phantom bridge.
#ifndef HV_HVCORE_ACPI_ACPI_H_
#define HV_HVCORE_ACPI_ACPI_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace hv::acpi {

// A device on the legacy (ISA/LPC) ports, listed in the DSDT as \_SB.<name>.
struct IsaDevice {
  std::string name;  // ACPI name, 1-4 of [A-Z_][A-Z0-9_]* (padded with '_'), e.g. "COM1"
  // _HID: "PNP0501" (16550), "PNP0B00" (RTC), "PNP0303"/"PNP0F13" (i8042 keyboard/mouse),
  // "QEMU0001" (pvpanic). A PNP id (three letters, four hex digits) is encoded as an
  // EISAID, anything else as a String.
  std::string hid;
  uint32_t uid = 0;
  std::vector<std::pair<uint16_t, uint16_t>> io;  // (base port, length 1..255)
  std::vector<uint8_t> irqs;                       // ISA IRQs 0..15 (edge, active high)
};

struct Platform {
  // MADT: one Processor Local APIC per vCPU (Local x2APIC for APIC ids above 254),
  // APIC ids and ACPI processor UIDs 0..cpus-1, all enabled.
  uint32_t cpus = 1;
  uint64_t lapic_address = 0xfee00000;
  uint64_t ioapic_address = 0xfec00000;  // below 4 GiB (the MADT field is 32 bits)
  // The I/O APIC's id in the MADT. Unset: `cpus` (the first id no Local APIC uses),
  // or 0 when cpus > 254 and every 8-bit id is taken (x86-64 Linux uses the id only
  // as a name). An explicit id equal to a Local APIC id is refused while cpus < 255.
  std::optional<uint8_t> ioapic_id;
  uint32_t ioapic_pins = 24;  // GSIs 0..pins-1; at least 24 (PCI INTx uses 16..23)
  // MADT Interrupt Source Override IRQ0 -> GSI2 (the core routes the PIT there).
  bool timer_on_gsi2 = true;
  uint8_t sci_irq = 9;  // FADT SCI_INT; MADT override IRQ sci_irq -> GSI sci_irq, level, active high

  // Fixed hardware, System I/O ports (FADT legacy fields and X_ GAS fields).
  uint16_t pm1a_evt_port = 0x400;  // 4 bytes: PM1_STS, PM1_EN
  uint16_t pm1a_cnt_port = 0x404;  // 2 bytes: PM1_CNT (SCI_EN kept set by the PM device)
  uint16_t pm_tmr_port = 0x408;    // 4 bytes: PM_TMR; 0 = no PM timer
  bool pm_tmr_32bit = false;       // FADT TMR_VAL_EXT: false = 24-bit counter
  uint16_t reset_port = 0xcf9;     // FADT RESET_REG (1 byte, System I/O), RESET_REG_SUP set
  uint8_t reset_value = 0x06;
  uint8_t s5_slp_typ = 5;  // \_S5_: the SLP_TYP for soft-off

  // PCI root bridge \_SB.PCI0: segment 0, bus 0 (0..ecam_buses-1 when ECAM covers them).
  uint64_t pci_mmio32_base = 0xc0000000, pci_mmio32_size = 0x3ec00000;  // below 4 GiB; size 0 = none
  uint64_t pci_mmio64_base = 0, pci_mmio64_size = 0;                     // size 0 = none
  // I/O window for BARs, within 0x1000..0xffff; size 0 = none. _CRS also gives
  // the bridge 0x0000-0x0cf7 and 0x0d00-0x0fff (legacy ports) and consumes
  // 0xcf8-0xcff (configuration mechanism #1).
  uint16_t pci_io_base = 0x1000, pci_io_size = 0xf000;
  // Nonzero: MCFG for segment 0, buses 0..ecam_buses-1 (1 MiB each, base 1 MiB-aligned).
  uint64_t ecam_base = 0;
  uint32_t ecam_buses = 1;  // 1..256

  std::vector<IsaDevice> isa_devices;
};

// PCI INTx routing: device `slot` (0..31) pin `pin` (0 = INTA .. 3 = INTD) is
// wired to this IOAPIC GSI, level-triggered, active low. The core uses the same
// function for its routes; the DSDT's _PRT lists it for every slot and pin.
inline uint32_t PciIntxGsi(uint32_t slot, uint32_t pin) { return 16 + ((slot + pin) % 8); }

inline constexpr uint64_t kMaxTablesSize = 128 * 1024;  // what the core reserves at 0xE0000

struct Tables {
  std::vector<uint8_t> bytes;  // to be copied to guest-physical `base`
  uint64_t rsdp_address;       // == base
};

// All tables in one blob for guest-physical `base` (16-byte aligned; the core
// uses 0xE0000 so that a guest scanning 0xE0000-0xFFFFF finds the RSDP):
//   RSDP  revision 2 (ACPI 2.0+ layout), RsdtAddress 0, XsdtAddress set.
//   FACS  64-byte aligned, version 2.
//   XSDT  -> FADT, MADT, MCFG (if ecam_base != 0).
//   FADT  revision 6, minor 3 (ACPI 6.3): FIRMWARE_CTRL (X_FIRMWARE_CTRL instead
//         if the FACS is above 4 GiB), DSDT and X_DSDT, SCI_INT, SMI_CMD 0 (ACPI
//         is always on), PM1a_EVT/PM1a_CNT/PM_TMR as ports and X_ GAS (System I/O),
//         RESET_REG; flags WBINVD, PROC_C1, SLP_BUTTON (no sleep button),
//         RESET_REG_SUP, TMR_VAL_EXT if pm_tmr_32bit; IAPC_BOOT_ARCH: VGA Not
//         Present, LEGACY_DEVICES if any ISA device is listed, 8042 if PNP0303 or
//         PNP0F13 is listed, CMOS RTC Not Present unless PNP0B00 is listed.
//   MADT  revision 5, PCAT_COMPAT; Local APIC / x2APIC entries, one I/O APIC (GSI
//         base 0), the overrides above, Local (x2)APIC NMI on LINT1 for all CPUs.
//   MCFG  revision 1, one entry.
//   DSDT  revision 2 (64-bit integers); see the top of this file.
// Every table has a correct checksum, OEM id "HVVMM ", OEM table id "HVTABLES".
// Refuses a platform it cannot describe (overlapping windows, bad names, more than
// kMaxTablesSize bytes, ...) with InvalidArgument.
absl::StatusOr<Tables> BuildTables(const Platform& platform, uint64_t base);

}  // namespace hv::acpi

#endif  // HV_HVCORE_ACPI_ACPI_H_
