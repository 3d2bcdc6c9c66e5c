#include "devproc/lpc/serial_port.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "common/fd.h"
#include "common/log.h"

namespace hv::lpc {
namespace {
constexpr size_t kRecentBytes = 16384;  // enough for a panic message and its stack trace
}  // namespace

SerialPort::SerialPort(std::string name, uint16_t base, int irq_fd)
    : name_(std::move(name)),
      base_(base),
      irq_fd_(irq_fd),
      uart_([this](uint8_t byte) { Transmit(byte); }, [this](bool up) { SetIrq(up); }) {}

void SerialPort::UseStreams(int in_fd, int out_fd) {
  in_fd_ = in_fd;
  out_fd_ = out_fd;
}

void SerialPort::UseListeningSocket(int listen_fd) { listen_fd_ = listen_fd; }

void SerialPort::Attach(devproc::DeviceContext& ctx) {
  ctx_ = &ctx;
  // A driver polls LSR before every byte it sends; THR writes never change it
  // (transmission is instantaneous) unless in loopback, when QuietLsr says so.
  lsr_handle_ = ctx.PublishRegister(msg::AddressSpace::PIO, base_ + Uart16550::kLsr, 1,
                                    base_ + Uart16550::kRbrThrDll);
  PublishLsr();
  if (listen_fd_ >= 0) {
    fcntl(listen_fd_, F_SETFL, fcntl(listen_fd_, F_GETFL) | O_NONBLOCK);
    ctx.WatchFd(listen_fd_, POLLIN, [this](short) { AcceptClient(); });
  }
  if (in_fd_ >= 0) {
    // Not O_NONBLOCK: stdin's file description is shared with the user's shell.
    // Reads happen only after poll() says there is data.
    ctx.WatchFd(in_fd_, POLLIN, [this](short) { PullInput(); });
  }
}

void SerialPort::SetIrq(bool asserted) {
  if (!asserted || irq_fd_ < 0) return;  // ISA IRQs are edge-triggered: the rising edge
  SignalEventFd(irq_fd_);
}

uint8_t SerialPort::Read(uint8_t offset) {
  uint8_t v = uart_.Read(offset);
  UpdateInputWatch();
  PublishLsr();
  return v;
}

void SerialPort::Write(uint8_t offset, uint8_t value) {
  uart_.Write(offset, value);
  UpdateInputWatch();
  PublishLsr();
}

void SerialPort::PublishLsr() {
  if (ctx_ == nullptr || lsr_handle_ < 0) return;
  std::optional<uint8_t> lsr = uart_.QuietLsr();
  ctx_->SetPublished(lsr_handle_, lsr ? std::optional<uint64_t>(*lsr) : std::nullopt);
}

std::string SerialPort::RecentOutput() const { return recent_; }

void SerialPort::RestoreUart(const Uart16550::State& state) {
  uart_.Restore(state);
  UpdateInputWatch();
  PublishLsr();
}

void SerialPort::Transmit(uint8_t byte) {
  recent_.push_back(static_cast<char>(byte));
  if (recent_.size() > 2 * kRecentBytes) recent_.erase(0, recent_.size() - kRecentBytes);
  if (out_fd_ < 0) return;  // a socket port with no client: the byte is gone, as on a wire
  for (;;) {
    ssize_t n = write(out_fd_, &byte, 1);
    if (n == 1) return;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN && listen_fd_ < 0) {
      // stdio: a full terminal or pipe applies back-pressure to the guest.
      pollfd p = {out_fd_, POLLOUT, 0};
      poll(&p, 1, 100);
      continue;
    }
    if (listen_fd_ >= 0) DropClient();  // a client that stopped reading is let go
    return;
  }
}

void SerialPort::UpdateInputWatch() {
  if (ctx_ == nullptr || in_fd_ < 0 || input_closed_) return;
  ctx_->SetFdEvents(in_fd_, uart_.RxSpace() > 0 ? POLLIN : 0);
}

void SerialPort::PullInput() {
  size_t space = uart_.RxSpace();
  if (space == 0) {
    UpdateInputWatch();
    return;
  }
  uint8_t buf[Uart16550::kFifoSize];
  ssize_t n = read(in_fd_, buf, std::min(space, sizeof(buf)));
  if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
    if (listen_fd_ >= 0) {
      DropClient();  // the client went away; the next one may attach
    } else {
      input_closed_ = true;  // end of stdin: the port just stops receiving
      ctx_->UnwatchFd(in_fd_);
    }
    return;
  }
  if (n > 0) uart_.Receive(buf, n);
  UpdateInputWatch();
  PublishLsr();
}

void SerialPort::AcceptClient() {
  int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (fd < 0) return;
  if (in_fd_ >= 0) {
    // One client at a time, as on a real serial line.
    const char kBusy[] = "hv: this console already has a client\r\n";
    ssize_t ignored = write(fd, kBusy, sizeof(kBusy) - 1);
    (void)ignored;
    close(fd);
    return;
  }
  // Output to a client that stops reading waits at most 100 ms per byte.
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  timeval tv = {0, 100000};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  in_fd_ = out_fd_ = fd;
  input_closed_ = false;
  HV_DEBUG("%s: client attached", name_.c_str());
  ctx_->WatchFd(fd, POLLIN, [this](short) { PullInput(); });
  UpdateInputWatch();
}

void SerialPort::DropClient() {
  if (in_fd_ < 0) return;
  ctx_->UnwatchFd(in_fd_);
  close(in_fd_);
  in_fd_ = out_fd_ = -1;
  HV_DEBUG("%s: client detached", name_.c_str());
}

}  // namespace hv::lpc
