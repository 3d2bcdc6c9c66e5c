#include "broker/supervisor.h"

#include <sys/wait.h>

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace hv::broker {

size_t RestartBudget::RecentRestarts(Clock::time_point now) {
  while (!restarts_.empty() && now - restarts_.front() >= window_) restarts_.pop_front();
  return restarts_.size();
}

RestartDecision RestartBudget::OnDeath(Clock::time_point now, int wait_status) {
  RestartDecision d;
  auto window_s = std::chrono::duration_cast<std::chrono::seconds>(window_).count();
  if (mode_ == schema::RestartMode::NEVER) {
    d.reason = "its restart policy is `never`";
    return d;
  }
  bool clean_exit = WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0;
  if (mode_ == schema::RestartMode::ON_FAILURE && clean_exit) {
    d.reason = "it exited with status 0 and its restart policy is `onFailure`";
    return d;
  }
  size_t recent = RecentRestarts(now);
  if (recent >= limit_) {
    d.reason = absl::StrCat("it was restarted ", recent, " times within ", window_s,
                            " s, its limit (restart.limit ", limit_, " per ", window_s, " s)");
    return d;
  }
  d.restart = true;
  // Back-off doubles with each restart in the window, up to 10 s.
  uint64_t ms = backoff_ms_;
  for (size_t i = 0; i < recent && ms < 10000; ++i) ms *= 2;
  d.delay = std::chrono::milliseconds(std::min<uint64_t>(ms, 10000));
  restarts_.push_back(now);
  d.reason = absl::StrCat("restart ", recent + 1, " of ", limit_, " within ", window_s, " s");
  return d;
}

}  // namespace hv::broker
