// Supervision: whether a device process that died is followed by a successor
// (RestartPolicy in schema/vm.capnp), and after how long. Pure logic; the
// broker (vm_runner.cc) spawns.
#ifndef HV_BROKER_SUPERVISOR_H_
#define HV_BROKER_SUPERVISOR_H_

#include <chrono>
#include <cstdint>
#include <deque>
#include <string>

#include "schema/vm.capnp.h"

namespace hv::broker {

struct RestartDecision {
  bool restart = false;
  std::chrono::milliseconds delay{0};  // back-off before the successor starts
  std::string reason;                  // for people: why (not)
};

class RestartBudget {
 public:
  using Clock = std::chrono::steady_clock;

  RestartBudget(schema::RestartMode mode, uint32_t limit, uint32_t window_s, uint32_t backoff_ms)
      : mode_(mode), limit_(limit), window_(std::chrono::seconds(window_s)), backoff_ms_(backoff_ms) {}

  // The process died with `wait_status` (waitpid's) at `now`. A restart counts
  // against the limit of its window.
  RestartDecision OnDeath(Clock::time_point now, int wait_status);
  // Restarts within the window that ends at `now`.
  size_t RecentRestarts(Clock::time_point now);

 private:
  schema::RestartMode mode_;
  uint32_t limit_;
  Clock::duration window_;
  uint32_t backoff_ms_;
  std::deque<Clock::time_point> restarts_;
};

}  // namespace hv::broker

#endif  // HV_BROKER_SUPERVISOR_H_
