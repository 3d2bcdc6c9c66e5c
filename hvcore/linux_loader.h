// Loads a Linux bzImage by the x86 boot protocol (Documentation/x86/boot.rst),
// entering the kernel at its 64-bit entry point.
#ifndef HV_HVCORE_LINUX_LOADER_H_
#define HV_HVCORE_LINUX_LOADER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/guest_memory.h"
#include "hvcore/memory_map.h"

namespace hv {

struct LinuxBoot {
  uint64_t entry;        // 64-bit entry (startup_64)
  uint64_t boot_params;  // the zero page, for %rsi
  uint64_t page_tables;  // CR3: identity map of the first 4 GiB
  uint64_t gdt;          // GDT with __BOOT_CS (0x10) and __BOOT_DS (0x18)
  uint16_t gdt_limit;
};

// True if `header` (the first 1 KiB of a file at least) carries the "HdrS" magic.
bool LooksLikeBzImage(const uint8_t* header, size_t len);

absl::StatusOr<LinuxBoot> LoadLinux(const GuestMemory& mem, int kernel_fd, int initrd_fd,
                                    const std::string& cmdline, const std::vector<E820Entry>& map,
                                    uint64_t rsdp);

}  // namespace hv

#endif  // HV_HVCORE_LINUX_LOADER_H_
