#include "hvcore/io_dispatch.h"

#include <algorithm>

#include "absl/strings/str_format.h"

namespace hv {
namespace {
bool Before(const IoRangeOwner& a, const IoRangeOwner& b) {
  if (a.space != b.space) return a.space < b.space;
  return a.base < b.base;
}
const char* SpaceName(msg::AddressSpace s) { return s == msg::AddressSpace::PIO ? "port" : "MMIO"; }
}  // namespace

absl::Status IoDispatch::Add(const IoRangeOwner& range, const char* device_name) {
  if (range.length == 0 || range.base + range.length < range.base ||
      (range.space == msg::AddressSpace::PIO && range.base + range.length > 0x10000)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: bad %s range %#x+%#x", device_name, SpaceName(range.space), range.base, range.length));
  }
  for (size_t i = 0; i < ranges_.size(); ++i) {
    const auto& r = ranges_[i];
    if (r.space == range.space && range.base < r.base + r.length && r.base < range.base + range.length) {
      return absl::AlreadyExistsError(absl::StrFormat(
          "%s: %s range %#x+%#x overlaps %s's %#x+%#x", device_name, SpaceName(range.space),
          range.base, range.length, names_[i], r.base, r.length));
    }
  }
  auto at = std::upper_bound(ranges_.begin(), ranges_.end(), range, Before);
  names_.insert(names_.begin() + (at - ranges_.begin()), device_name);
  ranges_.insert(at, range);
  return absl::OkStatus();
}

const IoRangeOwner* IoDispatch::Find(msg::AddressSpace space, uint64_t addr, uint32_t size) const {
  IoRangeOwner key{space, addr, 0, 0, false, -1};
  auto it = std::upper_bound(ranges_.begin(), ranges_.end(), key, Before);
  if (it == ranges_.begin()) return nullptr;
  --it;
  if (it->space != space || addr - it->base >= it->length || size > it->length - (addr - it->base)) {
    return nullptr;
  }
  return &*it;
}

}  // namespace hv
