#include "devproc/lpc/i8042.h"

#include <cstdint>
#include <optional>
#include <random>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace hv::lpc {
namespace {

using State = I8042::State;
using Bytes = std::vector<uint8_t>;

constexpr uint16_t kData = I8042::kDataPort;
constexpr uint16_t kCmd = I8042::kCommandPort;

class I8042Test : public ::testing::Test {
 protected:
  void Command(uint8_t c) { kbc_.Write(kCmd, c); }
  void Data(uint8_t d) { kbc_.Write(kData, d); }
  uint8_t Status() { return kbc_.Read(kCmd); }
  // Everything in the output buffer and behind it, as a polling driver reads it.
  Bytes Drain(bool want_aux = false) {
    Bytes out;
    while (Status() & I8042::kStsObf) {
      EXPECT_EQ(!!(Status() & I8042::kStsAuxData), want_aux) << "byte " << out.size();
      out.push_back(kbc_.Read(kData));
    }
    return out;
  }
  uint8_t ReadCommandByte() {
    Command(0x20);
    EXPECT_TRUE(Status() & I8042::kStsObf);
    return kbc_.Read(kData);
  }
  void WriteCommandByte(uint8_t ccb) {
    Command(0x60);
    Data(ccb);
  }
  Bytes ToMouse(std::initializer_list<uint8_t> bytes) {
    for (uint8_t b : bytes) {
      Command(0xd4);
      Data(b);
    }
    return Drain(/*want_aux=*/true);
  }
  Bytes ToKeyboard(std::initializer_list<uint8_t> bytes) {
    for (uint8_t b : bytes) Data(b);
    return Drain();
  }
  void Key(std::initializer_list<uint8_t> codes) {
    const Bytes v(codes);
    kbc_.KeyboardInput(v.data(), v.size());
  }

  std::vector<bool> irq1_, irq12_;
  int resets_ = 0;
  I8042 kbc_{[this](bool l) { irq1_.push_back(l); }, [this](bool l) { irq12_.push_back(l); },
             [this] { ++resets_; }};
};

TEST_F(I8042Test, PowerOnState) {
  EXPECT_EQ(Status(), I8042::kStsUnlocked | I8042::kStsSys);
  EXPECT_EQ(ReadCommandByte(), I8042::kInitialCommandByte);
  EXPECT_EQ(Status(), I8042::kStsUnlocked | I8042::kStsSys | I8042::kStsCommand);
  EXPECT_EQ(kbc_.Read(0x61), 0xff) << "not our port";
}

// What Linux's i8042 and atkbd drivers do at boot.
TEST_F(I8042Test, LinuxProbeSequence) {
  // i8042_controller_check: a controller is there, flush it.
  ASSERT_NE(Status(), 0xff);
  EXPECT_EQ(Drain(), Bytes{});
  // i8042_controller_selftest.
  Command(0xaa);
  EXPECT_EQ(Status() & (I8042::kStsObf | I8042::kStsCommand | I8042::kStsIbf),
            I8042::kStsObf | I8042::kStsCommand);
  EXPECT_EQ(kbc_.Read(kData), 0x55);
  // i8042_controller_init: a stable CTR read, keyboard off, write it back, flush.
  const uint8_t ctr = ReadCommandByte();
  EXPECT_EQ(ReadCommandByte(), ctr);
  EXPECT_TRUE(ctr & I8042::kCmdTranslate);
  EXPECT_TRUE(Status() & I8042::kStsUnlocked) << "no keylock warning";
  const uint8_t init_ctr = (ctr | I8042::kCmdKbdDisable) & ~I8042::kCmdKbdInt;
  WriteCommandByte(init_ctr);
  EXPECT_EQ(ReadCommandByte(), init_ctr);
  EXPECT_EQ(Drain(), Bytes{});
  // i8042_check_aux: loopback through the AUX output buffer, then the
  // AUXDIS bit must follow 0xA7/0xA8, and the loopback raises IRQ 12.
  Command(0xd3);
  Data(0x5a);
  EXPECT_EQ(Status() & (I8042::kStsObf | I8042::kStsAuxData), I8042::kStsObf | I8042::kStsAuxData);
  EXPECT_EQ(irq12_, std::vector<bool>{true});
  EXPECT_EQ(kbc_.Read(kData), 0x5a);
  EXPECT_EQ(irq12_, (std::vector<bool>{true, false}));
  Command(0xa7);
  EXPECT_TRUE(ReadCommandByte() & I8042::kCmdAuxDisable);
  Command(0xa8);
  EXPECT_FALSE(ReadCommandByte() & I8042::kCmdAuxDisable);
  Command(0xa9);
  EXPECT_EQ(kbc_.Read(kData), 0x00) << "AUX interface test";
  Command(0xab);
  EXPECT_EQ(kbc_.Read(kData), 0x00) << "KBD interface test";
  // i8042_enable_kbd_port.
  WriteCommandByte((init_ctr & ~I8042::kCmdKbdDisable) | I8042::kCmdKbdInt);
  irq1_.clear();
  // atkbd: reset, identify (translated: 0xAB 0x41), LEDs, enable.
  EXPECT_EQ(ToKeyboard({0xff}), (Bytes{0xfa, 0xaa}));
  EXPECT_EQ(irq1_, (std::vector<bool>{true, false, true, false})) << "one edge per byte";
  EXPECT_EQ(ToKeyboard({0xf2}), (Bytes{0xfa, 0xab, 0x41}));
  EXPECT_EQ(ToKeyboard({0xed, 0x00}), (Bytes{0xfa, 0xfa}));
  EXPECT_EQ(ToKeyboard({0xf4}), (Bytes{0xfa}));
  Key({0x1c});
  EXPECT_EQ(Drain(), Bytes{0x1e}) << "A, translated to set 1";
}

TEST_F(I8042Test, ResetPulsesCallOnReset) {
  Command(0xfe);
  EXPECT_EQ(resets_, 1);
  Command(0xf0);  // pulses bits 3:0, including reset
  EXPECT_EQ(resets_, 2);
  Command(0xff);  // pulses nothing
  Command(0xfd);  // pulses bit 1 only
  EXPECT_EQ(resets_, 2);
  Command(0xd1);
  Data(0x03);  // reset line high: nothing
  EXPECT_EQ(resets_, 2);
  Command(0xd1);
  Data(0x02);  // reset line low
  EXPECT_EQ(resets_, 3);
  Command(0xd0);
  EXPECT_EQ(kbc_.Read(kData), 0x03) << "reset released again, A20 on";
  EXPECT_EQ(Drain(), Bytes{});
}

TEST_F(I8042Test, KeyboardCommandReplies) {
  WriteCommandByte(I8042::kCmdKbdInt | I8042::kCmdAuxInt | I8042::kCmdSys);  // no translation
  EXPECT_EQ(ToKeyboard({0xee}), Bytes{0xee}) << "echo";
  EXPECT_EQ(ToKeyboard({0xf2}), (Bytes{0xfa, 0xab, 0x83}));
  EXPECT_EQ(ToKeyboard({0xed}), Bytes{0xfa});
  EXPECT_EQ(ToKeyboard({0x07}), Bytes{0xfa});
  EXPECT_EQ(kbc_.Save().keyboard.leds, 0x07);
  EXPECT_EQ(ToKeyboard({0xf0, 0x00}), (Bytes{0xfa, 0xfa, 0x02})) << "query scancode set";
  EXPECT_EQ(ToKeyboard({0xf0, 0x01}), (Bytes{0xfa, 0xfa}));
  EXPECT_EQ(ToKeyboard({0xf0, 0x00}), (Bytes{0xfa, 0xfa, 0x01}));
  EXPECT_EQ(ToKeyboard({0xf0, 0x03}), (Bytes{0xfa, 0xfe})) << "set 3 refused";
  EXPECT_EQ(ToKeyboard({0xf0, 0x02}), (Bytes{0xfa, 0xfa}));
  EXPECT_EQ(ToKeyboard({0xf3, 0x20}), (Bytes{0xfa, 0xfa}));
  EXPECT_EQ(kbc_.Save().keyboard.typematic, 0x20);
  EXPECT_EQ(ToKeyboard({0xe0}), Bytes{0xfe}) << "unknown: resend";
  EXPECT_EQ(ToKeyboard({0xf1}), Bytes{0xfe});
  EXPECT_EQ(ToKeyboard({0xfe}), Bytes{0xfe}) << "resend repeats the last byte";
  // A command where an argument was expected is a new command.
  EXPECT_EQ(ToKeyboard({0xed, 0xf2}), (Bytes{0xfa, 0xfa, 0xab, 0x83}));
  EXPECT_EQ(ToKeyboard({0xfe}), Bytes{0x83});
  // Scanning off and on.
  EXPECT_EQ(ToKeyboard({0xf5}), Bytes{0xfa});
  Key({0x1c});
  EXPECT_EQ(Drain(), Bytes{}) << "not scanning";
  EXPECT_EQ(ToKeyboard({0xf4}), Bytes{0xfa});
  Key({0x1c});
  EXPECT_EQ(Drain(), Bytes{0x1c});
  EXPECT_EQ(ToKeyboard({0xf6}), Bytes{0xfa});
  EXPECT_EQ(kbc_.Save().keyboard.typematic, 0x2b) << "defaults";
  Key({0x1c});
  EXPECT_EQ(Drain(), Bytes{0x1c}) << "F6 keeps scanning";
  EXPECT_EQ(ToKeyboard({0xff}), (Bytes{0xfa, 0xaa}));
  EXPECT_EQ(kbc_.Save().keyboard.leds, 0);
}

TEST_F(I8042Test, KeyboardRepliesJumpAheadOfPendingScancodes) {
  WriteCommandByte(I8042::kCmdSys);  // no translation, no interrupts
  Command(0xad);                     // keyboard port disabled: keys wait
  Key({0x1c});
  Key({0xf0, 0x1c});
  Data(0xee);
  Command(0xae);
  EXPECT_EQ(Drain(), (Bytes{0xee, 0x1c, 0xf0, 0x1c}));
}

TEST_F(I8042Test, MouseCommandReplies) {
  EXPECT_EQ(ToMouse({0xff}), (Bytes{0xfa, 0xaa, 0x00}));
  EXPECT_EQ(ToMouse({0xf2}), (Bytes{0xfa, 0x00}));
  // IntelliMouse: rates 200, 100, 80 unlock ID 3.
  EXPECT_EQ(ToMouse({0xf3, 200, 0xf3, 100, 0xf3, 80}), Bytes(6, 0xfa));
  EXPECT_EQ(ToMouse({0xf2}), (Bytes{0xfa, 0x03}));
  // Explorer: then 200, 200, 80 unlock ID 4.
  EXPECT_EQ(ToMouse({0xf3, 200, 0xf3, 200, 0xf3, 80}), Bytes(6, 0xfa));
  EXPECT_EQ(ToMouse({0xf2}), (Bytes{0xfa, 0x04}));
  EXPECT_EQ(ToMouse({0xe8, 0x03}), (Bytes{0xfa, 0xfa}));
  EXPECT_EQ(ToMouse({0xe8, 0x07}), (Bytes{0xfa, 0xfe})) << "resolution 0-3 only";
  EXPECT_EQ(ToMouse({0xe7}), Bytes{0xfa});
  EXPECT_EQ(ToMouse({0xe9}), (Bytes{0xfa, 0x10, 0x03, 80})) << "status: scaling 2:1";
  EXPECT_EQ(ToMouse({0xf4}), Bytes{0xfa});
  kbc_.MouseInput(0, 0, 0, I8042::kButtonLeft | I8042::kButtonRight);
  Drain(true);
  EXPECT_EQ(ToMouse({0xe9}), (Bytes{0xfa, 0x30 | 0x04 | 0x01, 0x03, 80}));
  EXPECT_EQ(ToMouse({0xe6, 0xf5}), (Bytes{0xfa, 0xfa}));
  EXPECT_EQ(ToMouse({0xe9}), (Bytes{0xfa, 0x05, 0x03, 80}));
  EXPECT_EQ(ToMouse({0xf6}), Bytes{0xfa});
  EXPECT_EQ(ToMouse({0xe9}), (Bytes{0xfa, 0x05, 0x02, 100})) << "defaults";
  EXPECT_EQ(ToMouse({0xf2}), (Bytes{0xfa, 0x04})) << "F6 keeps the ID";
  EXPECT_EQ(ToMouse({0x00}), Bytes{0xfe}) << "unknown command";
  EXPECT_EQ(ToMouse({0xfe}), Bytes{0xfe}) << "resend";
  // Wrap mode echoes until 0xEC.
  EXPECT_EQ(ToMouse({0xee}), Bytes{0xfa});
  EXPECT_EQ(ToMouse({0x12, 0xf2}), (Bytes{0x12, 0xf2}));
  EXPECT_EQ(ToMouse({0xec}), Bytes{0xfa});
  EXPECT_EQ(ToMouse({0xf2}), (Bytes{0xfa, 0x04}));
  EXPECT_EQ(ToMouse({0xff}), (Bytes{0xfa, 0xaa, 0x00}));
  EXPECT_EQ(ToMouse({0xf2}), (Bytes{0xfa, 0x00})) << "reset drops the ID";
}

TEST_F(I8042Test, TranslatesSet2ScancodesToSet1) {
  // clang-format off
  const struct {
    Bytes set2, set1;
  } kCases[] = {
      {{0x1c}, {0x1e}},                                              // A make
      {{0xf0, 0x1c}, {0x9e}},                                        // A break
      {{0x76}, {0x01}},                                              // Esc
      {{0x5a}, {0x1c}},                                              // Enter
      {{0x83}, {0x41}},                                              // F7, the odd one
      {{0xf0, 0x83}, {0xc1}},                                        // F7 break
      {{0xe0, 0x75}, {0xe0, 0x48}},                                  // Up
      {{0xe0, 0xf0, 0x75}, {0xe0, 0xc8}},                            // Up break
      {{0xe0, 0x14}, {0xe0, 0x1d}},                                  // Right Ctrl
      {{0xe0, 0x12, 0xe0, 0x7c}, {0xe0, 0x2a, 0xe0, 0x37}},          // Print Screen
      {{0xe1, 0x14, 0x77, 0xe1, 0xf0, 0x14, 0xf0, 0x77},
       {0xe1, 0x1d, 0x45, 0xe1, 0x9d, 0xc5}},                        // Pause
  };
  // clang-format on
  for (const auto& c : kCases) {
    kbc_.KeyboardInput(c.set2.data(), c.set2.size());
    EXPECT_EQ(Drain(), c.set1) << std::hex << int(c.set2.back());
  }
  // Without the translation bit the bytes pass as they are.
  WriteCommandByte(I8042::kInitialCommandByte & ~I8042::kCmdTranslate);
  for (const auto& c : kCases) {
    kbc_.KeyboardInput(c.set2.data(), c.set2.size());
    EXPECT_EQ(Drain(), c.set2);
  }
}

TEST_F(I8042Test, KeyboardInScancodeSet1ConvertsInput) {
  WriteCommandByte(I8042::kCmdSys);  // no translation
  EXPECT_EQ(ToKeyboard({0xf0, 0x01}), (Bytes{0xfa, 0xfa}));
  Key({0xf0, 0x1c});
  EXPECT_EQ(Drain(), Bytes{0x9e});
  Key({0xe0, 0xf0, 0x75});
  EXPECT_EQ(Drain(), (Bytes{0xe0, 0xc8}));
}

TEST_F(I8042Test, MousePacketEncoding) {
  EXPECT_EQ(ToMouse({0xf4}), Bytes{0xfa});
  kbc_.MouseInput(5, -3, 0, I8042::kButtonLeft);  // right and up
  EXPECT_EQ(Drain(true), (Bytes{0x09, 0x05, 0x03}));
  kbc_.MouseInput(-5, 3, 0, I8042::kButtonRight | I8042::kButtonMiddle);  // left and down
  EXPECT_EQ(Drain(true), (Bytes{0x08 | 0x10 | 0x20 | 0x06, 0xfb, 0xfd}));
  kbc_.MouseInput(255, -255, 0, 0);
  EXPECT_EQ(Drain(true), (Bytes{0x08, 0xff, 0xff}));
  kbc_.MouseInput(-256, 256, 0, 0);
  EXPECT_EQ(Drain(true), (Bytes{0x38, 0x00, 0x00}));
  // Overflow: saturate and flag.
  kbc_.MouseInput(300, -1000, 0, 0);
  EXPECT_EQ(Drain(true), (Bytes{0x08 | 0x40 | 0x80, 0xff, 0xff}));
  kbc_.MouseInput(-300, 0, 0, 0);
  EXPECT_EQ(Drain(true), (Bytes{0x08 | 0x10 | 0x40, 0x00, 0x00}));
  kbc_.MouseInput(INT32_MIN, INT32_MIN, 99, 0xff);
  EXPECT_EQ(Drain(true), (Bytes{0x08 | 0x07 | 0x10 | 0x40 | 0x80, 0x00, 0xff}));
  // 2:1 scaling.
  EXPECT_EQ(ToMouse({0xe7}), Bytes{0xfa});
  kbc_.MouseInput(3, -4, 0, 0);
  EXPECT_EQ(Drain(true), (Bytes{0x08, 0x03, 0x06}));
  kbc_.MouseInput(10, -1, 0, 0);
  EXPECT_EQ(Drain(true), (Bytes{0x08, 20, 0x01}));
  EXPECT_EQ(ToMouse({0xe6}), Bytes{0xfa});
  // Wheel mouse: a fourth byte.
  EXPECT_EQ(ToMouse({0xf3, 200, 0xf3, 100, 0xf3, 80}), Bytes(6, 0xfa));
  kbc_.MouseInput(1, 0, 3, 0);
  EXPECT_EQ(Drain(true), (Bytes{0x08, 0x01, 0x00, 0x03}));
  kbc_.MouseInput(0, 0, -20, 0);
  EXPECT_EQ(Drain(true), (Bytes{0x08, 0x00, 0x00, 0xf8})) << "wheel clamped to -8";
  // Explorer: wheel in 4 bits, buttons 4 and 5.
  EXPECT_EQ(ToMouse({0xf3, 200, 0xf3, 200, 0xf3, 80}), Bytes(6, 0xfa));
  kbc_.MouseInput(0, 0, -1, I8042::kButtonSide | I8042::kButtonExtra);
  EXPECT_EQ(Drain(true), (Bytes{0x08, 0x00, 0x00, 0x0f | 0x10 | 0x20}));
  kbc_.MouseInput(0, 0, 9, I8042::kButtonSide);
  EXPECT_EQ(Drain(true), (Bytes{0x08, 0x00, 0x00, 0x07 | 0x10}));
  // Reporting off: nothing.
  EXPECT_EQ(ToMouse({0xf5}), Bytes{0xfa});
  kbc_.MouseInput(1, 1, 0, 0);
  EXPECT_EQ(Drain(true), Bytes{});
}

TEST_F(I8042Test, MouseRemoteModeReportsOnRequest) {
  EXPECT_EQ(ToMouse({0xf0}), Bytes{0xfa});
  kbc_.MouseInput(10, 0, 0, 0);
  kbc_.MouseInput(5, -2, 0, I8042::kButtonLeft);
  EXPECT_EQ(Drain(true), Bytes{}) << "no stream in remote mode";
  EXPECT_EQ(ToMouse({0xeb}), (Bytes{0xfa, 0x09, 15, 2}));
  EXPECT_EQ(ToMouse({0xeb}), (Bytes{0xfa, 0x09, 0, 0})) << "movement was consumed";
  EXPECT_EQ(ToMouse({0xe9}), (Bytes{0xfa, 0x44, 0x02, 100}));
}

TEST_F(I8042Test, InterruptsAreGatedByTheCommandByte) {
  WriteCommandByte(I8042::kCmdSys);  // ports enabled, interrupts off, no translation
  Key({0x1c});
  EXPECT_TRUE(Status() & I8042::kStsObf);
  EXPECT_TRUE(irq1_.empty());
  WriteCommandByte(I8042::kCmdSys | I8042::kCmdKbdInt);
  EXPECT_EQ(irq1_, std::vector<bool>{true}) << "enabling with a byte waiting";
  EXPECT_EQ(kbc_.Read(kData), 0x1c);
  EXPECT_EQ(irq1_, (std::vector<bool>{true, false}));
  // Mouse bytes use IRQ 12, and only with AUXINT.
  EXPECT_EQ(ToMouse({0xf4}), Bytes{0xfa});
  EXPECT_TRUE(irq12_.empty());
  EXPECT_EQ(irq1_.size(), 2u) << "mouse bytes never raise IRQ 1";
  WriteCommandByte(I8042::kCmdSys | I8042::kCmdKbdInt | I8042::kCmdAuxInt);
  kbc_.MouseInput(1, 1, 0, 0);
  EXPECT_EQ(irq12_, std::vector<bool>{true});
  Drain(true);
  EXPECT_EQ(irq12_, (std::vector<bool>{true, false, true, false, true, false}))
      << "one edge per packet byte";
  // Three keys: an edge for each byte.
  irq1_.clear();
  Key({0x1c});
  Key({0xf0, 0x1c});
  EXPECT_EQ(Drain(), (Bytes{0x1c, 0xf0, 0x1c}));
  EXPECT_EQ(irq1_, (std::vector<bool>{true, false, true, false, true, false}));
  // Disabling the interrupt lowers the line.
  Key({0x1c});
  EXPECT_TRUE(kbc_.Irq1Asserted());
  WriteCommandByte(I8042::kCmdSys);
  EXPECT_FALSE(kbc_.Irq1Asserted());
}

TEST_F(I8042Test, DisabledPortHoldsItsBytes) {
  Command(0xad);
  Key({0x1c});
  EXPECT_EQ(Drain(), Bytes{});
  Command(0xae);
  EXPECT_EQ(Drain(), Bytes{0x1e});
  EXPECT_EQ(ToMouse({0xf4}), Bytes{0xfa});
  Command(0xa7);
  kbc_.MouseInput(1, 0, 0, 0);
  EXPECT_EQ(Drain(true), Bytes{});
  Command(0xa8);
  EXPECT_EQ(Drain(true), (Bytes{0x08, 0x01, 0x00}));
}

TEST_F(I8042Test, ControllerRepliesGoBeforeDeviceBytes) {
  WriteCommandByte(I8042::kCmdSys);
  Key({0x1c});
  Key({0x1b});
  Command(0x20);  // the output buffer already holds 0x1c
  EXPECT_EQ(Drain(), (Bytes{0x1c, I8042::kCmdSys, 0x1b}));
  Command(0xd2);
  Data(0x42);
  EXPECT_EQ(Drain(), Bytes{0x42}) << "written keyboard byte, not translated";
}

TEST_F(I8042Test, KeyboardAndMouseAlternate) {
  WriteCommandByte(I8042::kCmdSys);
  EXPECT_EQ(ToMouse({0xf4}), Bytes{0xfa});
  Command(0xad);
  Command(0xa7);
  Key({0x01});
  Key({0x02});
  kbc_.MouseInput(1, 0, 0, 0);
  Command(0xae);  // keyboard first: its byte is delivered now
  Command(0xa8);
  std::vector<std::pair<uint8_t, bool>> got;
  while (Status() & I8042::kStsObf) {
    const bool aux = Status() & I8042::kStsAuxData;
    got.push_back({kbc_.Read(kData), aux});
  }
  const std::vector<std::pair<uint8_t, bool>> want = {
      {0x01, false}, {0x08, true}, {0x02, false}, {0x01, true}, {0x00, true}};
  EXPECT_EQ(got, want);
}

TEST_F(I8042Test, QueueOverflowDropsOldestInputWhole) {
  WriteCommandByte(I8042::kCmdSys);  // no translation
  Command(0xad);
  for (uint8_t i = 0; i < 40; ++i) Key({0xe0, static_cast<uint8_t>(0x10 + i)});
  Data(0xee);  // a reply is never dropped, and comes first
  Command(0xae);
  Bytes expect = {0xee};
  for (uint8_t i = 9; i < 40; ++i) {  // 31 units of 2 bytes + the reply fit in 64
    expect.push_back(0xe0);
    expect.push_back(static_cast<uint8_t>(0x10 + i));
  }
  EXPECT_EQ(Drain(), expect);

  EXPECT_EQ(ToMouse({0xf4}), Bytes{0xfa});
  Command(0xa7);
  for (int i = 1; i <= 30; ++i) kbc_.MouseInput(i, 0, 0, 0);
  Command(0xa8);
  const Bytes mouse = Drain(true);
  ASSERT_EQ(mouse.size(), 21u * 3) << "whole packets only";
  for (size_t p = 0; p < 21; ++p) {
    EXPECT_EQ(mouse[3 * p], 0x08);
    EXPECT_EQ(mouse[3 * p + 1], 10 + p) << "packets 10..30 kept";
  }
}

TEST_F(I8042Test, OverflowNeverBreaksAPacketBeingRead) {
  EXPECT_EQ(ToMouse({0xf4}), Bytes{0xfa});
  kbc_.MouseInput(1, 0, 0, 0);
  EXPECT_EQ(kbc_.Read(kData), 0x08) << "first byte of packet 1 taken";
  for (int i = 2; i <= 40; ++i) kbc_.MouseInput(i, 0, 0, 0);
  const Bytes rest = Drain(true);
  ASSERT_EQ(rest.size() % 3, 2u);
  EXPECT_EQ(rest[0], 0x01) << "packet 1 completes";
  EXPECT_EQ(rest[1], 0x00);
  EXPECT_EQ(rest[2], 0x08);
  EXPECT_EQ(rest.back(), 0x00);
  EXPECT_EQ(rest[rest.size() - 2], 40);
}

TEST_F(I8042Test, ResetReturnsToPowerOn) {
  WriteCommandByte(0x00);
  EXPECT_EQ(ToMouse({0xf4}), Bytes{0xfa});
  Key({0x1c});
  kbc_.Reset();
  EXPECT_EQ(kbc_.Save(), State{});
  EXPECT_EQ(ReadCommandByte(), I8042::kInitialCommandByte);
}

TEST_F(I8042Test, SaveRestoreContinuesInAnotherInstance) {
  EXPECT_EQ(ToMouse({0xf4}), Bytes{0xfa});
  Command(0xad);
  Key({0x1c});
  Key({0xf0, 0x1c});
  kbc_.MouseInput(3, 3, 0, 0);
  Command(0xd4);  // a mouse command waiting for its byte
  const State saved = kbc_.Save();
  ASSERT_TRUE(saved.irq12_asserted);

  std::vector<bool> irq1, irq12;
  I8042 other([&](bool l) { irq1.push_back(l); }, [&](bool l) { irq12.push_back(l); }, nullptr);
  other.Restore(saved);
  EXPECT_EQ(other.Save(), saved);
  EXPECT_TRUE(irq1.empty());
  EXPECT_TRUE(irq12.empty());
  for (I8042* k : {&kbc_, &other}) {
    k->Write(kData, 0xf2);
    k->Write(kCmd, 0xae);
  }
  while (kbc_.Read(kCmd) & I8042::kStsObf) {
    ASSERT_EQ(other.Read(kCmd), kbc_.Read(kCmd));
    ASSERT_EQ(other.Read(kData), kbc_.Read(kData));
  }
  EXPECT_EQ(other.Save(), kbc_.Save());
}

// Invariants that hold between any two operations.
::testing::AssertionResult Consistent(const I8042& kbc) {
  const State s = kbc.Save();
  const uint8_t ccb = s.ram[0];
  if (s.controller.count > I8042::kControllerQueueSize ||
      s.keyboard_queue.count > I8042::kQueueSize || s.mouse_queue.count > I8042::kQueueSize)
    return ::testing::AssertionFailure() << "queue counts";
  if (!s.obf) {
    if (s.controller.count) return ::testing::AssertionFailure() << "controller byte stuck";
    if (s.keyboard_queue.count && !(ccb & I8042::kCmdKbdDisable))
      return ::testing::AssertionFailure() << "keyboard byte stuck";
    if (s.mouse_queue.count && !(ccb & I8042::kCmdAuxDisable))
      return ::testing::AssertionFailure() << "mouse byte stuck";
  }
  if (s.irq1_asserted != (s.obf && !s.out_aux && (ccb & I8042::kCmdKbdInt)))
    return ::testing::AssertionFailure() << "irq1";
  if (s.irq12_asserted != (s.obf && s.out_aux && (ccb & I8042::kCmdAuxInt)))
    return ::testing::AssertionFailure() << "irq12";
  if (kbc.Irq1Asserted() != s.irq1_asserted || kbc.Irq12Asserted() != s.irq12_asserted)
    return ::testing::AssertionFailure() << "IrqAsserted";
  for (const I8042::Queue* q : {&s.keyboard_queue, &s.mouse_queue}) {
    bool seen_whole_input = false;
    for (size_t i = 0; i < I8042::kQueueSize; ++i) {
      const uint8_t f = q->flags[i];
      if (i >= q->count) {
        if (f || q->bytes[i]) return ::testing::AssertionFailure() << "queue tail not zero";
        continue;
      }
      if (f & ~(I8042::kUnitStart | I8042::kInput)) return ::testing::AssertionFailure() << "flags";
      if (i > 0 && !(f & I8042::kUnitStart) && ((f ^ q->flags[i - 1]) & I8042::kInput))
        return ::testing::AssertionFailure() << "unit mixes input and reply bytes";
      if (f & I8042::kUnitStart) {
        if (f & I8042::kInput)
          seen_whole_input = true;
        else if (seen_whole_input)
          return ::testing::AssertionFailure() << "reply queued behind input at " << i;
      }
    }
  }
  if (s.keyboard.scancode_set != 1 && s.keyboard.scancode_set != 2)
    return ::testing::AssertionFailure() << "scancode set";
  if (s.mouse.id != 0 && s.mouse.id != 3 && s.mouse.id != 4)
    return ::testing::AssertionFailure() << "mouse id";
  I8042 probe(nullptr, nullptr, nullptr);
  probe.Restore(s);
  if (probe.Save() != s) return ::testing::AssertionFailure() << "Restore(Save()) differs";
  const uint8_t status = probe.Read(I8042::kCommandPort);
  if ((status & I8042::kStsObf) != (s.obf ? I8042::kStsObf : 0) ||
      !!(status & I8042::kStsAuxData) != (s.obf && s.out_aux) || (status & I8042::kStsIbf) ||
      !(status & I8042::kStsUnlocked) || (status & 0xc0))
    return ::testing::AssertionFailure() << "status " << int(status);
  return ::testing::AssertionSuccess();
}

TEST(I8042FuzzTest, RandomAccessesKeepInvariants) {
  std::mt19937 rng(0x8042);
  int irq_calls = 0, resets = 0;
  bool level1 = false, level12 = false, repeat = false;
  I8042 kbc(
      [&](bool l) {
        ++irq_calls;
        if (l == level1) repeat = true;
        level1 = l;
      },
      [&](bool l) {
        ++irq_calls;
        if (l == level12) repeat = true;
        level12 = l;
      },
      [&] { ++resets; });
  std::optional<I8042> shadow;
  // Commands worth hitting often.
  static constexpr uint8_t kControllerCommands[] = {0x20, 0x60, 0x60, 0xa7, 0xa8, 0xa9, 0xaa, 0xab,
                                                    0xad, 0xae, 0xd0, 0xd1, 0xd2, 0xd3, 0xd4, 0xd4,
                                                    0xd4, 0xd4, 0xfe, 0x21, 0x7f, 0xa4, 0xc0, 0xff};
  static constexpr uint8_t kDeviceCommands[] = {
      0xed, 0xee, 0xf0, 0xf2, 0xf3, 0xf4, 0xf4, 0xf5, 0xf6, 0xfe, 0xff, 0xe6, 0xe7,
      0xe8, 0xe9, 0xea, 0xeb, 0xec, 0xf0, 0x00, 0x01, 0x02, 200,  100,  80};
  int delivered = 0;
  for (int i = 0; i < 100000; ++i) {
    if (i % 5000 == 0) {
      shadow.emplace(nullptr, nullptr, nullptr);
      shadow->Restore(kbc.Save());
    }
    const uint32_t r = rng();
    const uint32_t kind = r % 100;
    if (kind < 20) {
      const uint8_t c = (r >> 8) % 4 == 0
                            ? static_cast<uint8_t>(r >> 16)
                            : kControllerCommands[(r >> 16) % sizeof(kControllerCommands)];
      kbc.Write(kCmd, c);
      shadow->Write(kCmd, c);
    } else if (kind < 40) {
      uint8_t d = (r >> 8) % 4 == 0 ? static_cast<uint8_t>(r >> 16)
                                    : kDeviceCommands[(r >> 16) % sizeof(kDeviceCommands)];
      if (kbc.Save().pending_command == 0x60 && (r >> 24) % 4 != 0) {
        d = static_cast<uint8_t>((r >> 16) & 0x7f);  // a plausible command byte
      }
      kbc.Write(kData, d);
      shadow->Write(kData, d);
    } else if (kind < 75) {
      const uint16_t port =
          (r >> 8) % 16 == 0 ? static_cast<uint16_t>(r >> 16) : ((r >> 8) % 2 ? kData : kCmd);
      const State before = kbc.Save();
      const uint8_t v = kbc.Read(port);
      ASSERT_EQ(v, shadow->Read(port)) << "op " << i;
      if (port == kData && before.obf) {
        ++delivered;
        ASSERT_EQ(v, before.out_byte);
      }
    } else if (kind < 88) {
      uint8_t codes[10];
      const size_t n = 1 + (r >> 8) % 10;
      for (size_t j = 0; j < n; ++j) {
        const uint32_t x = rng();
        codes[j] = x % 4 == 0 ? static_cast<uint8_t>(0xe0 + (x >> 8) % 2 * 0x10)
                              : static_cast<uint8_t>(x >> 8);
      }
      kbc.KeyboardInput(codes, n);
      shadow->KeyboardInput(codes, n);
    } else if (kind < 99) {
      const int scale = (r >> 8) % 8 == 0 ? 100000 : 300;
      const int dx = static_cast<int>(rng() % (2 * scale)) - scale;
      const int dy = static_cast<int>(rng() % (2 * scale)) - scale;
      const int dz = static_cast<int>(rng() % 21) - 10;
      const uint8_t buttons = static_cast<uint8_t>(rng());
      kbc.MouseInput(dx, dy, dz, buttons);
      shadow->MouseInput(dx, dy, dz, buttons);
    } else {
      kbc.Reset();
      shadow->Reset();
    }
    ASSERT_FALSE(repeat) << "IrqFn repeated a level at op " << i;
    ASSERT_EQ(level1, kbc.Irq1Asserted()) << "op " << i;
    ASSERT_EQ(level12, kbc.Irq12Asserted()) << "op " << i;
    ASSERT_TRUE(Consistent(kbc)) << "op " << i;
    ASSERT_EQ(shadow->Save(), kbc.Save()) << "op " << i;
  }
  EXPECT_GT(irq_calls, 1000);
  EXPECT_GT(resets, 100);
  EXPECT_GT(delivered, 10000);
}

}  // namespace
}  // namespace hv::lpc
