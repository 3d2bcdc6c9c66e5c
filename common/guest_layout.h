// Where guest RAM sits in the guest-physical address space. The broker computes
// it once and hands the same regions to the core (memslots, e820) and to every
// device (DMA bounds checks).
#ifndef HV_COMMON_GUEST_LAYOUT_H_
#define HV_COMMON_GUEST_LAYOUT_H_

#include <cstdint>
#include <vector>

namespace hv {

inline constexpr uint64_t kMiB = 1ull << 20;
inline constexpr uint64_t kGiB = 1ull << 30;

// RAM below 4 GiB stops here; [kPciHoleStart, 4 GiB) holds PCI BARs, the IOAPIC,
// the local APIC and the ECAM window.
inline constexpr uint64_t kPciHoleStart = 3 * kGiB;
inline constexpr uint64_t kHighRamStart = 4 * kGiB;

struct GuestRamRegion {
  uint64_t gpa;
  uint64_t size;
  uint64_t offset;  // in the RAM memfd
};

// RAM of `bytes` bytes: [0, min(bytes, 3 GiB)) and the rest from 4 GiB up.
inline std::vector<GuestRamRegion> GuestRamRegions(uint64_t bytes) {
  std::vector<GuestRamRegion> regions;
  uint64_t low = bytes < kPciHoleStart ? bytes : kPciHoleStart;
  regions.push_back({0, low, 0});
  if (bytes > low) regions.push_back({kHighRamStart, bytes - low, low});
  return regions;
}

}  // namespace hv

#endif  // HV_COMMON_GUEST_LAYOUT_H_
