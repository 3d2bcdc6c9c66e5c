#include "devproc/lpc/i8042.h"

#include <algorithm>
#include <limits>
#include <utility>

namespace hv::lpc {
namespace {

using Queue = I8042::Queue;

// Controller commands (written to port 0x64).
constexpr uint8_t kCtlReadRamFirst = 0x20;  // 0x20: command byte
constexpr uint8_t kCtlReadRamLast = 0x3f;
constexpr uint8_t kCtlWriteRamFirst = 0x60;  // 0x60: command byte
constexpr uint8_t kCtlWriteRamLast = 0x7f;
constexpr uint8_t kCtlPasswordCheck = 0xa4;
constexpr uint8_t kCtlAuxDisable = 0xa7;
constexpr uint8_t kCtlAuxEnable = 0xa8;
constexpr uint8_t kCtlAuxTest = 0xa9;
constexpr uint8_t kCtlSelfTest = 0xaa;
constexpr uint8_t kCtlKbdTest = 0xab;
constexpr uint8_t kCtlKbdDisable = 0xad;
constexpr uint8_t kCtlKbdEnable = 0xae;
constexpr uint8_t kCtlReadOutputPort = 0xd0;
constexpr uint8_t kCtlWriteOutputPort = 0xd1;
constexpr uint8_t kCtlWriteKbdBuffer = 0xd2;
constexpr uint8_t kCtlWriteAuxBuffer = 0xd3;
constexpr uint8_t kCtlWriteAux = 0xd4;
constexpr uint8_t kCtlPulseFirst = 0xf0;  // 0xf0-0xff: pulse output port bits 3:0 low

constexpr uint8_t kSelfTestOk = 0x55;
constexpr uint8_t kInterfaceTestOk = 0x00;
constexpr uint8_t kNoPassword = 0xf1;

// Replies shared by the keyboard and the mouse.
constexpr uint8_t kAck = 0xfa;
constexpr uint8_t kResend = 0xfe;
constexpr uint8_t kSelfTestPassed = 0xaa;

// Keyboard commands.
constexpr uint8_t kKbdSetLeds = 0xed;
constexpr uint8_t kKbdEcho = 0xee;
constexpr uint8_t kKbdScancodeSet = 0xf0;
constexpr uint8_t kKbdIdentify = 0xf2;
constexpr uint8_t kKbdTypematic = 0xf3;
constexpr uint8_t kKbdEnable = 0xf4;
constexpr uint8_t kKbdDefaultDisable = 0xf5;
constexpr uint8_t kKbdDefault = 0xf6;
constexpr uint8_t kKbdResend = 0xfe;
constexpr uint8_t kKbdReset = 0xff;

// Mouse commands.
constexpr uint8_t kAuxScaling1to1 = 0xe6;
constexpr uint8_t kAuxScaling2to1 = 0xe7;
constexpr uint8_t kAuxSetResolution = 0xe8;
constexpr uint8_t kAuxStatus = 0xe9;
constexpr uint8_t kAuxStreamMode = 0xea;
constexpr uint8_t kAuxReadData = 0xeb;
constexpr uint8_t kAuxResetWrap = 0xec;
constexpr uint8_t kAuxWrapMode = 0xee;
constexpr uint8_t kAuxRemoteMode = 0xf0;
constexpr uint8_t kAuxGetId = 0xf2;
constexpr uint8_t kAuxSampleRate = 0xf3;
constexpr uint8_t kAuxEnable = 0xf4;
constexpr uint8_t kAuxDisable = 0xf5;
constexpr uint8_t kAuxDefault = 0xf6;
constexpr uint8_t kAuxResend = 0xfe;
constexpr uint8_t kAuxReset = 0xff;
constexpr uint8_t kAuxFirstCommand = 0xe6;  // bytes below this are arguments

// Scancode set 2 -> set 1, per key, from the PC keyboard scancode tables.
// The make code of a key in set 1 is also what the 8042's translation turns
// the key's set-2 make code into.
struct KeyCodes {
  uint8_t set2;
  uint8_t set1;
};
// clang-format off
constexpr KeyCodes kKeys[] = {
    // Main block, row by row.
    {0x76, 0x01},  // Esc
    {0x16, 0x02}, {0x1e, 0x03}, {0x26, 0x04}, {0x25, 0x05}, {0x2e, 0x06},  // 1-5
    {0x36, 0x07}, {0x3d, 0x08}, {0x3e, 0x09}, {0x46, 0x0a}, {0x45, 0x0b},  // 6-0
    {0x4e, 0x0c}, {0x55, 0x0d}, {0x66, 0x0e},                              // - = Backspace
    {0x0d, 0x0f},                                                          // Tab
    {0x15, 0x10}, {0x1d, 0x11}, {0x24, 0x12}, {0x2d, 0x13}, {0x2c, 0x14},  // Q W E R T
    {0x35, 0x15}, {0x3c, 0x16}, {0x43, 0x17}, {0x44, 0x18}, {0x4d, 0x19},  // Y U I O P
    {0x54, 0x1a}, {0x5b, 0x1b}, {0x5a, 0x1c},                              // [ ] Enter
    {0x14, 0x1d},                                                          // Left Ctrl
    {0x1c, 0x1e}, {0x1b, 0x1f}, {0x23, 0x20}, {0x2b, 0x21}, {0x34, 0x22},  // A S D F G
    {0x33, 0x23}, {0x3b, 0x24}, {0x42, 0x25}, {0x4b, 0x26},                // H J K L
    {0x4c, 0x27}, {0x52, 0x28}, {0x0e, 0x29},                              // ; ' `
    {0x12, 0x2a}, {0x5d, 0x2b},                                            // Left Shift, backslash
    {0x1a, 0x2c}, {0x22, 0x2d}, {0x21, 0x2e}, {0x2a, 0x2f}, {0x32, 0x30},  // Z X C V B
    {0x31, 0x31}, {0x3a, 0x32}, {0x41, 0x33}, {0x49, 0x34}, {0x4a, 0x35},  // N M , . /
    {0x59, 0x36},                                                          // Right Shift
    {0x7c, 0x37},                                                          // Keypad *
    {0x11, 0x38}, {0x29, 0x39}, {0x58, 0x3a},                              // Left Alt, Space, Caps
    // Function keys.
    {0x05, 0x3b}, {0x06, 0x3c}, {0x04, 0x3d}, {0x0c, 0x3e}, {0x03, 0x3f},  // F1-F5
    {0x0b, 0x40}, {0x83, 0x41}, {0x0a, 0x42}, {0x01, 0x43}, {0x09, 0x44},  // F6-F10
    {0x78, 0x57}, {0x07, 0x58},                                            // F11 F12
    {0x77, 0x45}, {0x7e, 0x46},                                            // Num Lock, Scroll Lock
    // Keypad.
    {0x6c, 0x47}, {0x75, 0x48}, {0x7d, 0x49}, {0x7b, 0x4a},  // 7 8 9 -
    {0x6b, 0x4b}, {0x73, 0x4c}, {0x74, 0x4d}, {0x79, 0x4e},  // 4 5 6 +
    {0x69, 0x4f}, {0x72, 0x50}, {0x7a, 0x51},                // 1 2 3
    {0x70, 0x52}, {0x71, 0x53},                              // 0 .
    {0x84, 0x54},                                            // SysRq (Alt+Print Screen)
    {0x61, 0x56},                                            // 102nd key (ISO \|)
    // F13-F24.
    {0x08, 0x64}, {0x10, 0x65}, {0x18, 0x66}, {0x20, 0x67}, {0x28, 0x68}, {0x30, 0x69},
    {0x38, 0x6a}, {0x40, 0x6b}, {0x48, 0x6c}, {0x50, 0x6d}, {0x57, 0x6e}, {0x5f, 0x76},
    // Japanese and Brazilian keys.
    {0x13, 0x70},  // Katakana/Hiragana
    {0x51, 0x73},  // Ro
    {0x64, 0x79},  // Henkan
    {0x67, 0x7b},  // Muhenkan
    {0x6a, 0x7d},  // Yen
    {0x6d, 0x7e},  // Keypad , (Brazil)
    // Key detection error / overrun: 0x00 in set 2, 0xff in set 1.
    {0x00, 0xff},
};
// clang-format on

// Everything not produced by a key (prefixes 0xE0/0xE1, replies such as 0xAA,
// 0xFA, 0xFE, 0xEE, and the ID byte 0xAB) passes through unchanged.
constexpr std::array<uint8_t, 256> MakeSet2ToSet1() {
  std::array<uint8_t, 256> table{};
  for (int i = 0; i < 256; ++i) table[i] = static_cast<uint8_t>(i);
  for (const KeyCodes& k : kKeys) table[k.set2] = k.set1;
  return table;
}
constexpr std::array<uint8_t, 256> kSet2ToSet1 = MakeSet2ToSet1();

constexpr uint8_t kBreakPrefix = 0xf0;  // set 2: the next code is a release
constexpr uint8_t kSet1Break = 0x80;    // set 1: release = make | 0x80

// --- Queue operations. Invariant: bytes/flags beyond `count` are zero.

void EraseRange(Queue& q, size_t from, size_t to) {
  std::copy(q.bytes.begin() + to, q.bytes.begin() + q.count, q.bytes.begin() + from);
  std::copy(q.flags.begin() + to, q.flags.begin() + q.count, q.flags.begin() + from);
  const size_t new_count = q.count - (to - from);
  std::fill(q.bytes.begin() + new_count, q.bytes.begin() + q.count, 0);
  std::fill(q.flags.begin() + new_count, q.flags.begin() + q.count, 0);
  q.count = static_cast<uint8_t>(new_count);
}

uint8_t PopFront(Queue& q, uint8_t* flags = nullptr) {
  const uint8_t byte = q.bytes[0];
  if (flags != nullptr) *flags = q.flags[0];
  EraseRange(q, 0, 1);
  return byte;
}

void Clear(Queue& q) { EraseRange(q, 0, q.count); }

// The first input unit none of whose bytes has been delivered (count if none).
size_t FirstWholeInput(const Queue& q) {
  for (size_t i = 0; i < q.count; ++i) {
    if ((q.flags[i] & (I8042::kUnitStart | I8042::kInput)) == (I8042::kUnitStart | I8042::kInput)) {
      return i;
    }
  }
  return q.count;
}

bool DropOldestInput(Queue& q) {
  const size_t start = FirstWholeInput(q);
  if (start == q.count) return false;
  size_t end = start + 1;
  while (end < q.count && !(q.flags[end] & I8042::kUnitStart)) ++end;
  EraseRange(q, start, end);
  return true;
}

void DropAllInput(Queue& q) {
  while (DropOldestInput(q)) {
  }
}

// Adds a unit: input at the end, a reply ahead of all input not yet started.
// Makes room by dropping the oldest input; returns false (and drops the new
// unit) if that is not enough.
bool PushUnit(Queue& q, const uint8_t* data, size_t n, bool input) {
  if (n == 0 || n > I8042::kQueueSize) return false;
  while (q.count + n > I8042::kQueueSize) {
    if (!DropOldestInput(q)) return false;
  }
  const size_t at = input ? q.count : FirstWholeInput(q);
  std::copy_backward(q.bytes.begin() + at, q.bytes.begin() + q.count,
                     q.bytes.begin() + q.count + n);
  std::copy_backward(q.flags.begin() + at, q.flags.begin() + q.count,
                     q.flags.begin() + q.count + n);
  for (size_t i = 0; i < n; ++i) {
    q.bytes[at + i] = data[i];
    q.flags[at + i] =
        static_cast<uint8_t>((i == 0 ? I8042::kUnitStart : 0) | (input ? I8042::kInput : 0));
  }
  q.count = static_cast<uint8_t>(q.count + n);
  return true;
}

// Sanitizes a restored queue.
void NormalizeQueue(Queue& q, size_t capacity, uint8_t flag_mask) {
  q.count = static_cast<uint8_t>(std::min<size_t>(q.count, capacity));
  for (size_t i = 0; i < q.flags.size(); ++i) {
    if (i >= q.count) {
      q.bytes[i] = 0;
      q.flags[i] = 0;
    } else {
      q.flags[i] &= flag_mask;
    }
  }
}

bool QueueEq(const Queue& a, const Queue& b) {
  return a.count == b.count && a.bytes == b.bytes && a.flags == b.flags;
}

// PS/2 2:1 scaling of one axis (stream mode only).
int64_t Scale2to1(int64_t v) {
  static constexpr int64_t kSmall[6] = {0, 1, 1, 3, 6, 9};
  const int64_t mag = std::min<int64_t>(v < 0 ? -v : v, 1 << 20);
  const int64_t scaled = mag < 6 ? kSmall[mag] : 2 * mag;
  return v < 0 ? -scaled : scaled;
}

int32_t SaturatingAdd(int32_t a, int64_t b) {
  return static_cast<int32_t>(std::clamp<int64_t>(a + b, std::numeric_limits<int32_t>::min(),
                                                  std::numeric_limits<int32_t>::max()));
}

}  // namespace

bool operator==(const I8042::State& a, const I8042::State& b) {
  const I8042::Keyboard& ka = a.keyboard;
  const I8042::Keyboard& kb = b.keyboard;
  const I8042::Mouse& ma = a.mouse;
  const I8042::Mouse& mb = b.mouse;
  return a.ram == b.ram && a.output_port == b.output_port &&
         a.pending_command == b.pending_command && a.last_write_command == b.last_write_command &&
         a.obf == b.obf && a.out_byte == b.out_byte && a.out_aux == b.out_aux &&
         a.last_delivered_aux == b.last_delivered_aux && a.translate_break == b.translate_break &&
         QueueEq(a.controller, b.controller) && QueueEq(a.keyboard_queue, b.keyboard_queue) &&
         QueueEq(a.mouse_queue, b.mouse_queue) && ka.scanning == kb.scanning &&
         ka.scancode_set == kb.scancode_set && ka.leds == kb.leds && ka.typematic == kb.typematic &&
         ka.pending_command == kb.pending_command && ka.last_byte == kb.last_byte &&
         ma.reporting == mb.reporting && ma.remote == mb.remote && ma.wrap == mb.wrap &&
         ma.scaling_2to1 == mb.scaling_2to1 && ma.resolution == mb.resolution &&
         ma.sample_rate == mb.sample_rate && ma.id == mb.id && ma.rate_history == mb.rate_history &&
         ma.pending_command == mb.pending_command && ma.buttons == mb.buttons &&
         ma.remote_dx == mb.remote_dx && ma.remote_dy == mb.remote_dy &&
         ma.remote_dz == mb.remote_dz && ma.last_byte == mb.last_byte &&
         a.irq1_asserted == b.irq1_asserted && a.irq12_asserted == b.irq12_asserted;
}

I8042::I8042(IrqFn irq1, IrqFn irq12, ResetFn on_reset)
    : irq1_(std::move(irq1)), irq12_(std::move(irq12)), on_reset_(std::move(on_reset)) {}

uint8_t I8042::Read(uint16_t port) {
  if (port == kCommandPort) return Status();
  if (port != kDataPort) return 0xff;
  const uint8_t value = s_.out_byte;  // with OBF clear: the stale byte
  if (s_.obf) {
    s_.obf = false;
    UpdateIrqs();  // the line drops, so the next byte is a new edge
    Pump();
  }
  return value;
}

void I8042::Write(uint16_t port, uint8_t value) {
  if (port == kCommandPort) {
    s_.last_write_command = true;
    ControllerCommand(value);
  } else if (port == kDataPort) {
    s_.last_write_command = false;
    const uint8_t command = s_.pending_command;
    s_.pending_command = 0;
    if (command != 0) {
      ControllerData(command, value);
    } else {
      KeyboardCommand(value);
    }
  } else {
    return;
  }
  Pump();
}

void I8042::KeyboardInput(const uint8_t* scancodes, size_t n) {
  if (!s_.keyboard.scanning || n == 0 || n > kQueueSize) return;
  std::array<uint8_t, kQueueSize> unit;
  size_t len = 0;
  if (s_.keyboard.scancode_set == 1) {
    bool brk = false;
    for (size_t i = 0; i < n; ++i) {
      if (scancodes[i] == kBreakPrefix) {
        brk = true;
        continue;
      }
      unit[len++] = static_cast<uint8_t>(kSet2ToSet1[scancodes[i]] | (brk ? kSet1Break : 0));
      brk = false;
    }
  } else {
    std::copy(scancodes, scancodes + n, unit.begin());
    len = n;
  }
  if (len == 0) return;
  s_.keyboard.last_byte = unit[len - 1];
  PushUnit(s_.keyboard_queue, unit.data(), len, /*input=*/true);
  Pump();
}

void I8042::MouseInput(int dx, int dy, int dz, uint8_t buttons) {
  Mouse& m = s_.mouse;
  m.buttons = buttons & (kButtonLeft | kButtonRight | kButtonMiddle | kButtonSide | kButtonExtra);
  const int64_t x = dx;
  const int64_t y = -int64_t{dy};  // PS/2: positive is up
  if (m.wrap) return;
  if (m.remote) {
    m.remote_dx = SaturatingAdd(m.remote_dx, x);
    m.remote_dy = SaturatingAdd(m.remote_dy, y);
    m.remote_dz = SaturatingAdd(m.remote_dz, dz);
    return;
  }
  if (!m.reporting) return;
  uint8_t packet[4];
  const size_t len = m.scaling_2to1 ? EncodeMousePacket(Scale2to1(x), Scale2to1(y), dz, packet)
                                    : EncodeMousePacket(x, y, dz, packet);
  m.last_byte = packet[len - 1];
  PushUnit(s_.mouse_queue, packet, len, /*input=*/true);
  Pump();
}

void I8042::Reset() {
  const bool irq1 = s_.irq1_asserted;
  const bool irq12 = s_.irq12_asserted;
  s_ = State{};
  s_.irq1_asserted = irq1;
  s_.irq12_asserted = irq12;
  UpdateIrqs();
}

void I8042::Restore(const State& s) {
  s_ = s;
  const uint8_t pc = s_.pending_command;
  if (!((pc >= kCtlWriteRamFirst && pc <= kCtlWriteRamLast) ||
        (pc >= kCtlWriteOutputPort && pc <= kCtlWriteAux))) {
    s_.pending_command = 0;
  }
  s_.output_port |= 0x01;
  NormalizeQueue(s_.controller, kControllerQueueSize, kUnitStart | kAux);
  for (size_t i = 0; i < s_.controller.count; ++i) s_.controller.flags[i] |= kUnitStart;
  NormalizeQueue(s_.keyboard_queue, kQueueSize, kUnitStart | kInput);
  NormalizeQueue(s_.mouse_queue, kQueueSize, kUnitStart | kInput);
  Keyboard& k = s_.keyboard;
  if (k.scancode_set != 1 && k.scancode_set != 2) k.scancode_set = 2;
  k.leds &= 0x07;
  k.typematic &= 0x7f;
  if (k.pending_command != kKbdSetLeds && k.pending_command != kKbdScancodeSet &&
      k.pending_command != kKbdTypematic) {
    k.pending_command = 0;
  }
  Mouse& m = s_.mouse;
  m.resolution &= 0x03;
  if (m.id != 0 && m.id != 3 && m.id != 4) m.id = 0;
  if (m.pending_command != kAuxSetResolution && m.pending_command != kAuxSampleRate) {
    m.pending_command = 0;
  }
  m.buttons &= kButtonLeft | kButtonRight | kButtonMiddle | kButtonSide | kButtonExtra;
  Pump();
}

uint8_t I8042::Status() const {
  uint8_t status = kStsUnlocked;
  if (s_.obf) status |= kStsObf;
  if (s_.obf && s_.out_aux) status |= kStsAuxData;
  if (s_.ram[0] & kCmdSys) status |= kStsSys;
  if (s_.last_write_command) status |= kStsCommand;
  return status;
}

void I8042::ControllerCommand(uint8_t command) {
  s_.pending_command = 0;  // a command cancels one still waiting for data
  uint8_t& ccb = s_.ram[0];
  if (command >= kCtlReadRamFirst && command <= kCtlReadRamLast) {
    ControllerReply(s_.ram[command - kCtlReadRamFirst], false);
    return;
  }
  if (command >= kCtlWriteRamFirst && command <= kCtlWriteRamLast) {
    s_.pending_command = command;
    return;
  }
  if (command >= kCtlPulseFirst) {
    // Bits 3:0 select output port lines to pulse low; bit 0 is CPU reset.
    if (!(command & 0x01) && on_reset_) on_reset_();
    return;
  }
  switch (command) {
    case kCtlPasswordCheck:
      ControllerReply(kNoPassword, false);
      break;
    case kCtlAuxDisable:
      ccb |= kCmdAuxDisable;
      break;
    case kCtlAuxEnable:
      ccb &= static_cast<uint8_t>(~kCmdAuxDisable);
      break;
    case kCtlAuxTest:
    case kCtlKbdTest:
      ControllerReply(kInterfaceTestOk, false);
      break;
    case kCtlSelfTest:
      ccb |= kCmdSys;  // a passed self test sets the system flag
      ControllerReply(kSelfTestOk, false);
      break;
    case kCtlKbdDisable:
      ccb |= kCmdKbdDisable;
      break;
    case kCtlKbdEnable:
      ccb &= static_cast<uint8_t>(~kCmdKbdDisable);
      break;
    case kCtlReadOutputPort: {
      uint8_t port = s_.output_port & 0xcf;
      if (s_.obf) port |= s_.out_aux ? 0x20 : 0x10;  // bits 4/5: output buffer full
      ControllerReply(port, false);
      break;
    }
    case kCtlWriteOutputPort:
    case kCtlWriteKbdBuffer:
    case kCtlWriteAuxBuffer:
    case kCtlWriteAux:
      s_.pending_command = command;
      break;
    default:
      break;  // unknown or unimplemented: ignored
  }
}

void I8042::ControllerData(uint8_t command, uint8_t value) {
  if (command >= kCtlWriteRamFirst && command <= kCtlWriteRamLast) {
    s_.ram[command - kCtlWriteRamFirst] = value;
    return;
  }
  switch (command) {
    case kCtlWriteOutputPort:
      s_.output_port = value | 0x01;  // the reset line is released after the pulse
      if (!(value & 0x01) && on_reset_) on_reset_();
      break;
    case kCtlWriteKbdBuffer:
      ControllerReply(value, false);
      break;
    case kCtlWriteAuxBuffer:
      ControllerReply(value, true);
      break;
    case kCtlWriteAux:
      MouseCommand(value);
      break;
    default:
      break;
  }
}

void I8042::KeyboardCommand(uint8_t value) {
  Keyboard& k = s_.keyboard;
  const uint8_t pending = k.pending_command;
  k.pending_command = 0;
  // An argument has bit 7 clear; anything else is a new command.
  if (pending != 0 && value < 0x80) {
    switch (pending) {
      case kKbdSetLeds:
        k.leds = value & 0x07;
        KeyboardReply({kAck});
        break;
      case kKbdTypematic:
        k.typematic = value & 0x7f;
        KeyboardReply({kAck});
        break;
      case kKbdScancodeSet:
        if (value == 0) {
          KeyboardReply({kAck, k.scancode_set});
        } else if (value == 1 || value == 2) {
          k.scancode_set = value;
          KeyboardReply({kAck});
        } else {
          KeyboardReply({kResend});  // set 3 is not supported
        }
        break;
      default:
        break;
    }
    return;
  }
  switch (value) {
    case kKbdSetLeds:
    case kKbdScancodeSet:
    case kKbdTypematic:
      k.pending_command = value;
      KeyboardReply({kAck});
      break;
    case kKbdEcho:
      KeyboardReply({kKbdEcho});
      break;
    case kKbdIdentify:
      KeyboardReply({kAck, 0xab, 0x83});  // MF2 keyboard
      break;
    case kKbdEnable:
      DropAllInput(s_.keyboard_queue);
      k.scanning = true;
      KeyboardReply({kAck});
      break;
    case kKbdDefaultDisable:
    case kKbdDefault:
      DropAllInput(s_.keyboard_queue);
      k.scanning = value == kKbdDefault;
      k.scancode_set = 2;
      k.typematic = Keyboard{}.typematic;
      KeyboardReply({kAck});
      break;
    case kKbdResend:
      KeyboardReply({k.last_byte});
      break;
    case kKbdReset:
      Clear(s_.keyboard_queue);
      k = Keyboard{};
      KeyboardReply({kAck, kSelfTestPassed});
      break;
    default:
      KeyboardReply({kResend});
      break;
  }
}

void I8042::MouseCommand(uint8_t value) {
  Mouse& m = s_.mouse;
  if (m.wrap && value != kAuxResetWrap && value != kAuxReset) {
    MouseReply({value});  // wrap mode echoes everything else
    return;
  }
  const uint8_t pending = m.pending_command;
  m.pending_command = 0;
  if (pending != 0 && value < kAuxFirstCommand) {
    if (pending == kAuxSetResolution) {
      m.rate_history = {};
      if (value <= 3) {
        m.resolution = value;
        MouseReply({kAck});
      } else {
        MouseReply({kResend});
      }
    } else {  // kAuxSampleRate
      m.sample_rate = value;
      m.rate_history = {m.rate_history[1], m.rate_history[2], value};
      // The magic sequences that unlock the wheel and the extra buttons.
      if (m.id == 0 && m.rate_history == std::array<uint8_t, 3>{200, 100, 80}) m.id = 3;
      if (m.id == 3 && m.rate_history == std::array<uint8_t, 3>{200, 200, 80}) m.id = 4;
      MouseReply({kAck});
    }
    return;
  }
  if (value != kAuxSampleRate) m.rate_history = {};
  switch (value) {
    case kAuxScaling1to1:
    case kAuxScaling2to1:
      m.scaling_2to1 = value == kAuxScaling2to1;
      MouseReply({kAck});
      break;
    case kAuxSetResolution:
    case kAuxSampleRate:
      m.pending_command = value;
      MouseReply({kAck});
      break;
    case kAuxStatus: {
      // Byte 1: mode, enable, scaling, then left, middle, right buttons.
      const uint8_t status = static_cast<uint8_t>(
          (m.remote ? 0x40 : 0) | (m.reporting ? 0x20 : 0) | (m.scaling_2to1 ? 0x10 : 0) |
          ((m.buttons & kButtonLeft) ? 0x04 : 0) | ((m.buttons & kButtonMiddle) ? 0x02 : 0) |
          ((m.buttons & kButtonRight) ? 0x01 : 0));
      MouseReply({kAck, status, m.resolution, m.sample_rate});
      break;
    }
    case kAuxStreamMode:
    case kAuxRemoteMode:
      m.remote = value == kAuxRemoteMode;
      m.remote_dx = m.remote_dy = m.remote_dz = 0;
      MouseReply({kAck});
      break;
    case kAuxReadData: {
      uint8_t reply[5] = {kAck};
      const size_t len = EncodeMousePacket(m.remote_dx, m.remote_dy, m.remote_dz, reply + 1);
      m.remote_dx = m.remote_dy = m.remote_dz = 0;
      DeviceReply(/*mouse=*/true, reply, len + 1);
      break;
    }
    case kAuxResetWrap:
      m.wrap = false;
      MouseReply({kAck});
      break;
    case kAuxWrapMode:
      m.wrap = true;
      MouseReply({kAck});
      break;
    case kAuxGetId:
      MouseReply({kAck, m.id});
      break;
    case kAuxEnable:
      DropAllInput(s_.mouse_queue);
      m.reporting = true;
      MouseReply({kAck});
      break;
    case kAuxDisable:
      DropAllInput(s_.mouse_queue);
      m.reporting = false;
      MouseReply({kAck});
      break;
    case kAuxDefault:
      DropAllInput(s_.mouse_queue);
      m.reporting = false;
      m.remote = false;
      m.scaling_2to1 = false;
      m.resolution = Mouse{}.resolution;
      m.sample_rate = Mouse{}.sample_rate;
      m.remote_dx = m.remote_dy = m.remote_dz = 0;
      MouseReply({kAck});
      break;
    case kAuxResend:
      MouseReply({m.last_byte});
      break;
    case kAuxReset: {
      Clear(s_.mouse_queue);
      const uint8_t buttons = m.buttons;  // still physically held
      m = Mouse{};
      m.buttons = buttons;
      MouseReply({kAck, kSelfTestPassed, 0x00});
      break;
    }
    default:
      MouseReply({kResend});
      break;
  }
}

void I8042::DeviceReply(bool mouse, const uint8_t* bytes, size_t n) {
  if (n == 0) return;
  if (mouse) {
    s_.mouse.last_byte = bytes[n - 1];
    PushUnit(s_.mouse_queue, bytes, n, /*input=*/false);
  } else {
    s_.keyboard.last_byte = bytes[n - 1];
    PushUnit(s_.keyboard_queue, bytes, n, /*input=*/false);
  }
}

void I8042::KeyboardReply(std::initializer_list<uint8_t> bytes) {
  DeviceReply(/*mouse=*/false, bytes.begin(), bytes.size());
}

void I8042::MouseReply(std::initializer_list<uint8_t> bytes) {
  DeviceReply(/*mouse=*/true, bytes.begin(), bytes.size());
}

void I8042::ControllerReply(uint8_t byte, bool aux) {
  Queue& q = s_.controller;
  if (q.count >= kControllerQueueSize) return;  // a guest that never reads
  q.bytes[q.count] = byte;
  q.flags[q.count] = static_cast<uint8_t>(kUnitStart | (aux ? kAux : 0));
  ++q.count;
}

size_t I8042::EncodeMousePacket(int64_t x, int64_t y, int64_t z, uint8_t* out) const {
  const Mouse& m = s_.mouse;
  uint8_t head = 0x08 | (m.buttons & (kButtonLeft | kButtonRight | kButtonMiddle));
  // 9-bit two's complement per axis: sign in the first byte, low 8 bits in
  // the axis byte; beyond the range, saturate and set the overflow bit.
  auto axis = [&head](int64_t v, uint8_t sign_bit, uint8_t overflow_bit) {
    if (v > 255 || v < -256) {
      head |= overflow_bit;
      v = std::clamp<int64_t>(v, -256, 255);
    }
    if (v < 0) head |= sign_bit;
    return static_cast<uint8_t>(v & 0xff);
  };
  out[1] = axis(x, 0x10, 0x40);
  out[2] = axis(y, 0x20, 0x80);
  out[0] = head;
  if (m.id == 0) return 3;
  const int64_t wheel = std::clamp<int64_t>(z, -8, 7);
  if (m.id == 3) {
    out[3] = static_cast<uint8_t>(wheel & 0xff);
  } else {
    out[3] = static_cast<uint8_t>((wheel & 0x0f) | ((m.buttons & kButtonSide) ? 0x10 : 0) |
                                  ((m.buttons & kButtonExtra) ? 0x20 : 0));
  }
  return 4;
}

void I8042::Pump() {
  const uint8_t ccb = s_.ram[0];
  while (!s_.obf) {
    if (s_.controller.count > 0) {
      uint8_t flags = 0;
      s_.out_byte = PopFront(s_.controller, &flags);
      s_.out_aux = flags & kAux;
      s_.obf = true;
      break;
    }
    const bool kbd_ready = !(ccb & kCmdKbdDisable) && s_.keyboard_queue.count > 0;
    const bool aux_ready = !(ccb & kCmdAuxDisable) && s_.mouse_queue.count > 0;
    if (!kbd_ready && !aux_ready) break;
    if (aux_ready && (!kbd_ready || !s_.last_delivered_aux)) {
      s_.out_byte = PopFront(s_.mouse_queue);
      s_.out_aux = true;
      s_.obf = true;
      s_.last_delivered_aux = true;
      break;
    }
    uint8_t byte = PopFront(s_.keyboard_queue);
    s_.last_delivered_aux = false;
    if (ccb & kCmdTranslate) {
      if (byte == kBreakPrefix) {
        s_.translate_break = true;
        continue;  // swallowed; the next byte carries the release bit
      }
      byte = static_cast<uint8_t>(kSet2ToSet1[byte] | (s_.translate_break ? kSet1Break : 0));
      s_.translate_break = false;
    }
    s_.out_byte = byte;
    s_.out_aux = false;
    s_.obf = true;
  }
  UpdateIrqs();
}

void I8042::UpdateIrqs() {
  const uint8_t ccb = s_.ram[0];
  const bool irq1 = s_.obf && !s_.out_aux && (ccb & kCmdKbdInt);
  const bool irq12 = s_.obf && s_.out_aux && (ccb & kCmdAuxInt);
  if (irq1 != s_.irq1_asserted) {
    s_.irq1_asserted = irq1;
    if (irq1_) irq1_(irq1);
  }
  if (irq12 != s_.irq12_asserted) {
    s_.irq12_asserted = irq12;
    if (irq12_) irq12_(irq12);
  }
}

}  // namespace hv::lpc
