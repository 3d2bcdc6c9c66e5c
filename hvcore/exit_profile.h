#ifndef HV_HVCORE_EXIT_PROFILE_H_
#define HV_HVCORE_EXIT_PROFILE_H_

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace hv {

// Where a vCPU's exits go and what handling them costs in the core, for finding
// what a boot spends its time on. One per vCPU (no locking); merged at the end.
// On when HV_EXIT_PROFILE is set in hvcore's environment.
class ExitProfile {
 public:
  enum class Kind : uint8_t { kPortRead, kPortWrite, kMmioRead, kMmioWrite, kOther };
  void Record(Kind kind, uint64_t where, uint64_t ns);
  // The `top` costliest (kind, where) pairs of all profiles, one line each.
  static std::string Report(const std::vector<const ExitProfile*>& profiles, size_t top);

 private:
  struct Cost {
    uint64_t count = 0;
    uint64_t ns = 0;
  };
  std::unordered_map<uint64_t, Cost> costs_;  // key: kind << 56 | where
};

}  // namespace hv

#endif  // HV_HVCORE_EXIT_PROFILE_H_
