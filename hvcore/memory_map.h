// The guest's memory map (e820 types), as every boot protocol reports it.
#ifndef HV_HVCORE_MEMORY_MAP_H_
#define HV_HVCORE_MEMORY_MAP_H_

#include <cstdint>
#include <vector>

#include "common/guest_layout.h"

namespace hv {

enum class E820Type : uint32_t { kRam = 1, kReserved = 2, kAcpi = 3, kNvs = 4 };

struct E820Entry {
  uint64_t addr;
  uint64_t size;
  E820Type type;
};

// RAM below 640 KiB, the legacy hole up to 1 MiB (reserved), RAM up to the PCI
// hole, and RAM above 4 GiB.
std::vector<E820Entry> BuildMemoryMap(const std::vector<GuestRamRegion>& ram);

}  // namespace hv

#endif  // HV_HVCORE_MEMORY_MAP_H_
