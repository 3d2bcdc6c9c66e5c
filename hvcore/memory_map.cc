#include "hvcore/memory_map.h"

#include "hvcore/boot_layout.h"

namespace hv {

std::vector<E820Entry> BuildMemoryMap(const std::vector<GuestRamRegion>& ram) {
  std::vector<E820Entry> map;
  for (const auto& r : ram) {
    if (r.gpa == 0 && r.size > boot::kHighMemory) {
      map.push_back({0, boot::kLowRamEnd, E820Type::kRam});
      map.push_back({boot::kLowRamEnd, boot::kHighMemory - boot::kLowRamEnd, E820Type::kReserved});
      map.push_back({boot::kHighMemory, r.size - boot::kHighMemory, E820Type::kRam});
    } else {
      map.push_back({r.gpa, r.size, E820Type::kRam});
    }
  }
  return map;
}

}  // namespace hv
