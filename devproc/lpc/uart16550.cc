#include "devproc/lpc/uart16550.h"

#include <algorithm>
#include <utility>

namespace hv::lpc {
namespace {

// LCR
constexpr uint8_t kLcrDlab = 0x80;

// IER
constexpr uint8_t kIerErbfi = 0x01;  // received data available
constexpr uint8_t kIerEtbei = 0x02;  // transmitter holding register empty
constexpr uint8_t kIerElsi = 0x04;   // receiver line status
constexpr uint8_t kIerEdssi = 0x08;  // modem status
constexpr uint8_t kIerMask = 0x0f;

// IIR bits 3:0, in priority order.
constexpr uint8_t kIidLineStatus = 0x06;
constexpr uint8_t kIidRxData = 0x04;
constexpr uint8_t kIidCharTimeout = 0x0c;
constexpr uint8_t kIidThre = 0x02;
constexpr uint8_t kIidModemStatus = 0x00;
constexpr uint8_t kIidNone = 0x01;
constexpr uint8_t kIirFifosEnabled = 0xc0;

// FCR
constexpr uint8_t kFcrEnable = 0x01;
constexpr uint8_t kFcrClearRx = 0x02;
// Bit 2 clears the TX FIFO, which is always empty here.
constexpr uint8_t kFcrKeptBits = 0xc9;  // enable, DMA mode, trigger level

// MCR
constexpr uint8_t kMcrDtr = 0x01;
constexpr uint8_t kMcrRts = 0x02;
constexpr uint8_t kMcrOut1 = 0x04;
constexpr uint8_t kMcrOut2 = 0x08;
constexpr uint8_t kMcrLoop = 0x10;
constexpr uint8_t kMcrMask = 0x1f;

// LSR
constexpr uint8_t kLsrDr = 0x01;
constexpr uint8_t kLsrOe = 0x02;
constexpr uint8_t kLsrThre = 0x20;
constexpr uint8_t kLsrTemt = 0x40;

// MSR
constexpr uint8_t kMsrDcts = 0x01;
constexpr uint8_t kMsrDdsr = 0x02;
constexpr uint8_t kMsrTeri = 0x04;
constexpr uint8_t kMsrDdcd = 0x08;
constexpr uint8_t kMsrCts = 0x10;
constexpr uint8_t kMsrDsr = 0x20;
constexpr uint8_t kMsrRi = 0x40;
constexpr uint8_t kMsrDcd = 0x80;
constexpr uint8_t kMsrDeltaMask = 0x0f;
// Outside loopback: a null-modem-like peer that is always ready.
constexpr uint8_t kMsrLinesNormal = kMsrCts | kMsrDsr | kMsrDcd;

constexpr uint8_t kRxTriggerLevels[4] = {1, 4, 8, 14};

}  // namespace

bool operator==(const Uart16550::State& a, const Uart16550::State& b) {
  return a.ier == b.ier && a.lcr == b.lcr && a.mcr == b.mcr && a.fcr == b.fcr &&
         a.lsr_errors == b.lsr_errors && a.msr_delta == b.msr_delta &&
         a.scr == b.scr && a.dll == b.dll && a.dlm == b.dlm &&
         a.thre_pending == b.thre_pending && a.rx_count == b.rx_count &&
         std::equal(a.rx.begin(), a.rx.begin() + std::min<size_t>(a.rx_count, a.rx.size()),
                    b.rx.begin()) &&
         a.irq_asserted == b.irq_asserted;
}

Uart16550::Uart16550(TxFn tx, IrqFn irq) : tx_(std::move(tx)), irq_(std::move(irq)) {}

uint8_t Uart16550::Read(uint8_t offset) {
  const bool dlab = s_.lcr & kLcrDlab;
  uint8_t value = 0xff;
  switch (offset) {
    case kRbrThrDll:
      if (dlab) return s_.dll;
      value = 0;  // empty RBR
      if (s_.rx_count > 0) {
        value = s_.rx[0];
        std::copy(s_.rx.begin() + 1, s_.rx.begin() + s_.rx_count, s_.rx.begin());
        s_.rx[--s_.rx_count] = 0;  // keep Save() canonical
      }
      break;
    case kIerDlm:
      return dlab ? s_.dlm : s_.ier;
    case kIirFcr: {
      const uint8_t id = InterruptId();
      // Reading IIR acknowledges a THRE interrupt, but only if it is the one
      // being reported.
      if (id == kIidThre) s_.thre_pending = false;
      value = id | (FifoEnabled() ? kIirFifosEnabled : 0);
      break;
    }
    case kLcr:
      return s_.lcr;
    case kMcr:
      return s_.mcr;
    case kLsr:
      value = (s_.rx_count > 0 ? kLsrDr : 0) | s_.lsr_errors | kLsrThre | kLsrTemt;
      s_.lsr_errors = 0;
      break;
    case kMsr:
      value = ModemStatusLines() | s_.msr_delta;
      s_.msr_delta = 0;
      break;
    case kScr:
      return s_.scr;
    default:
      return 0xff;
  }
  UpdateIrq();
  return value;
}

void Uart16550::Write(uint8_t offset, uint8_t value) {
  const bool dlab = s_.lcr & kLcrDlab;
  switch (offset) {
    case kRbrThrDll:
      if (dlab) {
        s_.dll = value;
        return;
      }
      // Writing THR acknowledges the THRE interrupt; the byte leaves at once,
      // so THR is empty again and the interrupt re-arms.
      s_.thre_pending = true;
      if (s_.mcr & kMcrLoop) {
        PushRx(value);
      } else if (tx_) {
        tx_(value);
      }
      break;
    case kIerDlm: {
      if (dlab) {
        s_.dlm = value;
        return;
      }
      const uint8_t old = s_.ier;
      s_.ier = value & kIerMask;
      // Enabling ETBEI while THR is empty (it always is) raises THRE.
      if (!(old & kIerEtbei) && (s_.ier & kIerEtbei)) s_.thre_pending = true;
      break;
    }
    case kIirFcr:
      WriteFcr(value);
      break;
    case kLcr:
      s_.lcr = value;
      return;
    case kMcr:
      WriteMcr(value & kMcrMask);
      break;
    case kScr:
      s_.scr = value;
      return;
    default:  // LSR, MSR (factory test only), out of range
      return;
  }
  UpdateIrq();
}

size_t Uart16550::Receive(const uint8_t* data, size_t len) {
  const size_t n = std::min(len, RxSpace());
  for (size_t i = 0; i < n; ++i) PushRx(data[i]);
  if (n > 0) UpdateIrq();
  return n;
}

size_t Uart16550::RxSpace() const {
  if (s_.mcr & kMcrLoop) return 0;  // serial input disconnected
  return RxCapacity() - s_.rx_count;
}

std::optional<uint8_t> Uart16550::QuietLsr() const {
  if (s_.lsr_errors != 0 || (s_.mcr & kMcrLoop)) return std::nullopt;
  return (s_.rx_count > 0 ? kLsrDr : 0) | kLsrThre | kLsrTemt;
}

void Uart16550::Reset() {
  const bool asserted = s_.irq_asserted;
  s_ = State{};
  s_.irq_asserted = asserted;
  UpdateIrq();
}

void Uart16550::Restore(const State& s) {
  s_ = s;
  s_.ier &= kIerMask;
  s_.mcr &= kMcrMask;
  s_.fcr &= kFcrKeptBits;
  s_.lsr_errors &= kLsrOe;
  s_.msr_delta &= kMsrDeltaMask;
  s_.rx_count = static_cast<uint8_t>(std::min<size_t>(s_.rx_count, RxCapacity()));
  std::fill(s_.rx.begin() + s_.rx_count, s_.rx.end(), 0);
  UpdateIrq();
}

uint8_t Uart16550::InterruptId() const {
  const uint8_t ier = s_.ier;
  if ((ier & kIerElsi) && s_.lsr_errors) return kIidLineStatus;
  if ((ier & kIerErbfi) && s_.rx_count > 0) {
    if (!FifoEnabled()) return kIidRxData;
    const uint8_t trigger = kRxTriggerLevels[s_.fcr >> 6];
    return s_.rx_count >= trigger ? kIidRxData : kIidCharTimeout;
  }
  if ((ier & kIerEtbei) && s_.thre_pending) return kIidThre;
  if ((ier & kIerEdssi) && s_.msr_delta) return kIidModemStatus;
  return kIidNone;
}

uint8_t Uart16550::ModemStatusLines() const {
  if (!(s_.mcr & kMcrLoop)) return kMsrLinesNormal;
  const uint8_t mcr = s_.mcr;
  return ((mcr & kMcrRts) ? kMsrCts : 0) | ((mcr & kMcrDtr) ? kMsrDsr : 0) |
         ((mcr & kMcrOut1) ? kMsrRi : 0) | ((mcr & kMcrOut2) ? kMsrDcd : 0);
}

void Uart16550::PushRx(uint8_t byte) {
  if (s_.rx_count < RxCapacity()) {
    s_.rx[s_.rx_count++] = byte;
  } else if (FifoEnabled()) {
    s_.lsr_errors |= kLsrOe;  // the new byte is lost, the FIFO is intact
  } else {
    s_.lsr_errors |= kLsrOe;  // the new byte overwrites the unread one
    s_.rx[0] = byte;
  }
}

void Uart16550::ClearRx() {
  s_.rx_count = 0;
  s_.rx.fill(0);
}

void Uart16550::WriteFcr(uint8_t value) {
  const bool enable = value & kFcrEnable;
  if (enable != FifoEnabled()) {
    // Switching between FIFO and character mode empties the FIFOs.
    ClearRx();
  }
  if (!enable) {
    // The other bits are only programmed while FCR0 is written as 1.
    s_.fcr &= static_cast<uint8_t>(~kFcrEnable);
    return;
  }
  s_.fcr = value & kFcrKeptBits;
  if (value & kFcrClearRx) ClearRx();
}

void Uart16550::WriteMcr(uint8_t value) {
  const uint8_t before = ModemStatusLines();
  s_.mcr = value;
  const uint8_t after = ModemStatusLines();
  const uint8_t changed = before ^ after;
  if (changed & kMsrCts) s_.msr_delta |= kMsrDcts;
  if (changed & kMsrDsr) s_.msr_delta |= kMsrDdsr;
  if ((before & kMsrRi) && !(after & kMsrRi)) s_.msr_delta |= kMsrTeri;
  if (changed & kMsrDcd) s_.msr_delta |= kMsrDdcd;
}

void Uart16550::UpdateIrq() {
  const bool level = InterruptId() != kIidNone && (s_.mcr & kMcrOut2);
  if (level == s_.irq_asserted) return;
  s_.irq_asserted = level;
  if (irq_) irq_(level);
}

}  // namespace hv::lpc
