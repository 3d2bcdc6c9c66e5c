#include "hvcore/exit_profile.h"

#include <algorithm>

#include "absl/strings/str_format.h"

namespace hv {
namespace {
constexpr uint64_t kWhereMask = (uint64_t{1} << 56) - 1;
const char* KindName(uint64_t kind) {
  switch (static_cast<ExitProfile::Kind>(kind)) {
    case ExitProfile::Kind::kPortRead: return "port read";
    case ExitProfile::Kind::kPortWrite: return "port write";
    case ExitProfile::Kind::kMmioRead: return "MMIO read";
    case ExitProfile::Kind::kMmioWrite: return "MMIO write";
    case ExitProfile::Kind::kOther: return "exit reason";
  }
  return "?";
}
}  // namespace

void ExitProfile::Record(Kind kind, uint64_t where, uint64_t ns) {
  Cost& c = costs_[(uint64_t{static_cast<uint8_t>(kind)} << 56) | (where & kWhereMask)];
  ++c.count;
  c.ns += ns;
}

std::string ExitProfile::Report(const std::vector<const ExitProfile*>& profiles, size_t top) {
  std::unordered_map<uint64_t, Cost> all;
  Cost total;
  for (const ExitProfile* p : profiles) {
    for (const auto& [key, c] : p->costs_) {
      all[key].count += c.count;
      all[key].ns += c.ns;
      total.count += c.count;
      total.ns += c.ns;
    }
  }
  std::vector<std::pair<uint64_t, Cost>> rows(all.begin(), all.end());
  std::sort(rows.begin(), rows.end(),
            [](const auto& a, const auto& b) { return a.second.ns > b.second.ns; });
  std::string out = absl::StrFormat("exit profile: %u exits, %.1f ms handling in the core\n",
                                    total.count, total.ns / 1e6);
  for (size_t i = 0; i < rows.size() && i < top; ++i) {
    const auto& [key, c] = rows[i];
    out += absl::StrFormat("  %-11s %#8x  %9u exits  %9.1f ms  %7.1f us each\n",
                           KindName(key >> 56), key & kWhereMask, c.count, c.ns / 1e6,
                           c.ns / 1e3 / c.count);
  }
  return out;
}

}  // namespace hv
