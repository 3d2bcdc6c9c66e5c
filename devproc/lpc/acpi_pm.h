// The ACPI fixed hardware registers in I/O space (ACPI 6.x, section 4.8):
// the PM1a event block (PM1_STS, PM1_EN), the PM1a control block (PM1_CNT),
// the power-management timer (PM_TMR) and the FADT reset register. Pure logic:
// no file descriptors, threads or timers; the timer is derived from an
// injected monotonic clock, and the owner asks NextEventNs() when to call
// Advance() (only needed while TMR_EN is set, for TMR_STS).
//
// The platform is "hardware-reduced" in spirit but keeps the legacy fixed
// registers that Linux and Windows expect:
//  - There is no SMI_CMD port: the system is always in ACPI mode, so SCI_EN
//    always reads 1 and the FADT should leave SMI_CMD, ACPI_ENABLE and
//    ACPI_DISABLE zero.
//  - Status sources: TMR_STS (bit 23 of the timer toggled), PWRBTN_STS
//    (PressPowerButton) and WAK_STS. The SCI is asserted while
//    (PM1_STS & PM1_EN) has TMR or PWRBTN set.
//  - Sleep: writing SLP_EN with SLP_TYP == kSlpTypS5 calls on_sleep (the DSDT's
//    \_S5 package must carry kSlpTypS5). Other sleep types are not supported:
//    the system "wakes up" at once (WAK_STS is set, nothing else happens), so
//    a guest waiting for WAK_STS does not hang. The DSDT should only offer \_S5.
//  - The timer is 24 bits wide (FADT TMR_VAL_EXT = 0) and runs at 3.579545 MHz
//    from monotonic time 0, so successive processes on one host agree on it.
//  - Reset register: a write with bit 2 (RST_CPU) set calls on_reset (the FADT
//    RESET_VALUE should be 0x06). Bits 1 and 3 read back.
//  - Other PM1_EN bits (GBL_EN, SLPBTN_EN, RTC_EN) are stored and read back;
//    their status bits are never set. BM_RLD is stored; GBL_RLS is ignored.
//
// Accesses of 1 to 4 bytes at any offset are assembled from the bytes of the
// block as the guest would see them on a little-endian bus; bytes beyond the
// end of the block read 0xff and ignore writes. Each access samples the timer
// once, so a 32-bit PM_TMR read is consistent.
//
// Not thread-safe. Callbacks run synchronously inside the call that caused
// them and must not call back into the same AcpiPm.
#ifndef HV_DEVPROC_LPC_ACPI_PM_H_
#define HV_DEVPROC_LPC_ACPI_PM_H_

#include <cstdint>
#include <functional>
#include <optional>

namespace hv::lpc {

class AcpiPm {
 public:
  using ClockFn = std::function<int64_t()>;  // CLOCK_MONOTONIC in ns
  // The SCI level (true = asserted). Called only on change.
  using IrqFn = std::function<void(bool asserted)>;
  // The guest asked to enter sleep state `slp_typ` (only kSlpTypS5 today).
  using SleepFn = std::function<void(uint8_t slp_typ)>;
  using ResetFn = std::function<void()>;

  enum class Block {
    kPm1aEvt,  // 4 bytes: PM1_STS (+0, 16 bits), PM1_EN (+2, 16 bits)
    kPm1aCnt,  // 2 bytes: PM1_CNT
    kPmTmr,    // 4 bytes: PM_TMR, read-only
    kReset,    // 1 byte: the FADT RESET_REG (e.g. port 0xcf9)
  };
  static constexpr uint32_t BlockLength(Block block) {
    return block == Block::kPm1aEvt   ? 4
           : block == Block::kPm1aCnt ? 2
           : block == Block::kPmTmr   ? 4
                                      : 1;
  }

  // PM1_STS
  static constexpr uint16_t kTmrSts = 1 << 0;
  static constexpr uint16_t kPwrBtnSts = 1 << 8;
  static constexpr uint16_t kWakSts = 1 << 15;
  // PM1_EN
  static constexpr uint16_t kTmrEn = 1 << 0;
  static constexpr uint16_t kGblEn = 1 << 5;
  static constexpr uint16_t kPwrBtnEn = 1 << 8;
  static constexpr uint16_t kSlpBtnEn = 1 << 9;
  static constexpr uint16_t kRtcEn = 1 << 10;
  // PM1_CNT
  static constexpr uint16_t kSciEn = 1 << 0;
  static constexpr uint16_t kBmRld = 1 << 1;
  static constexpr uint16_t kGblRls = 1 << 2;
  static constexpr int kSlpTypShift = 10;
  static constexpr uint16_t kSlpTypMask = 7 << kSlpTypShift;
  static constexpr uint16_t kSlpEn = 1 << 13;
  // Reset register
  static constexpr uint8_t kResetSys = 1 << 1;
  static constexpr uint8_t kResetCpu = 1 << 2;
  static constexpr uint8_t kResetFull = 1 << 3;

  // The SLP_TYP value of S5 (soft off), to be used by the DSDT's \_S5.
  static constexpr uint8_t kSlpTypS5 = 5;
  static constexpr int64_t kTimerHz = 3579545;
  static constexpr uint32_t kTimerMask = 0xffffff;

  // The whole register state. Default-constructed, it is the state after
  // reset except for `timer_periods` (the constructor and Reset sample it).
  struct State {
    uint16_t pm1_sts = 0;   // kTmrSts | kPwrBtnSts | kWakSts only
    uint16_t pm1_en = 0;    // kTmrEn | kGblEn | kPwrBtnEn | kSlpBtnEn | kRtcEn only
    uint16_t pm1_cnt = 0;   // kBmRld | kSlpTypMask only (SCI_EN is implied)
    uint8_t reset_reg = 0;  // kResetSys | kResetFull only
    // Timer ticks since monotonic time 0, divided by 2^23 (bit 23 toggles),
    // as accounted for in TMR_STS.
    int64_t timer_periods = 0;
    bool sci_asserted = false;  // the level last reported through IrqFn

    friend bool operator==(const State& a, const State& b);
    friend bool operator!=(const State& a, const State& b) { return !(a == b); }
  };

  // `monotonic_ns` must not be empty; the callbacks may be.
  AcpiPm(ClockFn monotonic_ns, IrqFn irq, SleepFn on_sleep, ResetFn on_reset);

  // Guest accesses: `offset` within the block, `size` 1 to 4 bytes. Other
  // sizes read as all ones and ignore writes.
  uint32_t Read(Block block, uint32_t offset, uint32_t size);
  void Write(Block block, uint32_t offset, uint32_t size, uint32_t value);

  // The power button was pressed (e.g. a graceful stop request): sets
  // PWRBTN_STS, which raises the SCI if PWRBTN_EN is set.
  void PressPowerButton();

  // The current PM_TMR value (what a guest read would return now).
  uint32_t TimerValue() const;

  // The monotonic time at which Advance() must be called next (TMR_STS is
  // due and TMR_EN is set), or nullopt. Once the SCI is asserted there is no
  // deadline: TMR_STS is then brought up to date when PM1_STS is accessed.
  // Changes after any Read, Write, Advance, PressPowerButton, Reset or
  // Restore: query it again after each.
  std::optional<int64_t> NextEventNs() const;
  // Brings TMR_STS up to the current time and updates the SCI.
  void Advance();

  bool SciAsserted() const { return s_.sci_asserted; }

  // Platform reset: back to the power-on register values.
  void Reset();

  State Save() const { return s_; }
  // Loads `s` (bits that cannot be set are masked). `s.sci_asserted` is taken
  // as the level the outside world currently sees; if the restored registers
  // call for a different level, IrqFn is called.
  void Restore(const State& s);

 private:
  int64_t TimerTicks(int64_t mono_ns) const;
  void Refresh();  // accounts TMR_STS up to now
  void UpdateSci();

  ClockFn monotonic_;
  IrqFn irq_;
  SleepFn on_sleep_;
  ResetFn on_reset_;
  State s_;
};

}  // namespace hv::lpc

#endif  // HV_DEVPROC_LPC_ACPI_PM_H_
