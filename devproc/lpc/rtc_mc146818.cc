#include "devproc/lpc/rtc_mc146818.h"

#include <time.h>

#include <algorithm>
#include <utility>

namespace hv::lpc {
namespace {

constexpr int64_t kNsPerSec = 1000000000;
constexpr int64_t kSecPerDay = 86400;
constexpr int64_t kTimeBaseHz = 32768;  // the PC's RTC crystal

int64_t FloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}
int64_t FloorMod(int64_t a, int64_t b) { return a - FloorDiv(a, b) * b; }

// Proleptic Gregorian calendar <-> days since 1970-01-01. The year is
// counted from March so that the leap day comes last; a 400-year cycle has
// 146097 days.
int64_t DaysFromCivil(int64_t year, int64_t month, int64_t day) {
  if (month <= 2) --year;
  const int64_t cycle = FloorDiv(year, 400);
  const int64_t year_of_cycle = year - cycle * 400;                        // [0, 399]
  const int64_t month_from_march = (month + 9) % 12;                       // March = 0
  const int64_t day_of_year = (153 * month_from_march + 2) / 5 + day - 1;  // [0, 365]
  const int64_t day_of_cycle =
      year_of_cycle * 365 + year_of_cycle / 4 - year_of_cycle / 100 + day_of_year;
  // 719468 days from 0000-03-01 to 1970-01-01.
  return cycle * 146097 + day_of_cycle - 719468;
}

struct Civil {
  int64_t year;
  int month;  // 1-12
  int day;    // 1-31
};

Civil CivilFromDays(int64_t days) {
  days += 719468;
  const int64_t cycle = FloorDiv(days, 146097);
  const int64_t day_of_cycle = days - cycle * 146097;  // [0, 146096]
  const int64_t year_of_cycle =
      (day_of_cycle - day_of_cycle / 1460 + day_of_cycle / 36524 - day_of_cycle / 146096) / 365;
  const int64_t day_of_year =
      day_of_cycle - (365 * year_of_cycle + year_of_cycle / 4 - year_of_cycle / 100);
  const int64_t month_from_march = (5 * day_of_year + 2) / 153;
  Civil c;
  c.day = static_cast<int>(day_of_year - (153 * month_from_march + 2) / 5 + 1);
  c.month = static_cast<int>(month_from_march < 10 ? month_from_march + 3 : month_from_march - 9);
  c.year = year_of_cycle + cycle * 400 + (c.month <= 2 ? 1 : 0);
  return c;
}

uint8_t Encode(int value, bool binary) {
  return binary ? static_cast<uint8_t>(value)
                : static_cast<uint8_t>(((value / 10) << 4) | (value % 10));
}

int Decode(uint8_t byte, bool binary) { return binary ? byte : (byte >> 4) * 10 + (byte & 0x0f); }

uint8_t EncodeHour(int hour, uint8_t b) {
  const bool binary = b & Rtc::kBBinary;
  if (b & Rtc::kB24Hour) return Encode(hour, binary);
  const int h12 = hour % 12 == 0 ? 12 : hour % 12;
  return static_cast<uint8_t>(Encode(h12, binary) | (hour >= 12 ? 0x80 : 0));
}

int DecodeHour(uint8_t byte, uint8_t b) {
  const bool binary = b & Rtc::kBBinary;
  if (b & Rtc::kB24Hour) return std::min(Decode(byte, binary), 23);
  const int h12 = std::min(Decode(byte & 0x7f, binary), 12) % 12;  // 12 AM is hour 0
  return h12 + ((byte & 0x80) ? 12 : 0);
}

bool DontCare(uint8_t alarm) { return (alarm & 0xc0) == 0xc0; }

}  // namespace

bool operator==(const Rtc::State& a, const Rtc::State& b) {
  return a.index == b.index && a.cmos == b.cmos && a.offset_s == b.offset_s &&
         a.offset_ns == b.offset_ns && a.held_s == b.held_s && a.set_written == b.set_written &&
         a.last_update_s == b.last_update_s && a.divider_epoch_ns == b.divider_epoch_ns &&
         a.periods == b.periods && a.irq_asserted == b.irq_asserted;
}

Rtc::Rtc(ClockFn realtime_ns, ClockFn monotonic_ns, IrqFn irq, bool utc)
    : realtime_(std::move(realtime_ns)), monotonic_(std::move(monotonic_ns)), irq_(std::move(irq)) {
  if (!utc) {
    const time_t now = static_cast<time_t>(FloorDiv(realtime_(), kNsPerSec));
    struct tm local;
    if (localtime_r(&now, &local) != nullptr) s_.offset_s = local.tm_gmtoff;
  }
  s_.cmos[kRegA] = kInitialRegA;
  s_.cmos[kRegB] = kInitialRegB;
  s_.last_update_s = Now().s;
  s_.divider_epoch_ns = monotonic_();
}

uint8_t Rtc::Read(uint8_t offset) {
  if (offset != kDataPort) return 0xff;  // the index port is write-only
  const uint8_t reg = s_.index;
  const uint8_t b = s_.cmos[kRegB];
  switch (reg) {
    case kRegA: {
      const bool uip = UpdatesRunning() && Now().ns >= kNsPerSec - kUipNs;
      return static_cast<uint8_t>(s_.cmos[kRegA] | (uip ? kAUip : 0));
    }
    case kRegB:
      return b;
    case kRegC: {
      Refresh();
      uint8_t value = s_.cmos[kRegC];
      if (value & b & (kCPf | kCAf | kCUf)) value |= kCIrqf;
      s_.cmos[kRegC] = 0;
      UpdateIrq();
      return value;
    }
    case kRegD:
      return kDVrt;
    default:
      break;
  }
  if (IsTimeReg(reg) && !(b & kBSet)) {
    std::array<uint8_t, kCmosSize> regs{};
    RenderTime(Now().s, b, regs);
    return regs[reg];
  }
  return s_.cmos[reg];
}

void Rtc::Write(uint8_t offset, uint8_t value) {
  if (offset == kIndexPort) {
    s_.index = value & 0x7f;  // bit 7: NMI mask on PCs, not ours
    return;
  }
  if (offset != kDataPort) return;
  const uint8_t reg = s_.index;
  switch (reg) {
    case kRegA:
      WriteRegA(value);
      return;
    case kRegB:
      WriteRegB(value);
      return;
    case kRegC:
    case kRegD:
      return;  // read-only
    case kSecondsAlarm:
    case kMinutesAlarm:
    case kHoursAlarm:
      Refresh();  // seconds already past were compared with the old alarm
      s_.cmos[reg] = value;
      UpdateIrq();
      return;
    default:
      break;
  }
  if (!IsTimeReg(reg)) {
    s_.cmos[reg] = value;
    return;
  }
  const uint8_t b = s_.cmos[kRegB];
  if (b & kBSet) {
    s_.cmos[reg] = value;
    s_.set_written = true;
    return;
  }
  // Writing a running clock: the new value takes effect at once.
  Refresh();
  std::array<uint8_t, kCmosSize> regs{};
  RenderTime(Now().s, b, regs);
  regs[reg] = value;
  CommitTime(ParseTime(regs, b));
  UpdateIrq();
}

void Rtc::SetMemory(uint64_t below_4g_bytes, uint64_t above_4g_bytes) {
  constexpr uint64_t kKiB = 1024, kMiB = 1024 * kKiB, k64KiB = 64 * kKiB;
  auto put16 = [this](uint8_t reg, uint64_t v) {
    s_.cmos[reg] = static_cast<uint8_t>(v);
    s_.cmos[reg + 1] = static_cast<uint8_t>(v >> 8);
  };
  put16(kBaseMemLow, std::min<uint64_t>(below_4g_bytes / kKiB, 640));
  const uint64_t ext_kb =
      below_4g_bytes > kMiB ? std::min<uint64_t>((below_4g_bytes - kMiB) / kKiB, 0xffff) : 0;
  put16(kExtMemLow, ext_kb);
  put16(kExtMem2Low, ext_kb);
  put16(kMem16MLow, below_4g_bytes > 16 * kMiB
                        ? std::min<uint64_t>((below_4g_bytes - 16 * kMiB) / k64KiB, 0xffff)
                        : 0);
  const uint64_t high = std::min<uint64_t>(above_4g_bytes / k64KiB, 0xffffff);
  s_.cmos[kMemAbove4G0] = static_cast<uint8_t>(high);
  s_.cmos[kMemAbove4G1] = static_cast<uint8_t>(high >> 8);
  s_.cmos[kMemAbove4G2] = static_cast<uint8_t>(high >> 16);
}

std::optional<int64_t> Rtc::NextEventNs() const {
  // Once IRQF is set, further events only set flags, which Refresh computes
  // when register C is read.
  if (s_.irq_asserted || DividerHeld()) return std::nullopt;
  const uint8_t b = s_.cmos[kRegB];
  std::optional<int64_t> next;
  if ((b & kBPie) && PeriodTicks() > 0) next = PeriodStartNs(s_.periods + 1);
  if ((b & (kBUie | kBAie)) && !(b & kBSet)) {
    const int64_t mono = monotonic_();
    const GuestTime t = Now();
    const int64_t boundary = t.s > s_.last_update_s ? mono : mono + (kNsPerSec - t.ns);
    next = next ? std::min(*next, boundary) : boundary;
  }
  return next;
}

void Rtc::Advance() {
  Refresh();
  UpdateIrq();
}

void Rtc::Reset() {
  Refresh();  // so that events from before the reset do not show up later
  s_.cmos[kRegB] &= static_cast<uint8_t>(~(kBPie | kBAie | kBUie | kBSqwe));
  s_.cmos[kRegC] = 0;
  UpdateIrq();
}

void Rtc::Restore(const State& s) {
  s_ = s;
  s_.index &= 0x7f;
  s_.cmos[kRegA] &= static_cast<uint8_t>(~kAUip);
  s_.cmos[kRegC] &= kCPf | kCAf | kCUf;
  s_.cmos[kRegD] = 0;
  s_.offset_s += FloorDiv(s_.offset_ns, kNsPerSec);
  s_.offset_ns = FloorMod(s_.offset_ns, kNsPerSec);
  if (!(s_.cmos[kRegB] & kBSet)) {
    for (int reg = 0; reg < static_cast<int>(kCmosSize); ++reg) {
      if (IsTimeReg(static_cast<uint8_t>(reg))) s_.cmos[reg] = 0;
    }
    s_.set_written = false;
  }
  if (!DividerHeld()) s_.held_s = 0;
  if (DividerHeld() || PeriodTicks() == 0) s_.periods = 0;
  UpdateIrq();
}

bool Rtc::DividerHeld() const { return (s_.cmos[kRegA] & 0x60) == 0x60; }

bool Rtc::UpdatesRunning() const { return !DividerHeld() && !(s_.cmos[kRegB] & kBSet); }

Rtc::GuestTime Rtc::Now() const {
  if (DividerHeld()) return {s_.held_s, 0};
  const int64_t rt = realtime_();
  int64_t ns = FloorMod(rt, kNsPerSec) + s_.offset_ns;  // < 2e9
  const int64_t s = FloorDiv(rt, kNsPerSec) + s_.offset_s + ns / kNsPerSec;
  ns %= kNsPerSec;
  return {s, ns};
}

void Rtc::SetGuestTime(int64_t s, int64_t ns) {
  const int64_t rt = realtime_();
  s_.offset_s = s - FloorDiv(rt, kNsPerSec);
  s_.offset_ns = ns - FloorMod(rt, kNsPerSec);
  if (s_.offset_ns < 0) {
    s_.offset_ns += kNsPerSec;
    --s_.offset_s;
  }
}

void Rtc::RenderTime(int64_t s, uint8_t b, std::array<uint8_t, kCmosSize>& out) {
  const bool binary = b & kBBinary;
  const int64_t days = FloorDiv(s, kSecPerDay);
  const int64_t sod = s - days * kSecPerDay;
  const Civil c = CivilFromDays(days);
  const int64_t year = FloorMod(c.year, 10000);
  out[kSeconds] = Encode(static_cast<int>(sod % 60), binary);
  out[kMinutes] = Encode(static_cast<int>(sod / 60 % 60), binary);
  out[kHours] = EncodeHour(static_cast<int>(sod / 3600), b);
  out[kDayOfWeek] = Encode(static_cast<int>(FloorMod(days + 4, 7)) + 1, binary);  // 1970-01-01: Thu
  out[kDayOfMonth] = Encode(c.day, binary);
  out[kMonth] = Encode(c.month, binary);
  out[kYear] = Encode(static_cast<int>(year % 100), binary);
  out[kCentury] = Encode(static_cast<int>(year / 100), binary);
}

int64_t Rtc::ParseTime(const std::array<uint8_t, kCmosSize>& in, uint8_t b) {
  const bool binary = b & kBBinary;
  const int64_t sec = std::min(Decode(in[kSeconds], binary), 59);
  const int64_t min = std::min(Decode(in[kMinutes], binary), 59);
  const int64_t hour = DecodeHour(in[kHours], b);
  const int64_t day = std::clamp(Decode(in[kDayOfMonth], binary), 1, 31);
  const int64_t month = std::clamp(Decode(in[kMonth], binary), 1, 12);
  const int64_t year =
      std::min(Decode(in[kCentury], binary), 99) * 100 + std::min(Decode(in[kYear], binary), 99);
  // A day past the end of the month (Feb 31) rolls over into the next month.
  return DaysFromCivil(year, month, day) * kSecPerDay + hour * 3600 + min * 60 + sec;
}

void Rtc::CommitTime(int64_t s) {
  if (DividerHeld()) {
    s_.held_s = s;
  } else {
    SetGuestTime(s, Now().ns);  // the divider chain keeps its phase
  }
  s_.last_update_s = s;  // setting the clock is not an update cycle
}

bool Rtc::IsTimeReg(uint8_t reg) {
  switch (reg) {
    case kSeconds:
    case kMinutes:
    case kHours:
    case kDayOfWeek:
    case kDayOfMonth:
    case kMonth:
    case kYear:
    case kCentury:
      return true;
    default:
      return false;
  }
}

int64_t Rtc::PeriodTicks() const {
  int rate = s_.cmos[kRegA] & kARateMask;
  if (rate == 0) return 0;
  if (rate <= 2) rate += 7;  // RS = 1, 2 repeat the 256 Hz and 128 Hz taps
  return int64_t{1} << (rate - 1);
}

int64_t Rtc::PeriodsAt(int64_t mono_ns) const {
  const int64_t period = PeriodTicks();
  const int64_t elapsed = mono_ns - s_.divider_epoch_ns;
  if (period == 0 || elapsed <= 0) return 0;
  const __int128 ticks = static_cast<__int128>(elapsed) * kTimeBaseHz / kNsPerSec;
  return static_cast<int64_t>(ticks / period);
}

int64_t Rtc::PeriodStartNs(int64_t period) const {
  const __int128 ticks = static_cast<__int128>(period) * PeriodTicks();
  const __int128 ns = (ticks * kNsPerSec + kTimeBaseHz - 1) / kTimeBaseHz;  // round up
  return s_.divider_epoch_ns + static_cast<int64_t>(ns);
}

bool Rtc::AlarmMatchesIn(int64_t first_s, int64_t last_s) const {
  const uint8_t alarm_sec = s_.cmos[kSecondsAlarm];
  const uint8_t alarm_min = s_.cmos[kMinutesAlarm];
  const uint8_t alarm_hour = s_.cmos[kHoursAlarm];
  if (last_s < first_s) return false;
  if (DontCare(alarm_sec) && DontCare(alarm_min) && DontCare(alarm_hour)) return true;
  const uint8_t b = s_.cmos[kRegB];
  const bool binary = b & kBBinary;
  // The alarm compares the time of day only, so a day's worth of seconds
  // covers every case however long the gap.
  const int64_t count = std::min<int64_t>(last_s - first_s + 1, kSecPerDay);
  int64_t sod = FloorMod(first_s, kSecPerDay);
  for (int64_t i = 0; i < count; ++i, sod = (sod + 1) % kSecPerDay) {
    if (!DontCare(alarm_sec) && alarm_sec != Encode(static_cast<int>(sod % 60), binary)) continue;
    if (!DontCare(alarm_min) && alarm_min != Encode(static_cast<int>(sod / 60 % 60), binary))
      continue;
    if (!DontCare(alarm_hour) && alarm_hour != EncodeHour(static_cast<int>(sod / 3600), b))
      continue;
    return true;
  }
  return false;
}

void Rtc::Refresh() {
  if (DividerHeld()) return;
  if (PeriodTicks() > 0) {
    const int64_t periods = PeriodsAt(monotonic_());
    if (periods > s_.periods) s_.cmos[kRegC] |= kCPf;
    s_.periods = periods;
  }
  if (s_.cmos[kRegB] & kBSet) return;  // SET inhibits update cycles
  const int64_t now_s = Now().s;
  if (now_s > s_.last_update_s) {
    s_.cmos[kRegC] |= kCUf;
    if (!(s_.cmos[kRegC] & kCAf) && AlarmMatchesIn(s_.last_update_s + 1, now_s)) {
      s_.cmos[kRegC] |= kCAf;
    }
  }
  // A clock that went backwards (host time stepped back) just resyncs.
  s_.last_update_s = now_s;
}

void Rtc::WriteRegA(uint8_t value) {
  Refresh();
  const bool was_held = DividerHeld();
  const int64_t old_period = PeriodTicks();
  const int64_t now_s = Now().s;
  s_.cmos[kRegA] = value & static_cast<uint8_t>(~kAUip);
  const bool held = DividerHeld();
  if (held) {
    if (!was_held) s_.held_s = now_s;
    s_.periods = 0;
  } else if (was_held) {
    // Out of reset, the first update cycle comes half a second later.
    SetGuestTime(s_.held_s, kNsPerSec / 2);
    s_.last_update_s = s_.held_s;
    s_.held_s = 0;
    s_.divider_epoch_ns = monotonic_();
    s_.periods = 0;
  } else if (PeriodTicks() != old_period) {
    s_.periods = PeriodsAt(monotonic_());
  }
  UpdateIrq();
}

void Rtc::WriteRegB(uint8_t value) {
  Refresh();
  const uint8_t old = s_.cmos[kRegB];
  if (value & kBSet) value &= static_cast<uint8_t>(~kBUie);  // SET clears UIE
  if (!(old & kBSet) && (value & kBSet)) {
    // Updates stop: the guest now reads and writes the registers themselves.
    RenderTime(Now().s, value, s_.cmos);
    s_.set_written = false;
  }
  s_.cmos[kRegB] = value;
  if ((old & kBSet) && !(value & kBSet)) {
    if (s_.set_written) {
      CommitTime(ParseTime(s_.cmos, value));
    } else {
      s_.last_update_s = Now().s;  // no update cycles ran while SET was on
    }
    for (int reg = 0; reg < static_cast<int>(kCmosSize); ++reg) {
      if (IsTimeReg(static_cast<uint8_t>(reg))) s_.cmos[reg] = 0;
    }
    s_.set_written = false;
  }
  UpdateIrq();
}

void Rtc::UpdateIrq() {
  const uint8_t b = s_.cmos[kRegB];
  const bool level = (s_.cmos[kRegC] & b & (kCPf | kCAf | kCUf)) != 0;
  if (level == s_.irq_asserted) return;
  s_.irq_asserted = level;
  if (irq_) irq_(level);
}

}  // namespace hv::lpc
