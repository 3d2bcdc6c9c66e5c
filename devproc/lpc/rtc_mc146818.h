// A register-level model of the Motorola MC146818A real-time clock with the
// PC's 128-byte CMOS RAM behind it (ports 0x70 index / 0x71 data). Pure logic:
// no file descriptors, threads or timers. Time comes from two injected clocks:
//  - realtime_ns (host CLOCK_REALTIME) gives the date and time of day. The
//    guest's clock is host time plus an offset; the guest changes the offset by
//    writing the time registers, and the clock keeps running from there.
//  - monotonic_ns (host CLOCK_MONOTONIC) paces the periodic interrupt and
//    turns "the next second boundary" into a deadline the owner can sleep on.
//
// Interrupts: the owner asks NextEventNs() for the monotonic deadline of the
// next event that would raise the IRQ, sleeps until then, and calls Advance().
// The PF, UF and AF flags in register C are set whether or not the matching
// enable bit in register B is on (guests poll them), but without an enable
// they are computed lazily, when register C is read: no deadline is reported
// for them, so an idle RTC costs no wakeups. Likewise, once the IRQ is
// asserted there is no deadline until the guest reads register C, because
// further events could only set flags that are already computed on that read.
// Advance() does constant work after a stall of any length (at most one day's
// worth of alarm comparisons), sets each flag at most once, and does not
// replay the missed events.
//
// Simplifications, all invisible to a driver that follows the datasheet:
//  - With utc == false the offset between UTC and local time is taken once,
//    at construction (localtime_r); the clock then runs linearly like a real
//    RTC, it does not jump at the host's DST changes. DSE is stored but the
//    chip's own (1980s US) daylight-saving rule is not applied.
//  - The day of week is always derived from the date; writes to it are
//    accepted while B.SET is on and read back until SET is cleared, then the
//    computed value is shown again.
//  - The time registers are rendered from the clock in the current DM and
//    24/12 format of register B, so changing the format converts the time
//    (the chip would keep counting the stored bytes in the wrong format).
//  - While B.SET is on, the time registers read back the time at which SET
//    was set (or what the guest wrote since). Clearing SET loads them into
//    the clock only if the guest wrote one of them; otherwise the clock runs
//    on untouched (the chip would have lost the seconds spent with SET on).
//  - The update cycle is instantaneous at the second boundary. UIP in
//    register A reads 1 during the last 244 us before each boundary.
//  - Divider bits DV2-0 = 11x hold the divider chain in reset: the clock
//    stops, and after release the first update comes 500 ms later, as in the
//    datasheet. Any other DV value counts normally (on a PC the time base is
//    always 32.768 kHz).
//  - Reading the index port returns 0xff (it is write-only on PCs). Bit 7 of
//    the index (the NMI mask on PCs) is ignored.
//  - SQWE and the square-wave output are not modelled (nothing is wired to
//    the SQW pin on a PC).
//
// Not thread-safe. Callbacks run synchronously inside the call that caused
// them and must not call back into the same Rtc.
#ifndef HV_DEVPROC_LPC_RTC_MC146818_H_
#define HV_DEVPROC_LPC_RTC_MC146818_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>

namespace hv::lpc {

class Rtc {
 public:
  // Returns the current time in nanoseconds (CLOCK_REALTIME resp.
  // CLOCK_MONOTONIC semantics).
  using ClockFn = std::function<int64_t()>;
  // Called whenever the IRQ output level changes (true = asserted, i.e.
  // register C's IRQF is set). On a PC this is IRQ 8. Called only on change.
  using IrqFn = std::function<void(bool asserted)>;

  // Port offsets (0x70, 0x71 on a PC).
  enum Port : uint8_t {
    kIndexPort = 0,
    kDataPort = 1,
  };

  // CMOS register indices.
  enum Reg : uint8_t {
    kSeconds = 0x00,
    kSecondsAlarm = 0x01,
    kMinutes = 0x02,
    kMinutesAlarm = 0x03,
    kHours = 0x04,
    kHoursAlarm = 0x05,
    kDayOfWeek = 0x06,  // 1 = Sunday
    kDayOfMonth = 0x07,
    kMonth = 0x08,
    kYear = 0x09,
    kRegA = 0x0a,
    kRegB = 0x0b,
    kRegC = 0x0c,
    kRegD = 0x0d,
    kBaseMemLow = 0x15,  // base memory in KB (640)
    kBaseMemHigh = 0x16,
    kExtMemLow = 0x17,  // memory from 1M in KB, up to 0xffff
    kExtMemHigh = 0x18,
    kExtMem2Low = 0x30,  // a copy of 0x17/0x18
    kExtMem2High = 0x31,
    kCentury = 0x32,
    kMem16MLow = 0x34,  // memory from 16M to 4G in 64 KB units
    kMem16MHigh = 0x35,
    kMemAbove4G0 = 0x5b,  // memory above 4G in 64 KB units, 3 bytes, LSB first
    kMemAbove4G1 = 0x5c,
    kMemAbove4G2 = 0x5d,
  };

  // Register A
  static constexpr uint8_t kAUip = 0x80;
  static constexpr uint8_t kADividerMask = 0x70;
  static constexpr uint8_t kADivider32k = 0x20;  // DV2-0 = 010: normal
  static constexpr uint8_t kARateMask = 0x0f;
  // Register B
  static constexpr uint8_t kBSet = 0x80;
  static constexpr uint8_t kBPie = 0x40;
  static constexpr uint8_t kBAie = 0x20;
  static constexpr uint8_t kBUie = 0x10;
  static constexpr uint8_t kBSqwe = 0x08;
  static constexpr uint8_t kBBinary = 0x04;  // DM: 1 = binary, 0 = BCD
  static constexpr uint8_t kB24Hour = 0x02;
  static constexpr uint8_t kBDse = 0x01;
  // Register C
  static constexpr uint8_t kCIrqf = 0x80;
  static constexpr uint8_t kCPf = 0x40;
  static constexpr uint8_t kCAf = 0x20;
  static constexpr uint8_t kCUf = 0x10;
  // Register D
  static constexpr uint8_t kDVrt = 0x80;

  // Values after construction.
  static constexpr uint8_t kInitialRegA = 0x26;      // 32.768 kHz, 1024 Hz rate
  static constexpr uint8_t kInitialRegB = kB24Hour;  // BCD, 24-hour

  static constexpr size_t kCmosSize = 128;
  // UIP reads 1 this long before each second boundary.
  static constexpr int64_t kUipNs = 244141;

  // The whole state, so that a successor process can resume where this one
  // stopped (on the same host: it holds monotonic timestamps). A
  // default-constructed State is not a meaningful clock; Restore only what
  // Save returned.
  struct State {
    uint8_t index = 0;  // 7 bits
    // The CMOS bytes. Registers A (without UIP), B and C (PF/AF/UF only) live
    // at 0x0a-0x0c; the time registers (0x00, 0x02, 0x04, 0x06-0x09, 0x32)
    // hold the bytes written by the guest while B.SET is on and are 0
    // otherwise; 0x0d is unused (register D is constant). The rest is RAM.
    std::array<uint8_t, kCmosSize> cmos{};
    // Guest time = host realtime + offset_s seconds + offset_ns (0 <= offset_ns
    // < 1e9). Split so that any year 0000-9999 the guest may write fits.
    int64_t offset_s = 0;
    int64_t offset_ns = 0;
    // While the divider chain is held in reset (A.DV = 11x), the guest time
    // stands at held_s.000 (0 otherwise).
    int64_t held_s = 0;
    // A time register was written while B.SET is on: clearing SET commits.
    bool set_written = false;
    // The guest second of the last update cycle accounted for in C.UF/AF.
    int64_t last_update_s = 0;
    // Monotonic time at which the divider chain last started counting, and
    // the number of periodic-interrupt periods (at the current rate) since
    // then that are accounted for in C.PF.
    int64_t divider_epoch_ns = 0;
    int64_t periods = 0;
    bool irq_asserted = false;  // the level last reported through IrqFn

    friend bool operator==(const State& a, const State& b);
    friend bool operator!=(const State& a, const State& b) { return !(a == b); }
  };

  // `utc`: the clock shows UTC (true) or the host's local time (false).
  // `irq` may be empty; the clocks must not be. Reads both clocks.
  Rtc(ClockFn realtime_ns, ClockFn monotonic_ns, IrqFn irq, bool utc);

  // Guest accesses; offset is relative to the base port (0 = index, 1 =
  // data). Other offsets read as 0xff and ignore writes.
  uint8_t Read(uint8_t offset);
  void Write(uint8_t offset, uint8_t value);

  // Fills in the memory-size bytes (base, extended, 16M-4G, above 4G), as
  // BIOSes and firmware read them. `below_4g_bytes` is all RAM below 4G
  // counted from address 0; `above_4g_bytes` is RAM from 4G up.
  void SetMemory(uint64_t below_4g_bytes, uint64_t above_4g_bytes);

  // The monotonic time at which Advance() must be called next, or nullopt if
  // no enabled interrupt is pending (see the file comment). Changes after any
  // Read, Write, Advance, Reset or Restore: query it again after each.
  std::optional<int64_t> NextEventNs() const;
  // Brings the flags up to the current monotonic time and updates the IRQ.
  // Harmless to call at any time, early or late.
  void Advance();

  // Current level of the IRQ output (what IrqFn was last told).
  bool IrqAsserted() const { return s_.irq_asserted; }

  // The chip's RESET pin (system reset): clears PIE, AIE, UIE and SQWE in
  // register B and all flags in register C. Time, register A and RAM stay.
  void Reset();

  State Save() const { return s_; }
  // Loads `s` (out-of-range fields are masked/normalized). `s.irq_asserted`
  // is taken as the level the outside world currently sees; if the restored
  // registers call for a different level, IrqFn is called.
  void Restore(const State& s);

 private:
  // A point on the guest's clock: seconds since 1970-01-01 00:00:00 on the
  // clock's own calendar (no leap seconds), plus nanoseconds.
  struct GuestTime {
    int64_t s;
    int64_t ns;  // [0, 1e9)
  };

  bool DividerHeld() const;
  bool UpdatesRunning() const;  // divider counting and B.SET off
  GuestTime Now() const;
  void SetGuestTime(int64_t s, int64_t ns);
  // Writes the time registers for guest second `s` in the format of register
  // B value `b` into out[reg]; the other bytes of `out` are left alone.
  static void RenderTime(int64_t s, uint8_t b, std::array<uint8_t, kCmosSize>& out);
  // The guest second shown by the time registers in `in` (format `b`).
  static int64_t ParseTime(const std::array<uint8_t, kCmosSize>& in, uint8_t b);
  void CommitTime(int64_t s);
  static bool IsTimeReg(uint8_t reg);
  int64_t PeriodTicks() const;  // 0 when the periodic interrupt is off
  int64_t PeriodsAt(int64_t mono_ns) const;
  int64_t PeriodStartNs(int64_t period) const;
  bool AlarmMatchesIn(int64_t first_s, int64_t last_s) const;
  void Refresh();  // accounts PF/UF/AF up to now
  void WriteRegA(uint8_t value);
  void WriteRegB(uint8_t value);
  void UpdateIrq();

  ClockFn realtime_;
  ClockFn monotonic_;
  IrqFn irq_;
  State s_;
};

}  // namespace hv::lpc

#endif  // HV_DEVPROC_LPC_RTC_MC146818_H_
