// Guest RAM as seen by a host process: the RAM memfd mapped MAP_SHARED, and
// bounds-checked guest-physical access. hvcore maps it for KVM; each device
// process maps it for DMA. Every guest address a device is handed (a descriptor,
// a PRD table) goes through Translate, which refuses anything not wholly inside
// one RAM region.
#ifndef HV_COMMON_GUEST_MEMORY_H_
#define HV_COMMON_GUEST_MEMORY_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/guest_layout.h"

namespace hv {

class GuestMemory {
 public:
  // Maps `memfd` (of `memfd_size` bytes) and checks the regions against it.
  static absl::StatusOr<std::unique_ptr<GuestMemory>> Map(int memfd, uint64_t memfd_size,
                                                          std::vector<GuestRamRegion> regions);
  ~GuestMemory();
  GuestMemory(const GuestMemory&) = delete;
  GuestMemory& operator=(const GuestMemory&) = delete;

  // Host pointer for [gpa, gpa + len), or an error if any byte is outside RAM.
  absl::StatusOr<uint8_t*> Translate(uint64_t gpa, uint64_t len) const;
  absl::Status Read(uint64_t gpa, void* dst, uint64_t len) const;
  absl::Status Write(uint64_t gpa, const void* src, uint64_t len) const;

  const std::vector<GuestRamRegion>& regions() const { return regions_; }
  uint8_t* host_base() const { return base_; }
  uint64_t mapped_size() const { return size_; }

 private:
  GuestMemory(uint8_t* base, uint64_t size, std::vector<GuestRamRegion> regions)
      : base_(base), size_(size), regions_(std::move(regions)) {}
  uint8_t* base_;
  uint64_t size_;
  std::vector<GuestRamRegion> regions_;
};

}  // namespace hv

#endif  // HV_COMMON_GUEST_MEMORY_H_
