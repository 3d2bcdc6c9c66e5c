#include "devproc/lpc/uart16550.h"

#include <algorithm>
#include <cstdint>
#include <deque>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace hv::lpc {
namespace {

using State = Uart16550::State;

constexpr uint8_t kRbr = Uart16550::kRbrThrDll;
constexpr uint8_t kThr = Uart16550::kRbrThrDll;
constexpr uint8_t kDll = Uart16550::kRbrThrDll;
constexpr uint8_t kIer = Uart16550::kIerDlm;
constexpr uint8_t kDlm = Uart16550::kIerDlm;
constexpr uint8_t kIir = Uart16550::kIirFcr;
constexpr uint8_t kFcr = Uart16550::kIirFcr;
constexpr uint8_t kLcr = Uart16550::kLcr;
constexpr uint8_t kMcr = Uart16550::kMcr;
constexpr uint8_t kLsr = Uart16550::kLsr;
constexpr uint8_t kMsr = Uart16550::kMsr;
constexpr uint8_t kScr = Uart16550::kScr;

// IIR values (FIFO-enabled forms have bits 7:6 set).
constexpr uint8_t kIirNone = 0x01;
constexpr uint8_t kIirLineStatus = 0x06;
constexpr uint8_t kIirRxData = 0x04;
constexpr uint8_t kIirTimeout = 0x0c;
constexpr uint8_t kIirThre = 0x02;
constexpr uint8_t kIirModem = 0x00;
constexpr uint8_t kIirFifo = 0xc0;

constexpr uint8_t kMcrDtr = 0x01, kMcrRts = 0x02, kMcrOut1 = 0x04, kMcrOut2 = 0x08,
                  kMcrLoop = 0x10;

class UartTest : public ::testing::Test {
 protected:
  size_t Receive(const std::string& s) {
    return uart_.Receive(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  }
  std::string ReadRx(size_t n) {
    std::string out;
    for (size_t i = 0; i < n; ++i) out.push_back(static_cast<char>(uart_.Read(kRbr)));
    return out;
  }
  std::string Tx() const { return std::string(tx_.begin(), tx_.end()); }

  std::vector<uint8_t> tx_;
  std::vector<bool> irq_;  // every IrqFn call, in order
  Uart16550 uart_{[this](uint8_t b) { tx_.push_back(b); },
                  [this](bool asserted) { irq_.push_back(asserted); }};
};

// Checks the register-level invariants of `u` without disturbing it (reads
// with side effects go to a copy made through Save/Restore).
::testing::AssertionResult Consistent(const Uart16550& u) {
  const State s = u.Save();
  const bool fifo = s.fcr & 0x01;
  const bool loop = s.mcr & kMcrLoop;
  const size_t cap = fifo ? 16 : 1;
  if (s.rx_count > cap) return ::testing::AssertionFailure() << "rx_count " << int(s.rx_count);
  if (s.ier & 0xf0) return ::testing::AssertionFailure() << "ier " << int(s.ier);
  if (s.mcr & 0xe0) return ::testing::AssertionFailure() << "mcr " << int(s.mcr);
  if (u.RxSpace() != (loop ? 0 : cap - s.rx_count))
    return ::testing::AssertionFailure() << "RxSpace " << u.RxSpace();
  if (u.IrqAsserted() != s.irq_asserted) return ::testing::AssertionFailure() << "IrqAsserted";

  Uart16550 probe(nullptr, nullptr);
  probe.Restore(s);
  if (probe.Save() != s) return ::testing::AssertionFailure() << "Restore(Save()) differs";
  // QuietLsr: offered exactly when reading LSR changes nothing and THR cannot
  // change it, and then it is what the read returns.
  if (std::optional<uint8_t> quiet = u.QuietLsr()) {
    Uart16550 lsr_probe(nullptr, nullptr);
    lsr_probe.Restore(s);
    const uint8_t lsr = lsr_probe.Read(kLsr);
    if (lsr != *quiet || lsr_probe.Save() != s || loop)
      return ::testing::AssertionFailure() << "QuietLsr " << int(*quiet) << ", LSR " << int(lsr);
  } else if (!loop && s.lsr_errors == 0) {
    return ::testing::AssertionFailure() << "QuietLsr withheld in a quiet state";
  }
  probe.Write(kLcr, s.lcr & 0x7f);
  const uint8_t ier = probe.Read(kIer);
  if (ier != s.ier) return ::testing::AssertionFailure() << "IER reads " << int(ier);
  const uint8_t iir = probe.Read(kIir);
  if (iir & 0x30) return ::testing::AssertionFailure() << "IIR " << int(iir);
  if ((iir & 0xc0) != (fifo ? 0xc0 : 0)) return ::testing::AssertionFailure() << "IIR " << int(iir);
  const uint8_t id = iir & 0x0f;
  if (id != kIirNone && id != kIirLineStatus && id != kIirRxData && id != kIirThre &&
      id != kIirModem && !(fifo && id == kIirTimeout))
    return ::testing::AssertionFailure() << "IIR " << int(iir);
  const bool expect_irq = id != kIirNone && (s.mcr & kMcrOut2);
  if (s.irq_asserted != expect_irq)
    return ::testing::AssertionFailure() << "irq " << s.irq_asserted << " with IIR " << int(iir);
  const uint8_t lsr = probe.Read(kLsr);
  if ((lsr & 0x01) != (s.rx_count > 0) || (lsr & 0x60) != 0x60 || (lsr & 0x9c))
    return ::testing::AssertionFailure() << "LSR " << int(lsr);
  const uint8_t msr = probe.Read(kMsr);
  if (!loop && (msr & 0xf0) != 0xb0) return ::testing::AssertionFailure() << "MSR " << int(msr);
  return ::testing::AssertionSuccess();
}

TEST_F(UartTest, QuietLsrOnlyWhileReadingItChangesNothing) {
  EXPECT_EQ(uart_.QuietLsr(), std::optional<uint8_t>(0x60));
  Receive("a");
  EXPECT_EQ(uart_.QuietLsr(), std::optional<uint8_t>(0x61));
  uart_.Write(kMcr, kMcrLoop);
  EXPECT_EQ(uart_.QuietLsr(), std::nullopt) << "in loopback THR writes reach RBR";
  for (int i = 0; i < 2; ++i) uart_.Write(kThr, 'x');  // FIFOs off: the second overruns
  EXPECT_EQ(uart_.QuietLsr(), std::nullopt);
  uart_.Write(kMcr, 0);
  EXPECT_EQ(uart_.QuietLsr(), std::nullopt) << "an overrun is latched until LSR is read";
  EXPECT_EQ(uart_.Read(kLsr) & 0x02, 0x02);
  EXPECT_EQ(uart_.QuietLsr(), std::optional<uint8_t>(0x61));
  EXPECT_TRUE(Consistent(uart_));
}

TEST_F(UartTest, ResetStateMatchesDatasheet) {
  EXPECT_EQ(uart_.Read(kIer), 0);
  EXPECT_EQ(uart_.Read(kIir), kIirNone);
  EXPECT_EQ(uart_.Read(kLcr), 0);
  EXPECT_EQ(uart_.Read(kMcr), 0);
  EXPECT_EQ(uart_.Read(kLsr), 0x60);
  EXPECT_EQ(uart_.Read(kMsr), 0xb0);
  EXPECT_FALSE(uart_.IrqAsserted());
  EXPECT_TRUE(irq_.empty());
}

TEST_F(UartTest, ScratchRegisterRoundTrip) {
  for (int v = 0; v < 256; ++v) {
    uart_.Write(kScr, static_cast<uint8_t>(v));
    EXPECT_EQ(uart_.Read(kScr), v);
  }
  EXPECT_TRUE(tx_.empty());
  EXPECT_TRUE(irq_.empty());
}

TEST_F(UartTest, DlabSelectsDivisorLatchAtOffsetsZeroAndOne) {
  uart_.Write(kLcr, 0x83);  // DLAB, 8N1
  uart_.Write(kDll, 0x0c);
  uart_.Write(kDlm, 0x34);
  EXPECT_EQ(uart_.Read(kDll), 0x0c);
  EXPECT_EQ(uart_.Read(kDlm), 0x34);
  EXPECT_TRUE(tx_.empty()) << "a DLL write must not transmit";

  uart_.Write(kLcr, 0x03);
  EXPECT_EQ(uart_.Read(kIer), 0) << "DLM write leaked into IER";
  uart_.Write(kIer, 0x05);
  uart_.Write(kThr, 'x');
  EXPECT_EQ(Tx(), "x");

  uart_.Write(kLcr, 0x83);
  EXPECT_EQ(uart_.Read(kDll), 0x0c) << "THR write leaked into DLL";
  EXPECT_EQ(uart_.Read(kDlm), 0x34) << "IER write leaked into DLM";
  EXPECT_EQ(uart_.Read(kLcr), 0x83);
  uart_.Write(kLcr, 0x03);
  EXPECT_EQ(uart_.Read(kIer), 0x05);
}

TEST_F(UartTest, ThrWritesGoToTxFnInOrder) {
  for (char c : std::string("hello\n")) uart_.Write(kThr, static_cast<uint8_t>(c));
  EXPECT_EQ(Tx(), "hello\n");
  EXPECT_EQ(uart_.Read(kLsr) & 0x60, 0x60) << "THRE and TEMT stay set";
}

TEST_F(UartTest, IerKeepsOnlyLowFourBits) {
  uart_.Write(kIer, 0xff);
  EXPECT_EQ(uart_.Read(kIer), 0x0f);
}

TEST_F(UartTest, RxFifoKeepsOrderAndRefusesSeventeenthByte) {
  uart_.Write(kFcr, 0x01);
  EXPECT_EQ(uart_.RxSpace(), 16u);
  EXPECT_EQ(Receive("0123456789abcdefXYZ"), 16u);
  EXPECT_EQ(uart_.RxSpace(), 0u);
  EXPECT_EQ(Receive("X"), 0u) << "17th byte must be refused, not dropped";
  EXPECT_EQ(uart_.Read(kLsr) & 0x02, 0) << "back-pressure is no overrun";
  EXPECT_EQ(ReadRx(3), "012");
  EXPECT_EQ(uart_.RxSpace(), 3u);
  EXPECT_EQ(Receive("XYZW"), 3u);
  EXPECT_EQ(ReadRx(16), "3456789abcdefXYZ");
  EXPECT_EQ(uart_.Read(kLsr) & 0x01, 0);
}

TEST_F(UartTest, RxWithoutFifoHoldsOneByte) {
  EXPECT_EQ(uart_.RxSpace(), 1u);
  EXPECT_EQ(Receive("ab"), 1u) << "2nd byte must be refused with FIFOs off";
  EXPECT_EQ(Receive("b"), 0u);
  EXPECT_EQ(ReadRx(1), "a");
  EXPECT_EQ(Receive("b"), 1u);
  EXPECT_EQ(ReadRx(1), "b");
}

TEST_F(UartTest, ReceiveOfNothingIsHarmless) {
  EXPECT_EQ(uart_.Receive(nullptr, 0), 0u);
  EXPECT_EQ(uart_.Read(kLsr), 0x60);
}

TEST_F(UartTest, LsrDataReadyFollowsReceiveBuffer) {
  uart_.Write(kFcr, 0x01);
  EXPECT_EQ(uart_.Read(kLsr), 0x60);
  Receive("ab");
  EXPECT_EQ(uart_.Read(kLsr), 0x61);
  ReadRx(1);
  EXPECT_EQ(uart_.Read(kLsr), 0x61);
  ReadRx(1);
  EXPECT_EQ(uart_.Read(kLsr), 0x60);
  EXPECT_EQ(uart_.Read(kRbr), 0) << "empty RBR reads 0";
  EXPECT_EQ(uart_.Read(kLsr), 0x60);
}

TEST_F(UartTest, IirReportsFifoEnabledInTopBitsOnly) {
  EXPECT_EQ(uart_.Read(kIir), kIirNone);
  // Linux probes for a 16750 with FCR bit 5; a 16550A must not echo it in IIR.
  uart_.Write(kFcr, 0x21);
  EXPECT_EQ(uart_.Read(kIir), kIirFifo | kIirNone);
  uart_.Write(kFcr, 0x00);
  EXPECT_EQ(uart_.Read(kIir), kIirNone);
}

TEST_F(UartTest, IirPrioritiesLineStatusThenDataThenThreThenModem) {
  uart_.Write(kFcr, 0x01);  // FIFO, trigger 1
  // Loopback with OUT2: CTS and DSR drop (delta bits), DCD stays.
  uart_.Write(kMcr, kMcrLoop | kMcrOut2);
  for (int i = 0; i < 17; ++i) uart_.Write(kThr, static_cast<uint8_t>('A' + i));  // overrun
  uart_.Write(kIer, 0x0f);

  EXPECT_EQ(uart_.Read(kIir), kIirFifo | kIirLineStatus);
  EXPECT_EQ(uart_.Read(kIir), kIirFifo | kIirLineStatus) << "IIR read must not clear RLS";
  EXPECT_EQ(uart_.Read(kLsr), 0x63);  // DR | OE | THRE | TEMT, clears OE
  EXPECT_EQ(uart_.Read(kLsr), 0x61);
  EXPECT_EQ(uart_.Read(kIir), kIirFifo | kIirRxData);
  EXPECT_EQ(ReadRx(16), "ABCDEFGHIJKLMNOP") << "overrun loses the new byte, not the FIFO";
  EXPECT_EQ(uart_.Read(kIir), kIirFifo | kIirThre);  // and clears it
  EXPECT_EQ(uart_.Read(kIir), kIirFifo | kIirModem);
  EXPECT_EQ(uart_.Read(kMsr), 0x80 | 0x03);  // DCD; DCTS, DDSR
  EXPECT_EQ(uart_.Read(kIir), kIirFifo | kIirNone);
  EXPECT_TRUE(tx_.empty());
}

TEST_F(UartTest, CharacterTimeoutBelowTriggerAndDataAvailableAtTrigger) {
  uart_.Write(kFcr, 0x81);  // FIFO, trigger 8
  uart_.Write(kIer, 0x01);
  Receive("abc");
  EXPECT_EQ(uart_.Read(kIir), kIirFifo | kIirTimeout);
  Receive("defgh");
  EXPECT_EQ(uart_.Read(kIir), kIirFifo | kIirRxData);
  ReadRx(1);
  EXPECT_EQ(uart_.Read(kIir), kIirFifo | kIirTimeout) << "dropped below trigger";
  ReadRx(7);
  EXPECT_EQ(uart_.Read(kIir), kIirFifo | kIirNone);

  const struct {
    uint8_t fcr;
    int trigger;
  } kLevels[] = {{0x01, 1}, {0x41, 4}, {0x81, 8}, {0xc1, 14}};
  for (const auto& [fcr, trigger] : kLevels) {
    uart_.Write(kFcr, fcr | 0x02);  // and clear RX
    for (int n = 1; n <= 16; ++n) {
      ASSERT_EQ(Receive("z"), 1u);
      EXPECT_EQ(uart_.Read(kIir), kIirFifo | (n >= trigger ? kIirRxData : kIirTimeout))
          << "trigger " << trigger << " count " << n;
    }
  }
}

TEST_F(UartTest, NonFifoModeReportsDataAvailableWithoutTimeout) {
  uart_.Write(kIer, 0x01);
  Receive("a");
  EXPECT_EQ(uart_.Read(kIir), kIirRxData);
  ReadRx(1);
  EXPECT_EQ(uart_.Read(kIir), kIirNone);
}

TEST_F(UartTest, EnablingEtbeiWithEmptyThrRaisesThreInterrupt) {
  EXPECT_EQ(uart_.Read(kIir), kIirNone);
  uart_.Write(kIer, 0x02);
  EXPECT_EQ(uart_.Read(kIir), kIirThre);
  // Re-enabling requires a 0 -> 1 transition.
  uart_.Write(kIer, 0x02);
  EXPECT_EQ(uart_.Read(kIir), kIirNone);
  uart_.Write(kIer, 0x00);
  uart_.Write(kIer, 0x02);
  EXPECT_EQ(uart_.Read(kIir), kIirThre);
}

TEST_F(UartTest, ReadingIirClearsThreInterruptOnlyWhenReported) {
  uart_.Write(kIer, 0x03);
  EXPECT_EQ(uart_.Read(kIir), kIirThre);
  EXPECT_EQ(uart_.Read(kIir), kIirNone) << "IIR read acknowledged THRE";

  uart_.Write(kThr, 'x');  // THR empties at once: THRE again
  Receive("a");            // but data outranks it
  EXPECT_EQ(uart_.Read(kIir), kIirRxData);
  EXPECT_EQ(uart_.Read(kIir), kIirRxData);
  ReadRx(1);
  EXPECT_EQ(uart_.Read(kIir), kIirThre) << "THRE survived IIR reads that reported RX";
  EXPECT_EQ(uart_.Read(kIir), kIirNone);
}

TEST_F(UartTest, ThrWriteRearmsThreInterruptForNextByte) {
  uart_.Write(kIer, 0x02);
  EXPECT_EQ(uart_.Read(kIir), kIirThre);
  EXPECT_EQ(uart_.Read(kIir), kIirNone);
  uart_.Write(kThr, 'a');
  EXPECT_EQ(uart_.Read(kIir), kIirThre);
}

TEST_F(UartTest, IrqCallbackFiresOnlyOnLevelChange) {
  uart_.Write(kMcr, kMcrOut2);
  EXPECT_TRUE(irq_.empty());
  uart_.Write(kIer, 0x02);  // THRE
  EXPECT_EQ(irq_, (std::vector<bool>{true}));
  uart_.Write(kIer, 0x03);
  Receive("a");  // higher priority source: level unchanged
  uart_.Write(kThr, 'b');
  EXPECT_EQ(irq_, (std::vector<bool>{true}));
  ReadRx(1);
  EXPECT_EQ(uart_.Read(kIir), kIirThre);
  EXPECT_EQ(irq_, (std::vector<bool>{true, false}));
  uart_.Write(kThr, 'c');
  uart_.Write(kThr, 'd');
  EXPECT_EQ(irq_, (std::vector<bool>{true, false, true}));
  uart_.Write(kIer, 0x00);
  EXPECT_EQ(irq_, (std::vector<bool>{true, false, true, false}));
  EXPECT_FALSE(uart_.IrqAsserted());
}

TEST_F(UartTest, IrqOutputIsGatedByOut2) {
  uart_.Write(kMcr, kMcrDtr | kMcrRts);
  uart_.Write(kIer, 0x01);
  Receive("a");
  EXPECT_EQ(uart_.Read(kIir), kIirRxData) << "pending internally";
  EXPECT_TRUE(irq_.empty()) << "but not on the pin without OUT2";
  uart_.Write(kMcr, kMcrDtr | kMcrRts | kMcrOut2);
  EXPECT_EQ(irq_, (std::vector<bool>{true}));
  uart_.Write(kMcr, kMcrDtr | kMcrRts);
  EXPECT_EQ(irq_, (std::vector<bool>{true, false}));
  uart_.Write(kMcr, kMcrDtr | kMcrRts | kMcrOut2);
  ReadRx(1);
  EXPECT_EQ(irq_, (std::vector<bool>{true, false, true, false}));
}

TEST_F(UartTest, MsrOutsideLoopbackReportsPeerReady) {
  EXPECT_EQ(uart_.Read(kMsr), 0xb0);
  uart_.Write(kMcr, kMcrDtr | kMcrRts | kMcrOut1 | kMcrOut2);
  EXPECT_EQ(uart_.Read(kMsr), 0xb0) << "outputs don't loop back outside loopback";
}

TEST_F(UartTest, LoopbackRoutesThrToReceiverAndMcrToMsr) {
  uart_.Write(kFcr, 0x01);
  // Linux's autoconfig check: LOOP | RTS | OUT2 must read back as CTS | DCD.
  uart_.Write(kMcr, kMcrLoop | kMcrRts | kMcrOut2);
  EXPECT_EQ(uart_.Read(kMsr) & 0xf0, 0x90);
  uart_.Write(kMcr, kMcrLoop | kMcrDtr | kMcrRts | kMcrOut1 | kMcrOut2);
  EXPECT_EQ(uart_.Read(kMsr), 0xf0 | 0x02);  // DSR rose
  uart_.Write(kMcr, kMcrLoop);
  EXPECT_EQ(uart_.Read(kMsr), 0x0f);  // all fell; TERI on RI's trailing edge
  uart_.Write(kMcr, kMcrLoop | kMcrOut1);
  EXPECT_EQ(uart_.Read(kMsr), 0x40) << "RI rising edge is no TERI";

  for (char c : std::string("loop")) uart_.Write(kThr, static_cast<uint8_t>(c));
  EXPECT_TRUE(tx_.empty());
  EXPECT_EQ(uart_.RxSpace(), 0u) << "serial input is disconnected in loopback";
  EXPECT_EQ(Receive("x"), 0u);
  EXPECT_EQ(ReadRx(4), "loop");

  uart_.Write(kMcr, kMcrOut2);
  EXPECT_EQ(uart_.Read(kMsr), 0xb0 | 0x0f);  // CTS, DSR, DCD rose; RI fell
  EXPECT_EQ(uart_.Read(kMsr), 0xb0);
  uart_.Write(kThr, 'o');
  EXPECT_EQ(Tx(), "o");
  EXPECT_EQ(uart_.Read(kLsr) & 0x01, 0);
}

TEST_F(UartTest, LoopbackOverrunWithoutFifoOverwritesAndSetsOe) {
  uart_.Write(kMcr, kMcrLoop);
  uart_.Write(kThr, 'a');
  uart_.Write(kThr, 'b');
  EXPECT_EQ(uart_.Read(kLsr), 0x63);
  EXPECT_EQ(uart_.Read(kLsr), 0x61) << "LSR read clears OE";
  EXPECT_EQ(ReadRx(1), "b");
}

TEST_F(UartTest, LoopbackRaisesModemStatusInterrupt) {
  uart_.Write(kMcr, kMcrOut2);
  uart_.Write(kIer, 0x08);
  EXPECT_TRUE(irq_.empty());
  uart_.Write(kMcr, kMcrLoop | kMcrOut2 | kMcrRts | kMcrDtr);  // CTS/DSR unchanged: no delta
  EXPECT_EQ(uart_.Read(kIir), kIirNone);
  uart_.Write(kMcr, kMcrLoop | kMcrOut2 | kMcrDtr);  // CTS falls
  EXPECT_EQ(irq_, (std::vector<bool>{true}));
  EXPECT_EQ(uart_.Read(kIir), kIirModem);
  EXPECT_EQ(uart_.Read(kMsr), 0xa0 | 0x01);
  EXPECT_EQ(irq_, (std::vector<bool>{true, false}));
}

TEST_F(UartTest, FcrClearsReceiveFifo) {
  uart_.Write(kFcr, 0x01);
  Receive("0123456789");
  uart_.Write(kFcr, 0x05);  // clear TX only
  EXPECT_EQ(uart_.Read(kLsr) & 0x01, 0x01);
  uart_.Write(kFcr, 0x03);  // clear RX
  EXPECT_EQ(uart_.Read(kLsr) & 0x01, 0);
  EXPECT_EQ(uart_.RxSpace(), 16u);

  Receive("abc");
  uart_.Write(kFcr, 0x00);  // leaving FIFO mode empties the FIFO
  EXPECT_EQ(uart_.Read(kLsr) & 0x01, 0);
  EXPECT_EQ(uart_.RxSpace(), 1u);
  Receive("d");
  uart_.Write(kFcr, 0x02);  // FCR0 = 0: other bits are not programmed
  EXPECT_EQ(ReadRx(1), "d");
  Receive("e");
  uart_.Write(kFcr, 0x01);  // entering FIFO mode empties it too
  EXPECT_EQ(uart_.Read(kLsr) & 0x01, 0);
  Receive("fg");
  uart_.Write(kFcr, 0x01);  // rewriting the same mode keeps the data
  EXPECT_EQ(ReadRx(2), "fg");
}

TEST_F(UartTest, InvalidOffsetsReadAllOnesAndIgnoreWrites) {
  uart_.Write(kIer, 0x0f);
  uart_.Write(kMcr, kMcrOut2);
  Receive("a");
  const State before = uart_.Save();
  const std::vector<bool> irq_before = irq_;
  for (int off = 8; off < 256; ++off) {
    EXPECT_EQ(uart_.Read(static_cast<uint8_t>(off)), 0xff);
    for (int v = 0; v < 256; ++v) uart_.Write(static_cast<uint8_t>(off), static_cast<uint8_t>(v));
  }
  EXPECT_EQ(uart_.Save(), before);
  EXPECT_EQ(irq_, irq_before);
  EXPECT_TRUE(tx_.empty());
}

TEST_F(UartTest, LsrAndMsrWritesAreIgnored) {
  const State before = uart_.Save();
  for (int v = 0; v < 256; ++v) {
    uart_.Write(kLsr, static_cast<uint8_t>(v));
    uart_.Write(kMsr, static_cast<uint8_t>(v));
  }
  EXPECT_EQ(uart_.Save(), before);
}

TEST_F(UartTest, SaveRestoreRoundTripMidStream) {
  uart_.Write(kLcr, 0x80);
  uart_.Write(kDll, 0x01);
  uart_.Write(kDlm, 0x02);
  uart_.Write(kLcr, 0x1b);
  uart_.Write(kFcr, 0x81);  // trigger 8
  uart_.Write(kMcr, kMcrDtr | kMcrRts | kMcrOut2);
  uart_.Write(kIer, 0x07);
  uart_.Write(kScr, 0x5a);
  ASSERT_EQ(Receive("hello world"), 11u);
  EXPECT_EQ(ReadRx(3), "hel");
  ASSERT_TRUE(uart_.IrqAsserted());
  const State saved = uart_.Save();

  std::vector<uint8_t> tx2;
  std::vector<bool> irq2;
  Uart16550 next([&](uint8_t b) { tx2.push_back(b); }, [&](bool a) { irq2.push_back(a); });
  next.Restore(saved);
  EXPECT_TRUE(irq2.empty()) << "the line is already asserted; no change to signal";
  EXPECT_TRUE(next.IrqAsserted());
  EXPECT_EQ(next.Save(), saved);

  // Both carry on identically.
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(next.Read(kIir), uart_.Read(kIir));
    EXPECT_EQ(next.Read(kLsr), uart_.Read(kLsr));
    EXPECT_EQ(next.Read(kRbr), uart_.Read(kRbr));
  }
  EXPECT_EQ(next.Read(kScr), 0x5a);
  EXPECT_EQ(next.Read(kLcr), 0x1b);
  next.Write(kLcr, 0x9b);
  EXPECT_EQ(next.Read(kDll), 0x01);
  EXPECT_EQ(next.Read(kDlm), 0x02);
  next.Write(kLcr, 0x1b);
  next.Write(kThr, '!');
  EXPECT_EQ(std::string(tx2.begin(), tx2.end()), "!");

  // A successor whose line was seen deasserted gets told to assert it.
  State stale = saved;
  stale.irq_asserted = false;
  Uart16550 third(nullptr, [&](bool a) { irq2.push_back(a); });
  irq2.clear();
  third.Restore(stale);
  EXPECT_EQ(irq2, (std::vector<bool>{true}));
}

TEST_F(UartTest, RestoreSanitizesCorruptState) {
  State bad;
  bad.ier = 0xff;
  bad.mcr = 0xff;
  bad.fcr = 0x3e;  // FIFOs off
  bad.lsr_errors = 0xff;
  bad.msr_delta = 0xff;
  bad.rx_count = 200;
  bad.rx.fill(0x77);
  bad.irq_asserted = false;
  uart_.Restore(bad);
  const State s = uart_.Save();
  EXPECT_EQ(s.ier, 0x0f);
  EXPECT_EQ(s.mcr, 0x1f);
  EXPECT_EQ(s.fcr & 0x01, 0);
  EXPECT_EQ(s.rx_count, 1);
  EXPECT_TRUE(Consistent(uart_));
  EXPECT_EQ(irq_, (std::vector<bool>{true}));
}

TEST_F(UartTest, ResetReturnsToPowerOnStateAndDropsIrq) {
  uart_.Write(kMcr, kMcrOut2);
  uart_.Write(kIer, 0x02);
  uart_.Write(kScr, 1);
  ASSERT_TRUE(uart_.IrqAsserted());
  uart_.Reset();
  EXPECT_EQ(uart_.Save(), State{});
  EXPECT_EQ(irq_, (std::vector<bool>{true, false}));
}

// A driver in the style of Linux's 8250: interrupt-driven, reads IIR until no
// interrupt is pending, drains RX while LSR.DR, refills TX on THRE and turns
// ETBEI off when it has nothing left. Backend and guest both stream 5000 bytes.
TEST_F(UartTest, InterruptDrivenDriverMovesAllDataBothWays) {
  std::string to_guest, from_guest;
  for (int i = 0; i < 5000; ++i) {
    to_guest.push_back(static_cast<char>('a' + i % 26));
    from_guest.push_back(static_cast<char>('A' + i % 23));
  }
  uart_.Write(kLcr, 0x80);
  uart_.Write(kDll, 1);
  uart_.Write(kDlm, 0);
  uart_.Write(kLcr, 0x03);
  uart_.Write(kFcr, 0xc7);  // FIFO, clear both, trigger 14
  uart_.Write(kMcr, kMcrDtr | kMcrRts | kMcrOut2);
  uart_.Write(kIer, 0x05);  // RX data, line status

  size_t backend_pos = 0, guest_pos = 0;
  std::string received;
  uint8_t ier = 0x05;
  // Start transmitting: enable ETBEI, as serial8250_start_tx does.
  ier |= 0x02;
  uart_.Write(kIer, ier);

  for (int round = 0; round < 100000; ++round) {
    backend_pos += uart_.Receive(reinterpret_cast<const uint8_t*>(to_guest.data()) + backend_pos,
                                 to_guest.size() - backend_pos);
    if (!uart_.IrqAsserted()) {
      if (backend_pos == to_guest.size() && received.size() == to_guest.size()) break;
      FAIL() << "stalled: backend " << backend_pos << " received " << received.size();
    }
    for (int n = 0; n < 16; ++n) {  // the ISR
      const uint8_t iir = uart_.Read(kIir);
      if (iir & 0x01) break;
      switch (iir & 0x0f) {
        case kIirLineStatus:
          FAIL() << "unexpected line status";
        case kIirRxData:
        case kIirTimeout:
          while (uart_.Read(kLsr) & 0x01) received.push_back(static_cast<char>(uart_.Read(kRbr)));
          break;
        case kIirThre:
          for (int k = 0; k < 16 && guest_pos < from_guest.size(); ++k)
            uart_.Write(kThr, static_cast<uint8_t>(from_guest[guest_pos++]));
          if (guest_pos == from_guest.size() && (ier & 0x02)) {
            ier &= ~0x02;
            uart_.Write(kIer, ier);
          }
          break;
        default:
          FAIL() << "unexpected IIR " << int(iir);
      }
    }
  }
  EXPECT_EQ(received, to_guest);
  EXPECT_EQ(Tx(), from_guest);
  EXPECT_FALSE(uart_.IrqAsserted());
}

// Guest input is untrusted: every value written to every offset, in random
// order and interleaved with reads and backend input, must leave the model
// consistent.
TEST_F(UartTest, EveryValueAtEveryOffsetInRandomOrderStaysConsistent) {
  std::vector<std::pair<uint8_t, uint8_t>> writes;
  for (int off : {0, 1, 2, 3, 4, 5, 6, 7, 8, 0x7f, 0xff})
    for (int v = 0; v < 256; ++v) writes.emplace_back(off, v);
  std::mt19937 rng(12345);
  for (int round = 0; round < 4; ++round) {
    std::shuffle(writes.begin(), writes.end(), rng);
    for (const auto& [off, v] : writes) {
      uart_.Write(off, v);
      ASSERT_TRUE(Consistent(uart_)) << "after write " << int(off) << "," << int(v);
      uart_.Read(static_cast<uint8_t>(rng() % 9));
      if (rng() % 4 == 0) {
        const uint8_t data[3] = {static_cast<uint8_t>(rng()), 1, 2};
        uart_.Receive(data, rng() % 4);
      }
      ASSERT_TRUE(Consistent(uart_)) << "after write " << int(off) << "," << int(v);
    }
  }
}

// 100k random accesses against a model checked after every step: invariants
// hold, IrqFn is called only on change and agrees with IrqAsserted(), TxFn is
// called exactly for THR writes outside loopback, Receive honours RxSpace(),
// and a copy made with Save/Restore at random points behaves identically.
TEST(Uart16550FuzzTest, RandomAccessesKeepInvariants) {
  std::mt19937 rng(0x16550);
  int tx_calls = 0, irq_calls = 0;
  bool irq_level = false, irq_repeat = false;
  std::vector<uint8_t> tx_log, shadow_tx_log;
  Uart16550 uart(
      [&](uint8_t b) {
        ++tx_calls;
        tx_log.push_back(b);
      },
      [&](bool a) {
        ++irq_calls;
        if (a == irq_level) irq_repeat = true;
        irq_level = a;
      });
  std::optional<Uart16550> shadow;

  for (int i = 0; i < 100000; ++i) {
    if (i % 5000 == 0) {
      shadow.emplace([&](uint8_t b) { shadow_tx_log.push_back(b); }, nullptr);
      shadow->Restore(uart.Save());
      tx_log.clear();
      shadow_tx_log.clear();
    }
    const State before = uart.Save();
    const uint32_t r = rng();
    const uint8_t off = (r % 64 == 0) ? static_cast<uint8_t>(r >> 8) : static_cast<uint8_t>(r % 8);
    const uint8_t val = static_cast<uint8_t>(r >> 16);
    const uint32_t kind = (r >> 24) % 20;
    if (kind < 9) {  // guest write
      const bool expect_tx = off == 0 && !(before.lcr & 0x80) && !(before.mcr & kMcrLoop);
      const int tx_before = tx_calls;
      uart.Write(off, val);
      shadow->Write(off, val);
      ASSERT_EQ(tx_calls - tx_before, expect_tx ? 1 : 0) << "op " << i;
    } else if (kind < 17) {  // guest read
      ASSERT_EQ(uart.Read(off), shadow->Read(off)) << "op " << i;
    } else {  // backend input
      uint8_t data[20];
      for (auto& b : data) b = static_cast<uint8_t>(rng());
      const size_t len = rng() % 21;
      const size_t space = uart.RxSpace();
      const size_t n = uart.Receive(data, len);
      ASSERT_EQ(n, std::min(len, space)) << "op " << i;
      ASSERT_EQ(shadow->Receive(data, len), n) << "op " << i;
    }
    ASSERT_FALSE(irq_repeat) << "IrqFn repeated a level at op " << i;
    ASSERT_EQ(irq_level, uart.IrqAsserted()) << "op " << i;
    ASSERT_TRUE(Consistent(uart)) << "op " << i;
    ASSERT_EQ(shadow->Save(), uart.Save()) << "op " << i;
    ASSERT_EQ(shadow_tx_log, tx_log) << "op " << i;
  }
  EXPECT_GT(tx_calls, 1000);
  EXPECT_GT(irq_calls, 1000);
}

}  // namespace
}  // namespace hv::lpc
