#include "devproc/lpc/acpi_pm.h"

#include <utility>

namespace hv::lpc {
namespace {

constexpr int64_t kNsPerSec = 1000000000;
constexpr int kTimerStatusBit = 23;  // TMR_STS is set whenever this bit toggles

constexpr uint16_t kStsMask = AcpiPm::kTmrSts | AcpiPm::kPwrBtnSts | AcpiPm::kWakSts;
constexpr uint16_t kEnMask =
    AcpiPm::kTmrEn | AcpiPm::kGblEn | AcpiPm::kPwrBtnEn | AcpiPm::kSlpBtnEn | AcpiPm::kRtcEn;
constexpr uint16_t kCntMask = AcpiPm::kBmRld | AcpiPm::kSlpTypMask;
constexpr uint8_t kResetKeptBits = AcpiPm::kResetSys | AcpiPm::kResetFull;
// The status bits that raise the SCI when enabled.
constexpr uint16_t kSciSources = AcpiPm::kTmrSts | AcpiPm::kPwrBtnSts;

// floor(a / b) for b > 0.
__int128 FloorDiv(__int128 a, __int128 b) {
  __int128 q = a / b;
  if (a % b != 0 && a < 0) --q;
  return q;
}

}  // namespace

bool operator==(const AcpiPm::State& a, const AcpiPm::State& b) {
  return a.pm1_sts == b.pm1_sts && a.pm1_en == b.pm1_en && a.pm1_cnt == b.pm1_cnt &&
         a.reset_reg == b.reset_reg && a.timer_periods == b.timer_periods &&
         a.sci_asserted == b.sci_asserted;
}

AcpiPm::AcpiPm(ClockFn monotonic_ns, IrqFn irq, SleepFn on_sleep, ResetFn on_reset)
    : monotonic_(std::move(monotonic_ns)),
      irq_(std::move(irq)),
      on_sleep_(std::move(on_sleep)),
      on_reset_(std::move(on_reset)) {
  s_.timer_periods = TimerTicks(monotonic_()) >> kTimerStatusBit;
}

uint32_t AcpiPm::Read(Block block, uint32_t offset, uint32_t size) {
  if (size < 1 || size > 4) return 0xffffffff;
  uint32_t image = 0;  // the whole block, little-endian
  switch (block) {
    case Block::kPm1aEvt:
      Refresh();
      UpdateSci();
      image = s_.pm1_sts | (uint32_t{s_.pm1_en} << 16);
      break;
    case Block::kPm1aCnt:
      image = kSciEn | s_.pm1_cnt;  // always in ACPI mode; SLP_EN reads 0
      break;
    case Block::kPmTmr:
      image = TimerValue();
      break;
    case Block::kReset:
      image = s_.reset_reg;
      break;
  }
  const uint32_t len = BlockLength(block);
  uint32_t value = 0;
  for (uint32_t i = 0; i < size; ++i) {
    const uint64_t pos = uint64_t{offset} + i;
    const uint32_t byte = pos < len ? (image >> (8 * pos)) & 0xff : 0xff;
    value |= byte << (8 * i);
  }
  return value;
}

void AcpiPm::Write(Block block, uint32_t offset, uint32_t size, uint32_t value) {
  if (size < 1 || size > 4) return;
  const uint32_t len = BlockLength(block);
  uint32_t mask = 0, bits = 0;  // which bytes of the block are written, and with what
  for (uint32_t i = 0; i < size; ++i) {
    const uint64_t pos = uint64_t{offset} + i;
    if (pos >= len) continue;
    mask |= uint32_t{0xff} << (8 * pos);
    bits |= ((value >> (8 * i)) & 0xff) << (8 * pos);
  }
  if (mask == 0) return;
  switch (block) {
    case Block::kPm1aEvt: {
      Refresh();  // a toggle that already happened is cleared by this write
      const uint16_t clear = static_cast<uint16_t>(bits & mask) & kStsMask;
      s_.pm1_sts = static_cast<uint16_t>(s_.pm1_sts & ~clear);
      const uint16_t en_mask = static_cast<uint16_t>(mask >> 16) & kEnMask;
      s_.pm1_en = static_cast<uint16_t>((s_.pm1_en & ~en_mask) | ((bits >> 16) & en_mask));
      UpdateSci();
      return;
    }
    case Block::kPm1aCnt: {
      const uint32_t merged = ((kSciEn | s_.pm1_cnt) & ~mask) | bits;
      s_.pm1_cnt = static_cast<uint16_t>(merged & kCntMask);
      if (bits & kSlpEn) {
        const uint8_t slp_typ = static_cast<uint8_t>((merged & kSlpTypMask) >> kSlpTypShift);
        if (slp_typ == kSlpTypS5) {
          if (on_sleep_) on_sleep_(slp_typ);
        } else {
          // Unsupported sleep state: wake up at once.
          s_.pm1_sts |= kWakSts;
        }
      }
      return;
    }
    case Block::kPmTmr:
      return;  // read-only
    case Block::kReset: {
      const uint8_t v = static_cast<uint8_t>(bits);
      s_.reset_reg = v & kResetKeptBits;
      if ((v & kResetCpu) && on_reset_) on_reset_();
      return;
    }
  }
}

void AcpiPm::PressPowerButton() {
  s_.pm1_sts |= kPwrBtnSts;
  UpdateSci();
}

uint32_t AcpiPm::TimerValue() const {
  return static_cast<uint32_t>(TimerTicks(monotonic_()) & kTimerMask);
}

std::optional<int64_t> AcpiPm::NextEventNs() const {
  if (s_.sci_asserted || !(s_.pm1_en & kTmrEn) || (s_.pm1_sts & kTmrSts)) return std::nullopt;
  // The first nanosecond at which the tick count reaches the next toggle.
  const __int128 tick = static_cast<__int128>(s_.timer_periods + 1) << kTimerStatusBit;
  return static_cast<int64_t>(-FloorDiv(-tick * kNsPerSec, kTimerHz));
}

void AcpiPm::Advance() {
  Refresh();
  UpdateSci();
}

void AcpiPm::Reset() {
  const bool asserted = s_.sci_asserted;
  s_ = State{};
  s_.sci_asserted = asserted;
  s_.timer_periods = TimerTicks(monotonic_()) >> kTimerStatusBit;
  UpdateSci();
}

void AcpiPm::Restore(const State& s) {
  s_ = s;
  s_.pm1_sts &= kStsMask;
  s_.pm1_en &= kEnMask;
  s_.pm1_cnt &= kCntMask;
  s_.reset_reg &= kResetKeptBits;
  UpdateSci();
}

int64_t AcpiPm::TimerTicks(int64_t mono_ns) const {
  return static_cast<int64_t>(FloorDiv(static_cast<__int128>(mono_ns) * kTimerHz, kNsPerSec));
}

void AcpiPm::Refresh() {
  const int64_t periods = TimerTicks(monotonic_()) >> kTimerStatusBit;
  if (periods > s_.timer_periods) s_.pm1_sts |= kTmrSts;
  s_.timer_periods = periods;
}

void AcpiPm::UpdateSci() {
  const bool level = (s_.pm1_sts & s_.pm1_en & kSciSources) != 0;
  if (level == s_.sci_asserted) return;
  s_.sci_asserted = level;
  if (irq_) irq_(level);
}

}  // namespace hv::lpc
