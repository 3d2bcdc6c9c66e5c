// Loads a PVH ELF kernel (the Xen PVH boot ABI: an ELF note XEN_ELFNOTE_PHYS32_ENTRY
// gives a 32-bit protected-mode entry; %ebx points at an hvm_start_info).
#ifndef HV_HVCORE_PVH_LOADER_H_
#define HV_HVCORE_PVH_LOADER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/guest_memory.h"
#include "hvcore/memory_map.h"

namespace hv {

inline constexpr uint32_t kPvhStartInfoMagic = 0x336ec578;

struct PvhBoot {
  uint32_t entry;       // 32-bit entry point
  uint64_t start_info;  // guest-physical address for %ebx
};

// True if `header` (at least 64 bytes of the file) is an ELF image.
bool LooksLikeElf(const uint8_t* header, size_t len);

// Loads the ELF in `kernel_fd`, the optional initrd (as PVH module 0), the command
// line and the memory map into guest memory.
absl::StatusOr<PvhBoot> LoadPvh(const GuestMemory& mem, int kernel_fd, int initrd_fd,
                                const std::string& cmdline, const std::vector<E820Entry>& map,
                                uint64_t rsdp = 0);

}  // namespace hv

#endif  // HV_HVCORE_PVH_LOADER_H_
