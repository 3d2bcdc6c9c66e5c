// Clock readings in nanoseconds (vDSO, no system call on the usual clocks).
#ifndef HV_COMMON_CLOCK_H_
#define HV_COMMON_CLOCK_H_

#include <time.h>

#include <cstdint>

namespace hv {

inline int64_t ClockNs(clockid_t clock) {
  timespec ts;
  clock_gettime(clock, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

inline int64_t MonotonicNs() { return ClockNs(CLOCK_MONOTONIC); }

}  // namespace hv

#endif  // HV_COMMON_CLOCK_H_
