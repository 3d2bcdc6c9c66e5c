// The lpc device process: bhyve's lpc, the PC's legacy I/O behind an LPC/ISA
// bridge. Today: the COM ports (16550A) with the stdio backend, and the debug
// exit port. Each piece is a small model; this file wires them to the runtime.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "devproc/lpc/uart16550.h"
#include "devproc/runtime/device_runtime.h"

namespace hv::lpc {
namespace {

// Writing a byte V here ends the VM with guest status V (0: a clean power-off).
// Port and meaning match QEMU's isa-debug-exit, so test programs run on both.
constexpr uint16_t kDebugExitPort = 0xf4;

struct ComPort {
  const char* name;
  uint16_t base;
};
constexpr ComPort kComPorts[] = {{"com1", 0x3f8}, {"com2", 0x2f8}, {"com3", 0x3e8}, {"com4", 0x2e8}};

// A COM port wired to a backend: bytes from `in_fd` into the receive FIFO (only
// as many as fit: the rest waits in the fd), transmitted bytes to `out_fd`.
class SerialPort {
 public:
  SerialPort(std::string name, uint16_t base, int in_fd, int out_fd)
      : name_(std::move(name)),
        base_(base),
        in_fd_(in_fd),
        out_fd_(out_fd),
        uart_([this](uint8_t byte) { Transmit(byte); }, [](bool) {}) {}

  uint16_t base() const { return base_; }
  Uart16550& uart() { return uart_; }

  void Attach(devproc::DeviceContext& ctx) {
    ctx_ = &ctx;
    if (in_fd_ >= 0) {
      fcntl(in_fd_, F_SETFL, fcntl(in_fd_, F_GETFL) | O_NONBLOCK);
      ctx.WatchFd(in_fd_, POLLIN, [this](short) { PullInput(); });
    }
  }

  // After every guest access: resume reading the backend once the FIFO has room.
  void UpdateInputWatch() {
    if (ctx_ == nullptr || in_fd_ < 0 || input_closed_) return;
    ctx_->SetFdEvents(in_fd_, uart_.RxSpace() > 0 ? POLLIN : 0);
  }

 private:
  void Transmit(uint8_t byte) {
    if (out_fd_ < 0) return;
    for (;;) {
      ssize_t n = write(out_fd_, &byte, 1);
      if (n == 1 || (n < 0 && errno != EINTR && errno != EAGAIN)) return;
    }
  }

  void PullInput() {
    size_t space = uart_.RxSpace();
    if (space == 0) {
      UpdateInputWatch();
      return;
    }
    uint8_t buf[Uart16550::kFifoSize];
    ssize_t n = read(in_fd_, buf, std::min(space, sizeof(buf)));
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
      input_closed_ = true;  // end of input: the port just stops receiving
      ctx_->UnwatchFd(in_fd_);
      return;
    }
    if (n > 0) uart_.Receive(buf, n);
    UpdateInputWatch();
  }

  std::string name_;
  uint16_t base_;
  int in_fd_;
  int out_fd_;
  bool input_closed_ = false;
  devproc::DeviceContext* ctx_ = nullptr;
  Uart16550 uart_;
};

class LpcDevice : public devproc::DeviceModel {
 public:
  absl::StatusOr<std::vector<devproc::RangeSpec>> Configure(
      devproc::DeviceContext& ctx, msg::ConfigureDevice::Reader config) override {
    ctx_ = &ctx;
    std::vector<devproc::RangeSpec> ranges;
    auto lpc = config.getLpc();
    schema::Serial::Reader serials[] = {lpc.getCom1(), lpc.getCom2(), lpc.getCom3(), lpc.getCom4()};
    for (int i = 0; i < 4; ++i) {
      if (serials[i].isNone()) continue;
      if (!serials[i].isStdio()) {
        return absl::UnimplementedError(
            absl::StrCat(kComPorts[i].name, ": only the stdio backend is supported so far"));
      }
      auto in = ctx.NamedFd(absl::StrCat(kComPorts[i].name, ".in"));
      auto out = ctx.NamedFd(absl::StrCat(kComPorts[i].name, ".out"));
      if (!in.ok()) return in.status();
      if (!out.ok()) return out.status();
      ports_.push_back(std::make_unique<SerialPort>(kComPorts[i].name, kComPorts[i].base, *in, *out));
      ports_.back()->Attach(ctx);
      ranges.push_back({msg::AddressSpace::PIO, kComPorts[i].base, 8, /*posted_writes=*/true});
    }
    ranges.push_back({msg::AddressSpace::PIO, kDebugExitPort, 1, true});
    return ranges;
  }

  uint64_t Read(msg::AddressSpace space, uint64_t addr, uint8_t size) override {
    uint64_t value = 0;
    for (uint8_t i = 0; i < size; ++i) value |= uint64_t{ReadByte(space, addr + i)} << (8 * i);
    return value;
  }

  void Write(msg::AddressSpace space, uint64_t addr, uint8_t size, uint64_t value) override {
    if (space == msg::AddressSpace::PIO && addr == kDebugExitPort) {
      uint32_t status = value & 0xff;
      HV_DEBUG("debug exit port: status %u", status);
      ctx_->GuestExit(msg::ExitReason::POWER_OFF, status,
                      absl::StrCat("guest wrote ", status, " to the debug exit port"));
      return;
    }
    for (uint8_t i = 0; i < size; ++i) WriteByte(space, addr + i, (value >> (8 * i)) & 0xff);
  }

 private:
  SerialPort* PortAt(msg::AddressSpace space, uint64_t addr) {
    if (space != msg::AddressSpace::PIO) return nullptr;
    for (auto& p : ports_) {
      if (addr >= p->base() && addr < p->base() + 8u) return p.get();
    }
    return nullptr;
  }
  uint8_t ReadByte(msg::AddressSpace space, uint64_t addr) {
    SerialPort* port = PortAt(space, addr);
    if (port == nullptr) return 0xff;
    uint8_t v = port->uart().Read(addr - port->base());
    port->UpdateInputWatch();
    return v;
  }
  void WriteByte(msg::AddressSpace space, uint64_t addr, uint8_t value) {
    SerialPort* port = PortAt(space, addr);
    if (port == nullptr) return;
    port->uart().Write(addr - port->base(), value);
    port->UpdateInputWatch();
  }

  devproc::DeviceContext* ctx_ = nullptr;
  std::vector<std::unique_ptr<SerialPort>> ports_;
};

}  // namespace
}  // namespace hv::lpc

int main(int argc, char** argv) {
  return hv::devproc::RunDevice(argc, argv, "lpc", std::make_unique<hv::lpc::LpcDevice>());
}
