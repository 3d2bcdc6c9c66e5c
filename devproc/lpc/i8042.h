// A model of the PC's 8042 keyboard controller (ports 0x60 data, 0x64
// status/command) with a PS/2 keyboard on its first port and a PS/2 mouse on
// its auxiliary port. Pure logic: no file descriptors, threads or timers. The
// owner feeds it guest port accesses (Read/Write) and host input
// (KeyboardInput/MouseInput), and gets the interrupt lines and reset requests
// back through callbacks.
//
// Data path: each device has a bounded queue of bytes on their way to the
// controller (kQueueSize each); the controller has a small queue of its own
// replies (command results, 0xD2/0xD3 bytes), which go first, and one output
// buffer that the guest reads at port 0x60. A device's bytes move into the
// output buffer only while that port is enabled in the command byte (a
// disabled port holds its device's clock low; the device keeps its bytes).
// With both ports ready, keyboard and mouse bytes alternate. With the
// translation bit set in the command byte, keyboard bytes are translated from
// scancode set 2 to set 1 on their way into the output buffer (a 0xF0 prefix
// is swallowed and sets bit 7 of the next byte), as on a PC.
//
// Queue overflow never blocks and never splits a unit: a call to
// KeyboardInput (one key event), a mouse packet and a command reply are each
// kept or dropped whole. When input does not fit, the oldest input units not
// yet started are dropped; command replies are never dropped for input and
// jump ahead of pending input, as a real device answers a command before
// sending more scancodes.
//
// Interrupts: IRQ 1 is asserted while the output buffer holds a keyboard (or
// controller) byte and the command byte enables keyboard interrupts, IRQ 12
// likewise for mouse bytes. The callbacks report level changes only, so every
// byte made available with its interrupt enabled produces one call with
// `true` (ISA IRQs 1 and 12 are edge-triggered: forward the level, or pulse
// on `true` and ignore `false`).
//
// The keyboard supports scancode sets 1 and 2 (set 3 is refused with 0xFE);
// KeyboardInput always takes set 2 and converts when set 1 is selected. There
// is no typematic repeat: the host side sends repeated make codes itself. The
// mouse is a standard PS/2 mouse that becomes an IntelliMouse (ID 3: wheel)
// or IntelliMouse Explorer (ID 4: wheel and buttons 4/5) after the usual
// sample-rate sequences (200,100,80 resp. 200,200,80). A20 (output port bit 1)
// is stored but has no effect: A20 is always enabled.
//
// Not thread-safe. Callbacks run synchronously inside the call that caused
// them and must not call back into the same I8042.
#ifndef HV_DEVPROC_LPC_I8042_H_
#define HV_DEVPROC_LPC_I8042_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>

namespace hv::lpc {

class I8042 {
 public:
  // The level of IRQ 1 (keyboard) or IRQ 12 (mouse); called only on change.
  using IrqFn = std::function<void(bool asserted)>;
  // The guest pulsed the CPU reset line (0xFE and friends, or output port
  // bit 0 cleared).
  using ResetFn = std::function<void()>;

  static constexpr uint16_t kDataPort = 0x60;
  static constexpr uint16_t kCommandPort = 0x64;  // the status register on reads

  // Status register
  static constexpr uint8_t kStsObf = 0x01;       // output buffer full
  static constexpr uint8_t kStsIbf = 0x02;       // input buffer full (always 0)
  static constexpr uint8_t kStsSys = 0x04;       // system flag (command byte bit 2)
  static constexpr uint8_t kStsCommand = 0x08;   // A2: last write was to port 0x64
  static constexpr uint8_t kStsUnlocked = 0x10;  // keyboard not inhibited by keylock
  static constexpr uint8_t kStsAuxData = 0x20;   // the output byte is from the mouse
  static constexpr uint8_t kStsTimeout = 0x40;
  static constexpr uint8_t kStsParity = 0x80;

  // Command byte (controller RAM byte 0)
  static constexpr uint8_t kCmdKbdInt = 0x01;
  static constexpr uint8_t kCmdAuxInt = 0x02;
  static constexpr uint8_t kCmdSys = 0x04;
  static constexpr uint8_t kCmdIgnoreLock = 0x08;
  static constexpr uint8_t kCmdKbdDisable = 0x10;
  static constexpr uint8_t kCmdAuxDisable = 0x20;
  static constexpr uint8_t kCmdTranslate = 0x40;
  // As a PC BIOS leaves it: both ports enabled with interrupts, translating.
  static constexpr uint8_t kInitialCommandByte = kCmdKbdInt | kCmdAuxInt | kCmdSys | kCmdTranslate;
  // Output port: bit 0 = reset line (1 = running), bit 1 = A20 gate.
  static constexpr uint8_t kInitialOutputPort = 0x03;

  // MouseInput buttons
  static constexpr uint8_t kButtonLeft = 0x01;
  static constexpr uint8_t kButtonRight = 0x02;
  static constexpr uint8_t kButtonMiddle = 0x04;
  static constexpr uint8_t kButtonSide = 0x08;   // button 4 (IntelliMouse Explorer)
  static constexpr uint8_t kButtonExtra = 0x10;  // button 5 (IntelliMouse Explorer)

  static constexpr size_t kQueueSize = 64;           // per device
  static constexpr size_t kControllerQueueSize = 8;  // controller replies

  // Per-byte flags in a Queue.
  static constexpr uint8_t kUnitStart = 0x01;  // first byte of a unit
  static constexpr uint8_t kInput = 0x02;      // part of an input unit (droppable)
  static constexpr uint8_t kAux = 0x04;        // controller queue: delivered as mouse data

  // Bytes in order, oldest first; entries at and beyond `count` are zero.
  struct Queue {
    std::array<uint8_t, kQueueSize> bytes{};
    std::array<uint8_t, kQueueSize> flags{};
    uint8_t count = 0;
  };

  struct Keyboard {
    bool scanning = true;
    uint8_t scancode_set = 2;     // 1 or 2
    uint8_t leds = 0;             // bit 0 scroll, 1 num, 2 caps lock
    uint8_t typematic = 0x2b;     // 10.9 characters/s after 500 ms
    uint8_t pending_command = 0;  // 0xED, 0xF0 or 0xF3 awaiting its argument; 0 = none
    uint8_t last_byte = 0;        // the last byte sent, for 0xFE (resend)
  };

  struct Mouse {
    bool reporting = false;  // data reporting (stream mode) enabled
    bool remote = false;     // remote mode: packets only on 0xEB
    bool wrap = false;       // wrap (echo) mode
    bool scaling_2to1 = false;
    uint8_t resolution = 2;  // 0-3: 1, 2, 4, 8 counts/mm
    uint8_t sample_rate = 100;
    uint8_t id = 0;                         // 0 standard, 3 IntelliMouse, 4 IntelliMouse Explorer
    std::array<uint8_t, 3> rate_history{};  // the last sample rates set in a row, oldest first
    uint8_t pending_command = 0;            // 0xE8 or 0xF3 awaiting its argument; 0 = none
    uint8_t buttons = 0;                    // kButton* currently held
    int32_t remote_dx = 0;                  // movement accumulated in remote mode (PS/2 axes)
    int32_t remote_dy = 0;
    int32_t remote_dz = 0;
    uint8_t last_byte = 0;  // the last byte sent, for 0xFE (resend)
  };

  // The whole state. Default-constructed, it is the state after power-on.
  struct State {
    std::array<uint8_t, 32> ram{kInitialCommandByte};  // ram[0] = command byte
    uint8_t output_port = kInitialOutputPort;
    uint8_t pending_command = 0;      // controller command awaiting a data byte; 0 = none
    bool last_write_command = false;  // status A2
    bool obf = false;
    uint8_t out_byte = 0;  // stays readable after the guest took it
    bool out_aux = false;
    bool last_delivered_aux = false;  // for alternating between the ports
    bool translate_break = false;     // translation swallowed a 0xF0
    Queue controller;                 // at most kControllerQueueSize, flags kAux only
    Queue keyboard_queue;
    Queue mouse_queue;
    Keyboard keyboard;
    Mouse mouse;
    bool irq1_asserted = false;  // the levels last reported through IrqFn
    bool irq12_asserted = false;

    friend bool operator==(const State& a, const State& b);
    friend bool operator!=(const State& a, const State& b) { return !(a == b); }
  };

  // Any callback may be empty.
  I8042(IrqFn irq1, IrqFn irq12, ResetFn on_reset);

  // Guest accesses with the real port numbers (0x60, 0x64). Other ports read
  // as 0xff and ignore writes.
  uint8_t Read(uint16_t port);
  void Write(uint16_t port, uint8_t value);

  // A key event from the host in scancode set 2, e.g. {0x1C} (A pressed),
  // {0xF0, 0x1C} (A released), {0xE0, 0xF0, 0x75} (Up released). One call is
  // one unit for the overflow policy. Ignored while the keyboard is not
  // scanning (after 0xF5) or if longer than kQueueSize.
  void KeyboardInput(const uint8_t* scancodes, size_t n);
  // Relative mouse movement from the host: dx > 0 right, dy > 0 down (screen
  // direction), dz > 0 wheel turned toward the user (scroll down); `buttons`
  // is the set of kButton* held after the movement. In stream mode with
  // reporting enabled this queues one packet (3 bytes, 4 with a wheel mouse);
  // movement beyond the 9-bit range is clamped and flagged in the overflow
  // bits, the wheel is clamped to -8..7. In remote mode the movement
  // accumulates until the guest asks for it (0xEB). Otherwise it is dropped.
  void MouseInput(int dx, int dy, int dz, uint8_t buttons);

  bool Irq1Asserted() const { return s_.irq1_asserted; }
  bool Irq12Asserted() const { return s_.irq12_asserted; }

  // Back to the power-on state (State{}); lowers the IRQs if they were up.
  void Reset();

  State Save() const { return s_; }
  // Loads `s` (invalid fields are masked/clamped). The IRQ levels in `s` are
  // taken as what the outside world currently sees; if the restored state
  // calls for different levels, the IrqFns are called.
  void Restore(const State& s);

 private:
  uint8_t Status() const;
  void ControllerCommand(uint8_t command);
  void ControllerData(uint8_t command, uint8_t value);
  void KeyboardCommand(uint8_t value);
  void MouseCommand(uint8_t value);
  // Queues a command reply from the keyboard or the mouse.
  void DeviceReply(bool mouse, const uint8_t* bytes, size_t n);
  void KeyboardReply(std::initializer_list<uint8_t> bytes);
  void MouseReply(std::initializer_list<uint8_t> bytes);
  void ControllerReply(uint8_t byte, bool aux);
  // A movement packet in PS/2 axes (y > 0 up) with the current buttons, in
  // the format of the current mouse ID; returns its length.
  size_t EncodeMousePacket(int64_t x, int64_t y, int64_t z, uint8_t* out) const;
  void Pump();  // fills the output buffer if it is empty
  void UpdateIrqs();

  IrqFn irq1_;
  IrqFn irq12_;
  ResetFn on_reset_;
  State s_;
};

}  // namespace hv::lpc

#endif  // HV_DEVPROC_LPC_I8042_H_
