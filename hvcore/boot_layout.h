// Where the loaders put things in low guest memory. One table so that the PVH and
// Linux loaders and the ACPI builder cannot overlap each other.
#ifndef HV_HVCORE_BOOT_LAYOUT_H_
#define HV_HVCORE_BOOT_LAYOUT_H_

#include <cstdint>

namespace hv::boot {

inline constexpr uint64_t kStartInfo = 0x6000;     // PVH hvm_start_info
inline constexpr uint64_t kModList = 0x6400;       // PVH module list
inline constexpr uint64_t kMemMap = 0x7000;        // PVH memory map (e820 entries)
inline constexpr uint64_t kMemMapMax = 128;
inline constexpr uint64_t kCmdline = 0x20000;      // kernel command line
inline constexpr uint64_t kCmdlineMax = 0x10000;   // 64 KiB, with its NUL
inline constexpr uint64_t kLowRamEnd = 0xA0000;    // conventional memory ends; VGA/BIOS above
inline constexpr uint64_t kHighMemory = 0x100000;  // 1 MiB: kernels load here
inline constexpr uint64_t kAcpiTables = 0xe0000;   // ACPI tables, up to 128 KiB (reserved in e820)

}  // namespace hv::boot

#endif  // HV_HVCORE_BOOT_LAYOUT_H_
