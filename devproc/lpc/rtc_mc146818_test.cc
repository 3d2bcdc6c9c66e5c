#include "devproc/lpc/rtc_mc146818.h"

#include <stdlib.h>
#include <time.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace hv::lpc {
namespace {

using State = Rtc::State;

constexpr int64_t kMs = 1000000;
constexpr int64_t kSec = 1000000000;

// Seconds since the epoch of a UTC calendar time (libc's own conversion, so
// the test does not share the model's calendar code).
int64_t Epoch(int year, int month, int day, int hour, int min, int sec) {
  struct tm tm = {};
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = min;
  tm.tm_sec = sec;
  return timegm(&tm);
}

class RtcTest : public ::testing::Test {
 protected:
  uint8_t Get(uint8_t reg) {
    rtc_.Write(Rtc::kIndexPort, reg);
    return rtc_.Read(Rtc::kDataPort);
  }
  void Set(uint8_t reg, uint8_t value) {
    rtc_.Write(Rtc::kIndexPort, reg);
    rtc_.Write(Rtc::kDataPort, value);
  }
  // Both host clocks move together, as they do on a quiet host.
  void Tick(int64_t ns) {
    realtime_ += ns;
    monotonic_ += ns;
  }
  // Calls Advance whenever the reported deadline has passed, as the lpc
  // process does, while time moves forward by `ns` in `step` increments.
  void RunFor(int64_t ns, int64_t step) {
    for (int64_t done = 0; done < ns; done += step) {
      Tick(step);
      if (auto next = rtc_.NextEventNs(); next && *next <= monotonic_) rtc_.Advance();
    }
  }

  // 2024-02-29 (a Thursday) 13:45:56.250 UTC.
  int64_t realtime_ = Epoch(2024, 2, 29, 13, 45, 56) * kSec + 250 * kMs;
  int64_t monotonic_ = 5000 * kSec;
  std::vector<bool> irq_;
  int clock_reads_ = 0;
  Rtc rtc_{[this] {
             ++clock_reads_;
             return realtime_;
           },
           [this] {
             ++clock_reads_;
             return monotonic_;
           },
           [this](bool level) { irq_.push_back(level); }, /*utc=*/true};
};

TEST_F(RtcTest, InitialRegistersAreTheUsualPcSetup) {
  EXPECT_EQ(Get(Rtc::kRegA), 0x26);
  EXPECT_EQ(Get(Rtc::kRegB), 0x02);
  EXPECT_EQ(Get(Rtc::kRegC), 0x00);
  EXPECT_EQ(Get(Rtc::kRegD), 0x80) << "VRT: battery good";
  EXPECT_FALSE(rtc_.NextEventNs().has_value());
  EXPECT_TRUE(irq_.empty());
}

TEST_F(RtcTest, ReadsRealtimeInBcd24Hour) {
  EXPECT_EQ(Get(Rtc::kSeconds), 0x56);
  EXPECT_EQ(Get(Rtc::kMinutes), 0x45);
  EXPECT_EQ(Get(Rtc::kHours), 0x13);
  EXPECT_EQ(Get(Rtc::kDayOfWeek), 5) << "Thursday (Sunday = 1)";
  EXPECT_EQ(Get(Rtc::kDayOfMonth), 0x29);
  EXPECT_EQ(Get(Rtc::kMonth), 0x02);
  EXPECT_EQ(Get(Rtc::kYear), 0x24);
  EXPECT_EQ(Get(Rtc::kCentury), 0x20);
}

TEST_F(RtcTest, ReadsRealtimeInBinary) {
  Set(Rtc::kRegB, Rtc::kB24Hour | Rtc::kBBinary);
  EXPECT_EQ(Get(Rtc::kSeconds), 56);
  EXPECT_EQ(Get(Rtc::kMinutes), 45);
  EXPECT_EQ(Get(Rtc::kHours), 13);
  EXPECT_EQ(Get(Rtc::kDayOfWeek), 5);
  EXPECT_EQ(Get(Rtc::kDayOfMonth), 29);
  EXPECT_EQ(Get(Rtc::kMonth), 2);
  EXPECT_EQ(Get(Rtc::kYear), 24);
  EXPECT_EQ(Get(Rtc::kCentury), 20);
}

TEST_F(RtcTest, TwelveHourModeSetsPmBit) {
  Set(Rtc::kRegB, 0x00);  // BCD, 12-hour
  EXPECT_EQ(Get(Rtc::kHours), 0x81) << "13:45 is 1 PM";
  Set(Rtc::kRegB, Rtc::kBBinary);
  EXPECT_EQ(Get(Rtc::kHours), 0x81);

  Set(Rtc::kRegB, 0x00);
  realtime_ = Epoch(2024, 3, 1, 0, 10, 0) * kSec;
  EXPECT_EQ(Get(Rtc::kHours), 0x12) << "midnight is 12 AM";
  realtime_ = Epoch(2024, 3, 1, 12, 10, 0) * kSec;
  EXPECT_EQ(Get(Rtc::kHours), 0x92) << "noon is 12 PM";
  realtime_ = Epoch(2024, 3, 1, 23, 10, 0) * kSec;
  EXPECT_EQ(Get(Rtc::kHours), 0x91);
  realtime_ = Epoch(2024, 3, 1, 9, 10, 0) * kSec;
  EXPECT_EQ(Get(Rtc::kHours), 0x09);
}

TEST_F(RtcTest, ClockFollowsRealtime) {
  Tick(3 * kSec + 750 * kMs);  // 13:46:00.000
  EXPECT_EQ(Get(Rtc::kSeconds), 0x00);
  EXPECT_EQ(Get(Rtc::kMinutes), 0x46);
  realtime_ = Epoch(2099, 12, 31, 23, 59, 59) * kSec;
  EXPECT_EQ(Get(Rtc::kYear), 0x99);
  realtime_ += kSec;
  EXPECT_EQ(Get(Rtc::kYear), 0x00);
  EXPECT_EQ(Get(Rtc::kCentury), 0x21);
  EXPECT_EQ(Get(Rtc::kMonth), 0x01);
  EXPECT_EQ(Get(Rtc::kDayOfMonth), 0x01);
  EXPECT_EQ(Get(Rtc::kDayOfWeek), 6) << "2100-01-01 is a Friday";
}

TEST(RtcLocalTimeTest, LocalTimeUsesHostZoneOffset) {
  const char* old = getenv("TZ");
  std::string saved = old ? old : "";
  setenv("TZ", "XST-2", 1);  // two hours east of UTC, no DST
  tzset();
  int64_t rt = Epoch(2024, 2, 29, 23, 30, 0) * kSec;
  int64_t mono = 0;
  Rtc rtc([&] { return rt; }, [&] { return mono; }, nullptr, /*utc=*/false);
  auto get = [&](uint8_t reg) {
    rtc.Write(Rtc::kIndexPort, reg);
    return rtc.Read(Rtc::kDataPort);
  };
  EXPECT_EQ(get(Rtc::kHours), 0x01);
  EXPECT_EQ(get(Rtc::kMinutes), 0x30);
  EXPECT_EQ(get(Rtc::kDayOfMonth), 0x01);
  EXPECT_EQ(get(Rtc::kMonth), 0x03);
  EXPECT_EQ(get(Rtc::kDayOfWeek), 6);
  if (old) {
    setenv("TZ", saved.c_str(), 1);
  } else {
    unsetenv("TZ");
  }
  tzset();
}

TEST_F(RtcTest, SettingTimeWithSetMovesClockAndKeepsRunning) {
  Set(Rtc::kRegB, Rtc::kBSet | Rtc::kB24Hour);
  EXPECT_EQ(Get(Rtc::kSeconds), 0x56) << "SET freezes the registers for the guest";
  Set(Rtc::kSeconds, 0x00);
  Set(Rtc::kMinutes, 0x30);
  Set(Rtc::kHours, 0x08);
  Set(Rtc::kDayOfMonth, 0x15);
  Set(Rtc::kMonth, 0x06);
  Set(Rtc::kYear, 0x30);
  Tick(2 * kSec);  // the guest is slow: nothing moves while SET is on
  EXPECT_EQ(Get(Rtc::kMinutes), 0x30);
  EXPECT_EQ(Get(Rtc::kSeconds), 0x00);
  Set(Rtc::kRegB, Rtc::kB24Hour);

  EXPECT_EQ(Get(Rtc::kSeconds), 0x00);
  EXPECT_EQ(Get(Rtc::kMinutes), 0x30);
  EXPECT_EQ(Get(Rtc::kHours), 0x08);
  EXPECT_EQ(Get(Rtc::kDayOfMonth), 0x15);
  EXPECT_EQ(Get(Rtc::kMonth), 0x06);
  EXPECT_EQ(Get(Rtc::kYear), 0x30);
  EXPECT_EQ(Get(Rtc::kCentury), 0x20);
  EXPECT_EQ(Get(Rtc::kDayOfWeek), 7) << "2030-06-15 is a Saturday";

  // The divider chain kept its phase (x.250 s): the next second comes 750 ms on.
  Tick(749 * kMs);
  EXPECT_EQ(Get(Rtc::kSeconds), 0x00);
  Tick(1 * kMs);
  EXPECT_EQ(Get(Rtc::kSeconds), 0x01);
  Tick(3600 * kSec);
  EXPECT_EQ(Get(Rtc::kHours), 0x09);
  EXPECT_EQ(Get(Rtc::kMinutes), 0x30);
  EXPECT_EQ(Get(Rtc::kSeconds), 0x01);

  // The offset survives a host clock step: guest time moves with the host.
  realtime_ += 10 * kSec;
  EXPECT_EQ(Get(Rtc::kSeconds), 0x11);
}

TEST_F(RtcTest, SetWithoutWritesLeavesClockAlone) {
  Set(Rtc::kRegB, Rtc::kBSet | Rtc::kB24Hour);
  Tick(5 * kSec);
  EXPECT_EQ(Get(Rtc::kSeconds), 0x56);
  Set(Rtc::kRegB, Rtc::kB24Hour);
  EXPECT_EQ(Get(Rtc::kSeconds), 0x01) << "13:46:01";
  EXPECT_EQ(Get(Rtc::kMinutes), 0x46);
}

TEST_F(RtcTest, SettingTimeInBinaryTwelveHourMode) {
  Set(Rtc::kRegB, Rtc::kBSet | Rtc::kBBinary);  // binary, 12-hour
  Set(Rtc::kHours, 0x80 | 11);                  // 11 PM
  Set(Rtc::kMinutes, 59);
  Set(Rtc::kSeconds, 58);
  Set(Rtc::kRegB, Rtc::kBBinary | Rtc::kB24Hour);  // clear SET, switch to 24-hour
  EXPECT_EQ(Get(Rtc::kHours), 23);
  Tick(2 * kSec);
  EXPECT_EQ(Get(Rtc::kHours), 0);
  EXPECT_EQ(Get(Rtc::kDayOfMonth), 1);
  EXPECT_EQ(Get(Rtc::kMonth), 3);
}

TEST_F(RtcTest, DividerResetHoldsClockAndFirstUpdateComesHalfASecondLater) {
  // The order Linux's mc146818_set_time uses.
  Set(Rtc::kRegB, Rtc::kBSet | Rtc::kB24Hour);
  Set(Rtc::kRegA, 0x70);  // divider reset
  Set(Rtc::kSeconds, 0x10);
  Set(Rtc::kMinutes, 0x00);
  Set(Rtc::kHours, 0x00);
  Set(Rtc::kRegB, Rtc::kB24Hour);
  Tick(10 * kSec);
  EXPECT_EQ(Get(Rtc::kSeconds), 0x10) << "held in reset";
  EXPECT_EQ(Get(Rtc::kRegA) & Rtc::kAUip, 0);
  Set(Rtc::kRegA, 0x26);
  Tick(499 * kMs);
  EXPECT_EQ(Get(Rtc::kSeconds), 0x10);
  Tick(1 * kMs);
  EXPECT_EQ(Get(Rtc::kSeconds), 0x11);
  EXPECT_EQ(Get(Rtc::kHours), 0x00);
}

TEST_F(RtcTest, WritingARunningClockTakesEffectAtOnce) {
  Set(Rtc::kMinutes, 0x07);
  EXPECT_EQ(Get(Rtc::kMinutes), 0x07);
  EXPECT_EQ(Get(Rtc::kSeconds), 0x56);
  EXPECT_EQ(Get(Rtc::kHours), 0x13);
  Tick(4 * kSec);
  EXPECT_EQ(Get(Rtc::kMinutes), 0x08);
  EXPECT_EQ(Get(Rtc::kSeconds), 0x00);
}

TEST_F(RtcTest, UipIsSetJustBeforeEachSecond) {
  Tick(750 * kMs - Rtc::kUipNs - 1);
  EXPECT_EQ(Get(Rtc::kRegA), 0x26);
  Tick(1);
  EXPECT_EQ(Get(Rtc::kRegA), 0x80 | 0x26);
  EXPECT_EQ(Get(Rtc::kSeconds), 0x56) << "registers still valid during UIP";
  Tick(Rtc::kUipNs);
  EXPECT_EQ(Get(Rtc::kRegA), 0x26);
  EXPECT_EQ(Get(Rtc::kSeconds), 0x57);
}

TEST_F(RtcTest, PeriodicRateFromRegisterA) {
  Set(Rtc::kRegB, Rtc::kBPie | Rtc::kB24Hour);
  // Rate 6: 1024 Hz, 976.5625 us. Deadlines are rounded up to whole ns.
  std::optional<int64_t> first = rtc_.NextEventNs();
  ASSERT_TRUE(first.has_value());
  EXPECT_GT(*first, monotonic_);
  EXPECT_LE(*first - monotonic_, 976563);
  int64_t prev = *first;
  monotonic_ = prev;
  rtc_.Advance();
  EXPECT_TRUE(rtc_.IrqAsserted());
  EXPECT_FALSE(rtc_.NextEventNs().has_value()) << "no deadline while the IRQ is up";
  EXPECT_EQ(Get(Rtc::kRegC), Rtc::kCIrqf | Rtc::kCPf);
  EXPECT_FALSE(rtc_.IrqAsserted());
  int64_t total = 0;
  for (int i = 0; i < 1024; ++i) {
    const std::optional<int64_t> next = rtc_.NextEventNs();
    ASSERT_TRUE(next.has_value());
    const int64_t gap = *next - prev;
    EXPECT_TRUE(gap == 976562 || gap == 976563) << gap;
    total += gap;
    prev = *next;
    monotonic_ = *next - 1;
    rtc_.Advance();
    EXPECT_FALSE(rtc_.IrqAsserted()) << "1 ns early";
    monotonic_ = *next;
    rtc_.Advance();
    EXPECT_TRUE(rtc_.IrqAsserted());
    EXPECT_EQ(Get(Rtc::kRegC), Rtc::kCIrqf | Rtc::kCPf);
  }
  EXPECT_EQ(total, 1000000000) << "1024 periods are exactly one second, no drift";

  struct {
    uint8_t rs;
    int64_t period_ns;
  } const kRates[] = {{3, 122070}, {1, 3906250}, {2, 7812500}, {8, 3906250}, {15, 500000000}};
  for (const auto& r : kRates) {
    Set(Rtc::kRegA, 0x20 | r.rs);
    const int64_t a = *rtc_.NextEventNs();
    monotonic_ = a;
    rtc_.Advance();
    Get(Rtc::kRegC);
    const int64_t b = *rtc_.NextEventNs();
    EXPECT_NEAR(b - a, r.period_ns, 1) << "RS " << int(r.rs);
  }
  Set(Rtc::kRegA, 0x20);  // RS = 0: off
  EXPECT_FALSE(rtc_.NextEventNs().has_value());
}

TEST_F(RtcTest, FlagsAreSetWithoutEnablesButCostNoDeadline) {
  EXPECT_FALSE(rtc_.NextEventNs().has_value());
  Tick(2 * kSec);
  EXPECT_FALSE(rtc_.NextEventNs().has_value());
  EXPECT_EQ(Get(Rtc::kRegC), Rtc::kCPf | Rtc::kCUf) << "no IRQF without enables";
  EXPECT_EQ(Get(Rtc::kRegC), 0);
  EXPECT_TRUE(irq_.empty());
}

TEST_F(RtcTest, EnablingWithAFlagPendingRaisesIrq) {
  Tick(1 * kMs);
  Set(Rtc::kRegB, Rtc::kBPie | Rtc::kB24Hour);
  EXPECT_TRUE(rtc_.IrqAsserted());
  EXPECT_EQ(irq_, std::vector<bool>{true});
  Set(Rtc::kRegB, Rtc::kB24Hour);
  EXPECT_FALSE(rtc_.IrqAsserted());
  EXPECT_EQ(irq_, (std::vector<bool>{true, false}));
}

TEST_F(RtcTest, UpdateInterruptOncePerSecondAtTheSecondBoundary) {
  Set(Rtc::kRegB, Rtc::kBUie | Rtc::kB24Hour);
  EXPECT_EQ(rtc_.NextEventNs(), monotonic_ + 750 * kMs) << "the guest clock is at x.250";
  // Walk through 5 seconds in 1 ms steps, acknowledging each interrupt.
  std::vector<int> at_ms;
  std::vector<uint8_t> seconds;
  for (int ms = 1; ms <= 5000; ++ms) {
    Tick(kMs);
    if (auto next = rtc_.NextEventNs(); next && *next <= monotonic_) rtc_.Advance();
    if (rtc_.IrqAsserted()) {
      at_ms.push_back(ms);
      seconds.push_back(Get(Rtc::kSeconds));
      // PF shows up too: RS = 6 runs the periodic flag even without PIE.
      EXPECT_EQ(Get(Rtc::kRegC) & ~Rtc::kCPf, Rtc::kCIrqf | Rtc::kCUf);
    }
  }
  EXPECT_EQ(at_ms, (std::vector<int>{750, 1750, 2750, 3750, 4750}));
  EXPECT_EQ(seconds, (std::vector<uint8_t>{0x57, 0x58, 0x59, 0x00, 0x01}));
}

TEST_F(RtcTest, SetClearsUieAndInhibitsUpdates) {
  Set(Rtc::kRegB, Rtc::kBUie | Rtc::kB24Hour);
  Set(Rtc::kRegB, Rtc::kBSet | Rtc::kBUie | Rtc::kB24Hour);
  EXPECT_EQ(Get(Rtc::kRegB), Rtc::kBSet | Rtc::kB24Hour);
  EXPECT_FALSE(rtc_.NextEventNs().has_value());
  Tick(3 * kSec);
  EXPECT_EQ(Get(Rtc::kRegC) & Rtc::kCUf, 0);
}

TEST_F(RtcTest, AlarmWithDontCareFiresEveryMinuteAtSecond30) {
  Set(Rtc::kSecondsAlarm, 0x30);
  Set(Rtc::kMinutesAlarm, 0xc0);
  Set(Rtc::kHoursAlarm, 0xff);
  Set(Rtc::kRegB, Rtc::kBAie | Rtc::kB24Hour);
  std::vector<int> fired;  // guest seconds-of-minute at which the IRQ came
  for (int ms = 0; ms < 180000; ms += 10) {
    Tick(10 * kMs);
    if (auto next = rtc_.NextEventNs(); next && *next <= monotonic_) rtc_.Advance();
    if (rtc_.IrqAsserted()) {
      EXPECT_EQ(Get(Rtc::kRegC) & ~Rtc::kCPf, Rtc::kCIrqf | Rtc::kCAf | Rtc::kCUf);
      fired.push_back(Get(Rtc::kSeconds));
    }
  }
  EXPECT_EQ(fired, (std::vector<int>{0x30, 0x30, 0x30}));
}

TEST_F(RtcTest, AlarmExactTimeFiresOnce) {
  Set(Rtc::kSecondsAlarm, 0x05);
  Set(Rtc::kMinutesAlarm, 0x46);
  Set(Rtc::kHoursAlarm, 0x13);
  Set(Rtc::kRegB, Rtc::kBAie | Rtc::kB24Hour);
  RunFor(8 * kSec, 10 * kMs);  // to 13:46:04.25
  EXPECT_FALSE(rtc_.IrqAsserted());
  RunFor(1 * kSec, 10 * kMs);
  EXPECT_TRUE(rtc_.IrqAsserted());
  EXPECT_EQ(Get(Rtc::kSeconds), 0x05);
  EXPECT_EQ(Get(Rtc::kRegC) & ~Rtc::kCPf, Rtc::kCIrqf | Rtc::kCAf | Rtc::kCUf);
  RunFor(120 * kSec, 10 * kMs);
  EXPECT_FALSE(rtc_.IrqAsserted());
  EXPECT_EQ(Get(Rtc::kRegC) & ~Rtc::kCPf, Rtc::kCUf) << "UF is polled, AF did not come again";
}

TEST_F(RtcTest, AlarmInTwelveHourBinaryMode) {
  Set(Rtc::kRegB, Rtc::kBBinary);  // binary, 12-hour
  Set(Rtc::kSecondsAlarm, 0);
  Set(Rtc::kMinutesAlarm, 46);
  Set(Rtc::kHoursAlarm, 0x80 | 1);  // 1 PM
  Set(Rtc::kRegB, Rtc::kBBinary | Rtc::kBAie);
  RunFor(5 * kSec, 10 * kMs);
  EXPECT_TRUE(rtc_.IrqAsserted());
}

TEST_F(RtcTest, RegisterCReadClearsFlagsAndIrq) {
  Set(Rtc::kRegB, Rtc::kBPie | Rtc::kBUie | Rtc::kB24Hour);
  Tick(1 * kSec);
  rtc_.Advance();
  EXPECT_TRUE(rtc_.IrqAsserted());
  EXPECT_EQ(irq_, std::vector<bool>{true});
  EXPECT_EQ(Get(Rtc::kRegC), Rtc::kCIrqf | Rtc::kCPf | Rtc::kCUf);
  EXPECT_FALSE(rtc_.IrqAsserted());
  EXPECT_EQ(irq_, (std::vector<bool>{true, false}));
  EXPECT_EQ(Get(Rtc::kRegC), 0);
  rtc_.Advance();
  EXPECT_EQ(irq_.size(), 2u) << "IrqFn only on change";
  Set(Rtc::kRegC, 0xff);
  EXPECT_EQ(Get(Rtc::kRegC), 0) << "read-only";
  Set(Rtc::kRegD, 0x00);
  EXPECT_EQ(Get(Rtc::kRegD), 0x80) << "read-only";
}

TEST_F(RtcTest, CatchesUpAfterOneHourStallPromptly) {
  Set(Rtc::kRegA, 0x23);  // 8192 Hz
  Set(Rtc::kSecondsAlarm, 0x00);
  Set(Rtc::kMinutesAlarm, 0x15);
  Set(Rtc::kHoursAlarm, 0x14);  // 14:15:00, in the middle of the stall
  Set(Rtc::kRegB, Rtc::kBPie | Rtc::kBUie | Rtc::kBAie | Rtc::kB24Hour);
  Tick(3600 * kSec);
  const auto start = std::chrono::steady_clock::now();
  clock_reads_ = 0;
  rtc_.Advance();
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_LT(elapsed, std::chrono::milliseconds(250));
  EXPECT_LE(clock_reads_, 4) << "no replay of the 29 million missed periods";
  EXPECT_EQ(irq_, std::vector<bool>{true});
  EXPECT_EQ(Get(Rtc::kRegC), Rtc::kCIrqf | Rtc::kCPf | Rtc::kCUf | Rtc::kCAf);
  EXPECT_EQ(Get(Rtc::kHours), 0x14);
  const std::optional<int64_t> next = rtc_.NextEventNs();
  ASSERT_TRUE(next.has_value());
  EXPECT_GT(*next, monotonic_);
  EXPECT_LE(*next - monotonic_, 122071) << "back on the 8192 Hz grid";

  // A day-long stall with an alarm that cannot match (hour 0x25) is as quick.
  Set(Rtc::kHoursAlarm, 0x25);
  Tick(30LL * 86400 * kSec);
  const auto start2 = std::chrono::steady_clock::now();
  clock_reads_ = 0;
  rtc_.Advance();
  EXPECT_LT(std::chrono::steady_clock::now() - start2, std::chrono::milliseconds(250));
  EXPECT_LE(clock_reads_, 4);
  EXPECT_EQ(Get(Rtc::kRegC), Rtc::kCIrqf | Rtc::kCPf | Rtc::kCUf);
}

TEST_F(RtcTest, MemorySizeRegisters) {
  constexpr uint64_t kMiB = 1 << 20, kGiB = 1ULL << 30;
  struct Case {
    uint64_t below, above;
    uint16_t ext_kb, mem16m;
    uint32_t high;
  } const kCases[] = {
      {64 * kMiB, 0, 63 * 1024, 48 * 16, 0},
      {1 * kGiB, 0, 0xffff, 1008 * 16, 0},
      {3 * kGiB, 0, 0xffff, (3072 - 16) * 16, 0},
      {3 * kGiB, 2 * kGiB, 0xffff, (3072 - 16) * 16, 0x8000},  // a 5G guest
  };
  for (const Case& c : kCases) {
    rtc_.SetMemory(c.below, c.above);
    EXPECT_EQ(Get(0x15) | Get(0x16) << 8, 640);
    EXPECT_EQ(Get(0x17) | Get(0x18) << 8, c.ext_kb) << c.below;
    EXPECT_EQ(Get(0x30) | Get(0x31) << 8, c.ext_kb) << c.below;
    EXPECT_EQ(Get(0x34) | Get(0x35) << 8, c.mem16m) << c.below;
    EXPECT_EQ(Get(0x5b) | Get(0x5c) << 8 | Get(0x5d) << 16, c.high) << c.above;
  }
  rtc_.SetMemory(512 * 1024, 2000ULL * kGiB);
  EXPECT_EQ(Get(0x15) | Get(0x16) << 8, 512);
  EXPECT_EQ(Get(0x17) | Get(0x18) << 8, 0);
  EXPECT_EQ(Get(0x34) | Get(0x35) << 8, 0);
  EXPECT_EQ(Get(0x5b) | Get(0x5c) << 8 | Get(0x5d) << 16, 0xffffff) << "capped at 3 bytes";
}

TEST_F(RtcTest, CmosRamRoundTrip) {
  for (int round = 0; round < 2; ++round) {
    for (int reg = 0x0e; reg < 0x80; ++reg) {
      if (reg == Rtc::kCentury) continue;
      Set(static_cast<uint8_t>(reg), static_cast<uint8_t>(reg * 7 + round * 13));
    }
    for (int reg = 0x0e; reg < 0x80; ++reg) {
      if (reg == Rtc::kCentury) continue;
      EXPECT_EQ(Get(static_cast<uint8_t>(reg)), static_cast<uint8_t>(reg * 7 + round * 13))
          << std::hex << reg;
    }
  }
  // Bit 7 of the index is the NMI mask: ignored, the index wraps at 128.
  Set(0x40, 0x5a);
  rtc_.Write(Rtc::kIndexPort, 0x80 | 0x40);
  EXPECT_EQ(rtc_.Read(Rtc::kDataPort), 0x5a);
  EXPECT_EQ(rtc_.Read(Rtc::kIndexPort), 0xff);
  EXPECT_EQ(rtc_.Read(2), 0xff);
  // The alarm registers are plain bytes too.
  Set(Rtc::kSecondsAlarm, 0x12);
  EXPECT_EQ(Get(Rtc::kSecondsAlarm), 0x12);
}

TEST_F(RtcTest, ResetClearsEnablesAndFlagsButNotTime) {
  Set(0x50, 0x77);
  Set(Rtc::kRegB, Rtc::kBPie | Rtc::kBUie | Rtc::kBAie | Rtc::kBSqwe | Rtc::kB24Hour);
  Tick(1 * kSec);
  rtc_.Advance();
  ASSERT_TRUE(rtc_.IrqAsserted());
  rtc_.Reset();
  EXPECT_FALSE(rtc_.IrqAsserted());
  EXPECT_EQ(Get(Rtc::kRegB), Rtc::kB24Hour);
  EXPECT_EQ(Get(Rtc::kRegC), 0);
  EXPECT_EQ(Get(0x50), 0x77);
  EXPECT_EQ(Get(Rtc::kSeconds), 0x57);
}

TEST_F(RtcTest, SaveRestoreContinuesInAnotherInstance) {
  Set(Rtc::kRegB, Rtc::kBSet | Rtc::kB24Hour);
  Set(Rtc::kYear, 0x31);
  Set(Rtc::kRegB, Rtc::kBPie | Rtc::kB24Hour);
  Set(0x60, 0xab);
  Tick(100 * kMs);
  rtc_.Advance();
  const State saved = rtc_.Save();

  std::vector<bool> irq2;
  Rtc other([this] { return realtime_; }, [this] { return monotonic_; },
            [&](bool level) { irq2.push_back(level); }, true);
  other.Restore(saved);
  EXPECT_EQ(other.Save(), saved);
  EXPECT_TRUE(irq2.empty()) << "the restored level matches";
  EXPECT_EQ(other.NextEventNs(), rtc_.NextEventNs());
  other.Write(Rtc::kIndexPort, Rtc::kYear);
  EXPECT_EQ(other.Read(Rtc::kDataPort), 0x31);
  other.Write(Rtc::kIndexPort, 0x60);
  EXPECT_EQ(other.Read(Rtc::kDataPort), 0xab);
  other.Write(Rtc::kIndexPort, Rtc::kRegC);
  EXPECT_EQ(other.Read(Rtc::kDataPort), Get(Rtc::kRegC));

  ASSERT_TRUE(saved.irq_asserted);
  EXPECT_EQ(irq2, std::vector<bool>{false}) << "reading C dropped the IRQ";
  State flipped = saved;
  flipped.irq_asserted = false;
  other.Restore(flipped);
  EXPECT_EQ(irq2, (std::vector<bool>{false, true})) << "Restore corrects a mismatched level";
}

// Invariants that hold between any two operations.
::testing::AssertionResult Consistent(const Rtc& rtc, const Rtc::ClockFn& rt,
                                      const Rtc::ClockFn& mono) {
  const State s = rtc.Save();
  const uint8_t b = s.cmos[Rtc::kRegB];
  if (s.index & 0x80) return ::testing::AssertionFailure() << "index";
  if (s.cmos[Rtc::kRegA] & 0x80) return ::testing::AssertionFailure() << "UIP stored";
  if (s.cmos[Rtc::kRegC] & 0x8f) return ::testing::AssertionFailure() << "C " << int(s.cmos[12]);
  if (s.offset_ns < 0 || s.offset_ns >= kSec) return ::testing::AssertionFailure() << "offset_ns";
  const bool irqf = (s.cmos[Rtc::kRegC] & b & 0x70) != 0;
  if (s.irq_asserted != irqf) return ::testing::AssertionFailure() << "irq vs IRQF";
  if (rtc.IrqAsserted() != s.irq_asserted) return ::testing::AssertionFailure() << "IrqAsserted";

  Rtc probe(rt, mono, nullptr, true);
  probe.Restore(s);
  if (probe.Save() != s) return ::testing::AssertionFailure() << "Restore(Save()) differs";
  if (!(b & Rtc::kBSet)) {
    // A running clock always shows valid values in the current format.
    auto get = [&](uint8_t reg) {
      probe.Write(Rtc::kIndexPort, reg);
      const uint8_t v = probe.Read(Rtc::kDataPort);
      const uint8_t u = (reg == Rtc::kHours && !(b & Rtc::kB24Hour)) ? v & 0x7f : v;  // PM bit
      return (b & Rtc::kBBinary) ? int(u) : (u >> 4) * 10 + (u & 0x0f);
    };
    auto valid_bcd = [&](uint8_t reg) {
      probe.Write(Rtc::kIndexPort, reg);
      const uint8_t v = probe.Read(Rtc::kDataPort) & 0x7f;
      return (b & Rtc::kBBinary) || ((v & 0x0f) <= 9 && (v >> 4) <= 9);
    };
    for (uint8_t reg : {Rtc::kSeconds, Rtc::kMinutes, Rtc::kHours, Rtc::kDayOfMonth, Rtc::kMonth,
                        Rtc::kYear, Rtc::kCentury}) {
      if (!valid_bcd(reg)) return ::testing::AssertionFailure() << "BCD reg " << int(reg);
    }
    const int hour = get(Rtc::kHours);
    if (get(Rtc::kSeconds) > 59 || get(Rtc::kMinutes) > 59 ||
        ((b & Rtc::kB24Hour) ? hour > 23 : (hour < 1 || hour > 12)) || get(Rtc::kDayOfMonth) < 1 ||
        get(Rtc::kDayOfMonth) > 31 || get(Rtc::kMonth) < 1 || get(Rtc::kMonth) > 12 ||
        get(Rtc::kDayOfWeek) < 1 || get(Rtc::kDayOfWeek) > 7) {
      return ::testing::AssertionFailure()
             << "time out of range: B=" << int(b) << " " << get(Rtc::kCentury) << get(Rtc::kYear)
             << "-" << get(Rtc::kMonth) << "-" << get(Rtc::kDayOfMonth) << " dow "
             << get(Rtc::kDayOfWeek) << " " << hour << ":" << get(Rtc::kMinutes) << ":"
             << get(Rtc::kSeconds);
    }
  }
  probe.Write(Rtc::kIndexPort, Rtc::kRegD);
  if (probe.Read(Rtc::kDataPort) != 0x80) return ::testing::AssertionFailure() << "D";
  return ::testing::AssertionSuccess();
}

TEST(RtcFuzzTest, RandomAccessesKeepInvariants) {
  std::mt19937 rng(0x146818);
  int64_t rt = Epoch(2024, 1, 1, 0, 0, 0) * kSec;
  int64_t mono = 42 * kSec;
  Rtc::ClockFn rt_fn = [&] { return rt; };
  Rtc::ClockFn mono_fn = [&] { return mono; };
  int irq_calls = 0;
  bool irq_level = false, irq_repeat = false;
  Rtc rtc(
      rt_fn, mono_fn,
      [&](bool a) {
        ++irq_calls;
        if (a == irq_level) irq_repeat = true;
        irq_level = a;
      },
      true);
  std::optional<Rtc> shadow;
  int advances = 0;

  for (int i = 0; i < 100000; ++i) {
    if (i % 5000 == 0) {
      shadow.emplace(rt_fn, mono_fn, nullptr, true);
      shadow->Restore(rtc.Save());
    }
    const uint32_t r = rng();
    const uint32_t kind = r % 100;
    // Registers weighted towards the interesting ones.
    static constexpr uint8_t kRegs[] = {Rtc::kRegA,
                                        Rtc::kRegB,
                                        Rtc::kRegB,
                                        Rtc::kRegC,
                                        Rtc::kRegC,
                                        Rtc::kRegC,
                                        Rtc::kRegD,
                                        Rtc::kSeconds,
                                        Rtc::kMinutes,
                                        Rtc::kHours,
                                        Rtc::kYear,
                                        Rtc::kDayOfMonth,
                                        Rtc::kCentury,
                                        Rtc::kSecondsAlarm,
                                        Rtc::kHoursAlarm,
                                        Rtc::kMonth,
                                        Rtc::kDayOfWeek,
                                        0x40,
                                        0x7f,
                                        0xff};
    auto select = [&](uint32_t bits) {
      uint8_t reg = kRegs[bits % (sizeof(kRegs))];
      if (reg == 0xff) reg = static_cast<uint8_t>(rng());
      rtc.Write(Rtc::kIndexPort, reg);
      shadow->Write(Rtc::kIndexPort, reg);
    };
    if (kind < 35) {  // guest write
      if ((r >> 8) % 8 != 0) select(r >> 11);
      const uint8_t off = (r >> 16) % 32 == 0 ? static_cast<uint8_t>(r >> 21) % 4 : 1;
      uint8_t val = static_cast<uint8_t>(rng());
      const uint8_t index = rtc.Save().index;
      if (index == Rtc::kRegA && (val & 0x60) == 0x60 && rng() % 8 != 0) {
        val = 0x20 | (val & 0x0f);  // do not sit in divider reset most of the time
      }
      if (index == Rtc::kRegB && (val & Rtc::kBSet) && rng() % 4 != 0) val &= 0x7f;
      rtc.Write(off, val);
      shadow->Write(off, val);
    } else if (kind < 70) {  // guest read
      if ((r >> 8) % 8 != 0) select(r >> 11);
      const uint8_t off = (r >> 16) % 32 == 0 ? static_cast<uint8_t>(r >> 21) % 4 : 1;
      ASSERT_EQ(rtc.Read(off), shadow->Read(off)) << "op " << i;
    } else if (kind < 97) {  // time passes
      int64_t step;
      switch ((r >> 8) % 4) {
        case 0:
          step = (r >> 12) % 2000;
          break;  // ns
        case 1:
          step = int64_t((r >> 12) % 2000) * 1000;
          break;  // us
        case 2:
          step = int64_t((r >> 12) % 1500) * kMs;
          break;  // ms
        default:
          step = int64_t((r >> 12) % 100000) * kSec;
          break;  // a stall
      }
      if ((r >> 8) % 4 == 3 && (r >> 30) != 0) step = int64_t((r >> 12) % 3) * kSec;
      mono += step;
      rt += step;
      if ((r >> 28) == 0) rt -= int64_t((r >> 12) % 5000) * kMs;  // host clock stepped back
    } else if (kind < 99) {
      rtc.Advance();
      shadow->Advance();
    } else {
      rtc.Reset();
      shadow->Reset();
    }
    // The process's loop: Advance when the deadline has passed.
    if (auto next = rtc.NextEventNs(); next && *next <= mono) {
      rtc.Advance();
      shadow->Advance();
      ++advances;
      const std::optional<int64_t> after = rtc.NextEventNs();
      ASSERT_TRUE(!after || *after > mono) << "deadline not in the future after Advance, op " << i;
    }
    ASSERT_FALSE(irq_repeat) << "IrqFn repeated a level at op " << i;
    ASSERT_EQ(irq_level, rtc.IrqAsserted()) << "op " << i;
    ASSERT_TRUE(Consistent(rtc, rt_fn, mono_fn)) << "op " << i;
    ASSERT_EQ(shadow->Save(), rtc.Save()) << "op " << i;
  }
  EXPECT_GT(irq_calls, 1000);
  EXPECT_GT(advances, 1000);
}

}  // namespace
}  // namespace hv::lpc
