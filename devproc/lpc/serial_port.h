// A COM port: a 16550A wired to a backend and an interrupt line.
// Backends: stdio (the broker's stdin/stdout) or a listening Unix socket that one
// client at a time attaches to (bhyve's -l com1,socket,PATH).
#ifndef HV_DEVPROC_LPC_SERIAL_PORT_H_
#define HV_DEVPROC_LPC_SERIAL_PORT_H_

#include <cstdint>
#include <string>

#include "devproc/lpc/uart16550.h"
#include "devproc/runtime/device_runtime.h"

namespace hv::lpc {

class SerialPort {
 public:
  // `irq_fd`: an eventfd the core turned into the port's ISA IRQ (edge: one write
  // per rising edge); -1 for none.
  SerialPort(std::string name, uint16_t base, int irq_fd);

  // Backends; call one before Attach.
  void UseStreams(int in_fd, int out_fd);
  void UseListeningSocket(int listen_fd);
  void Attach(devproc::DeviceContext& ctx);

  uint16_t base() const { return base_; }
  uint8_t Read(uint8_t offset);
  void Write(uint8_t offset, uint8_t value);

  // Restart: the UART's registers and receive FIFO.
  Uart16550::State SaveUart() const { return uart_.Save(); }
  void RestoreUart(const Uart16550::State& state);

  // The last lines the guest printed (for reports such as a kernel panic).
  std::string RecentOutput() const;

 private:
  void Transmit(uint8_t byte);
  void PullInput();
  void AcceptClient();
  void DropClient();
  void UpdateInputWatch();
  void SetIrq(bool asserted);
  void PublishLsr();

  std::string name_;
  uint16_t base_;
  int irq_fd_;
  int in_fd_ = -1;
  int out_fd_ = -1;
  int listen_fd_ = -1;
  bool input_closed_ = false;
  devproc::DeviceContext* ctx_ = nullptr;
  std::string recent_;  // a bounded tail of the output
  Uart16550 uart_;
  int lsr_handle_ = -1;  // LSR, read by the core from shared memory while quiet
};

}  // namespace hv::lpc

#endif  // HV_DEVPROC_LPC_SERIAL_PORT_H_
