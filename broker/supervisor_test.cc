#include "broker/supervisor.h"

#include <signal.h>

#include "gtest/gtest.h"

namespace hv::broker {
namespace {

using Clock = RestartBudget::Clock;
constexpr int kKilled = SIGKILL;        // a wait status: killed by SIGKILL
constexpr int kExitedZero = 0;          // exited with status 0
constexpr int kExitedOne = 1 << 8;      // exited with status 1

TEST(RestartBudgetTest, NeverRestarts) {
  RestartBudget b(schema::RestartMode::NEVER, 5, 60, 0);
  auto d = b.OnDeath(Clock::now(), kKilled);
  EXPECT_FALSE(d.restart);
  EXPECT_NE(d.reason.find("never"), std::string::npos);
}

TEST(RestartBudgetTest, OnFailureRestartsAfterASignalOrAnErrorButNotAfterACleanExit) {
  RestartBudget b(schema::RestartMode::ON_FAILURE, 5, 60, 0);
  auto now = Clock::now();
  EXPECT_TRUE(b.OnDeath(now, kKilled).restart);
  EXPECT_TRUE(b.OnDeath(now, kExitedOne).restart);
  EXPECT_FALSE(b.OnDeath(now, kExitedZero).restart);
  RestartBudget always(schema::RestartMode::ALWAYS, 5, 60, 0);
  EXPECT_TRUE(always.OnDeath(now, kExitedZero).restart);
}

TEST(RestartBudgetTest, TheLimitCountsWithinTheWindowOnly) {
  RestartBudget b(schema::RestartMode::ON_FAILURE, 3, 10, 0);
  auto t = Clock::now();
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(b.OnDeath(t + std::chrono::seconds(i), kKilled).restart);
  auto d = b.OnDeath(t + std::chrono::seconds(3), kKilled);
  EXPECT_FALSE(d.restart);
  EXPECT_NE(d.reason.find("restarted 3 times within 10 s"), std::string::npos) << d.reason;
  // Once the first restart has left the window, there is room again.
  EXPECT_TRUE(b.OnDeath(t + std::chrono::seconds(10), kKilled).restart);
}

TEST(RestartBudgetTest, BackOffDoublesPerRestartInTheWindowUpToTenSeconds) {
  RestartBudget b(schema::RestartMode::ON_FAILURE, 100, 600, 100);
  auto t = Clock::now();
  EXPECT_EQ(b.OnDeath(t, kKilled).delay, std::chrono::milliseconds(100));
  EXPECT_EQ(b.OnDeath(t, kKilled).delay, std::chrono::milliseconds(200));
  EXPECT_EQ(b.OnDeath(t, kKilled).delay, std::chrono::milliseconds(400));
  for (int i = 0; i < 10; ++i) b.OnDeath(t, kKilled);
  EXPECT_EQ(b.OnDeath(t, kKilled).delay, std::chrono::milliseconds(10000));
  RestartBudget none(schema::RestartMode::ON_FAILURE, 5, 60, 0);
  EXPECT_EQ(none.OnDeath(t, kKilled).delay, std::chrono::milliseconds(0));
}

}  // namespace
}  // namespace hv::broker
