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
  // At a 2 MiB boundary and advised huge, so that where the host lets shared
  // memory use transparent huge pages (shmem_enabled "advise" or "always") RAM
  // is mapped in 2 MiB pages here and in KVM's nested page tables: fewer TLB
  // misses, fewer nested page faults (and see tools/kvmhost: the emulated SVM
  // of the nested test host is only reliable that way).
  constexpr uint64_t kHugePage = 2 << 20;
  void* reserved = mmap(nullptr, memfd_size + kHugePage, PROT_NONE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (reserved == MAP_FAILED) return ErrnoStatus("reserve address space for guest RAM");
  uintptr_t start = reinterpret_cast<uintptr_t>(reserved);
  uintptr_t aligned = (start + kHugePage - 1) & ~(kHugePage - 1);
  if (aligned > start) munmap(reserved, aligned - start);
  munmap(reinterpret_cast<void*>(aligned + memfd_size), start + kHugePage - aligned);
  void* base = mmap(reinterpret_cast<void*>(aligned), memfd_size, PROT_READ | PROT_WRITE,
                    MAP_SHARED | MAP_FIXED, memfd, 0);
  if (base == MAP_FAILED) {
    absl::Status error = ErrnoStatus("mmap guest RAM");
    munmap(reinterpret_cast<void*>(aligned), memfd_size);
    return error;
  }
  madvise(base, memfd_size, MADV_HUGEPAGE);  // no effect where shmem THP is off
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
