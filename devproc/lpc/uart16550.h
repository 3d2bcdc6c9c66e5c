// A register-level model of a 16550A UART (National/TI PC16550D), as found at
// the PC's COM ports. Pure logic: no file descriptors, threads or I/O. The
// owner feeds it guest port accesses (Read/Write), backend bytes (Receive),
// and gets transmitted bytes and the interrupt level back through callbacks.
//
// Simplifications, all invisible to a driver that follows the datasheet:
//  - Transmission is instantaneous: THR/TX FIFO is always empty again right
//    after a THR write, so LSR.THRE and LSR.TEMT always read 1 and the THRE
//    interrupt re-arms at once after each THR write.
//  - The character-timeout indication (IIR = 0xCC) is reported as soon as the
//    RX FIFO holds data below the trigger level, not after 4 character times.
//  - Line settings (word length, parity, stop bits, divisor) are stored and
//    read back but do not affect anything; no parity/framing/break errors.
//  - The interrupt output is gated by MCR.OUT2 as on a PC, in loopback mode
//    too (the real chip forces its OUT2 pin inactive in loopback, which on a
//    PC would also silence the IRQ; we keep interrupts usable there).
//
// Not thread-safe. Callbacks run synchronously inside the call that caused
// them and must not call back into the same Uart16550.
#ifndef HV_DEVPROC_LPC_UART16550_H_
#define HV_DEVPROC_LPC_UART16550_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>

namespace hv::lpc {

class Uart16550 {
 public:
  // Called for every byte the guest transmits (THR write, not in loopback).
  using TxFn = std::function<void(uint8_t byte)>;
  // Called whenever the interrupt output level changes (true = asserted).
  // The caller maps it to an IRQ line (COM1: IRQ 4). Level, not edge; called
  // only on change.
  using IrqFn = std::function<void(bool asserted)>;

  // Register offsets from the base port.
  enum Reg : uint8_t {
    kRbrThrDll = 0,  // RBR (read) / THR (write); DLL when LCR.DLAB = 1
    kIerDlm = 1,     // IER; DLM when LCR.DLAB = 1
    kIirFcr = 2,     // IIR (read) / FCR (write)
    kLcr = 3,
    kMcr = 4,
    kLsr = 5,
    kMsr = 6,
    kScr = 7,
  };

  static constexpr size_t kFifoSize = 16;

  // The whole register state, so that a successor process can resume where
  // this one stopped. Default-constructed, it is the state after reset.
  struct State {
    uint8_t ier = 0;        // bits 3:0 only
    uint8_t lcr = 0;
    uint8_t mcr = 0;        // bits 4:0 only
    uint8_t fcr = 0;        // remembered bits: 0 (FIFO enable), 3, 7:6
    uint8_t lsr_errors = 0;  // latched LSR.OE (bit 1); cleared by reading LSR
    uint8_t msr_delta = 0;  // MSR bits 3:0; cleared by reading MSR
    uint8_t scr = 0;
    uint8_t dll = 0;
    uint8_t dlm = 0;
    bool thre_pending = false;  // THRE interrupt latched (reported if IER.ETBEI)
    uint8_t rx_count = 0;       // bytes in rx[], oldest first
    std::array<uint8_t, kFifoSize> rx{};
    bool irq_asserted = false;  // the level last reported through IrqFn

    friend bool operator==(const State& a, const State& b);
    friend bool operator!=(const State& a, const State& b) { return !(a == b); }
  };

  // Either callback may be empty.
  Uart16550(TxFn tx, IrqFn irq);

  // Guest accesses; offset is relative to the base port. Offsets > 7 read as
  // 0xff and ignore writes.
  uint8_t Read(uint8_t offset);
  void Write(uint8_t offset, uint8_t value);

  // Bytes arriving from the backend (stdin, a socket). Returns how many were
  // accepted: the receive FIFO holds 16 bytes (1 when FIFOs are off), and in
  // loopback mode the serial input is disconnected so nothing is accepted.
  // The caller keeps the rest and retries after the guest reads (back-pressure;
  // nothing is dropped).
  size_t Receive(const uint8_t* data, size_t len);
  size_t RxSpace() const;

  // LSR as a read would return it, when that read would change nothing (no
  // latched error to clear) and no THR write could change it (not in loopback);
  // nullopt otherwise. Lets the core answer LSR polls without asking us.
  std::optional<uint8_t> QuietLsr() const;

  // Current level of the interrupt output (what IrqFn was last told).
  bool IrqAsserted() const { return s_.irq_asserted; }

  // Master reset: back to State{}. Deasserts the interrupt if it was asserted.
  void Reset();

  State Save() const { return s_; }
  // Loads `s` (out-of-range fields are masked/clamped). `s.irq_asserted` is
  // taken as the level the outside world currently sees; if the restored
  // registers call for a different level, IrqFn is called.
  void Restore(const State& s);

 private:
  uint8_t InterruptId() const;  // IIR bits 3:0 (0x1 = none pending)
  uint8_t ModemStatusLines() const;  // MSR bits 7:4
  bool FifoEnabled() const { return s_.fcr & 0x01; }
  size_t RxCapacity() const { return FifoEnabled() ? kFifoSize : 1; }
  void PushRx(uint8_t byte);  // from the receive shift register, with overrun
  void ClearRx();
  void WriteFcr(uint8_t value);
  void WriteMcr(uint8_t value);
  void UpdateIrq();

  TxFn tx_;
  IrqFn irq_;
  State s_;
};

}  // namespace hv::lpc

#endif  // HV_DEVPROC_LPC_UART16550_H_
