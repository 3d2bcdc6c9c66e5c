#include "common/guest_memory.h"

#include <sys/mman.h>

#include <cstring>

#include "absl/strings/str_format.h"
#include "common/fd.h"

namespace hv {

absl::StatusOr<std::unique_ptr<GuestMemory>> GuestMemory::Map(
    int memfd, uint64_t memfd_size, std::vector<GuestRamRegion> regions) {
  for (const auto& r : regions) {
    if (r.size == 0 || r.offset > memfd_size || r.size > memfd_size - r.offset ||
        r.gpa + r.size < r.gpa) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "RAM region gpa %#x size %#x offset %#x does not fit a memfd of %#x bytes", r.gpa,
          r.size, r.offset, memfd_size));
    }
  }
  void* base = mmap(nullptr, memfd_size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
  if (base == MAP_FAILED) return ErrnoStatus("mmap guest RAM");
  // Guest RAM never belongs in a core dump of a device process.
  madvise(base, memfd_size, MADV_DONTDUMP);
  return std::unique_ptr<GuestMemory>(
      new GuestMemory(static_cast<uint8_t*>(base), memfd_size, std::move(regions)));
}

GuestMemory::~GuestMemory() { munmap(base_, size_); }

absl::StatusOr<uint8_t*> GuestMemory::Translate(uint64_t gpa, uint64_t len) const {
  for (const auto& r : regions_) {
    if (gpa >= r.gpa && gpa - r.gpa < r.size && len <= r.size - (gpa - r.gpa)) {
      return base_ + r.offset + (gpa - r.gpa);
    }
  }
  return absl::OutOfRangeError(
      absl::StrFormat("guest range [%#x, +%#x) is not inside guest RAM", gpa, len));
}

absl::Status GuestMemory::Read(uint64_t gpa, void* dst, uint64_t len) const {
  auto p = Translate(gpa, len);
  if (!p.ok()) return p.status();
  memcpy(dst, *p, len);
  return absl::OkStatus();
}

absl::Status GuestMemory::Write(uint64_t gpa, const void* src, uint64_t len) const {
  auto p = Translate(gpa, len);
  if (!p.ok()) return p.status();
  memcpy(*p, src, len);
  return absl::OkStatus();
}

}  // namespace hv
