// The lpc device process: bhyve's lpc, the PC's legacy I/O behind a PCI-ISA
// bridge function. Each piece is a small model; this file wires them to the
// runtime: the bridge's config space, the COM ports, the pvpanic port and the
// debug exit port.
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "devproc/lpc/serial_port.h"
#include "devproc/runtime/device_runtime.h"
#include "devproc/runtime/pci_config.h"

namespace hv::lpc {
namespace {

// Writing a byte V here ends the VM with guest status V (0: a clean power-off).
// Port and meaning match QEMU's isa-debug-exit, so test programs run on both.
constexpr uint16_t kDebugExitPort = 0xf4;
// pvpanic (ACPI id QEMU0001): the guest writes bit 0 when its kernel panics.
constexpr uint16_t kPvPanicPort = 0x505;
constexpr uint8_t kPvPanicPanicked = 1 << 0;
constexpr uint8_t kPvPanicCrashLoaded = 1 << 1;

struct ComPort {
  const char* name;
  uint16_t base;
  int irq;
};
constexpr ComPort kComPorts[] = {
    {"com1", 0x3f8, 4}, {"com2", 0x2f8, 3}, {"com3", 0x3e8, 4}, {"com4", 0x2e8, 3}};

devproc::PciIdentity BridgeIdentity() {
  devproc::PciIdentity id;
  id.vendor = 0x8086;  // the ids of a PIIX3 ISA bridge, which every guest knows
  id.device = 0x7000;
  id.class_code = 0x060100;  // bridge, ISA
  id.multifunction = false;
  return id;
}

class LpcDevice : public devproc::DeviceModel {
 public:
  LpcDevice() : bridge_(BridgeIdentity()) {}

  absl::StatusOr<std::vector<devproc::RangeSpec>> Configure(
      devproc::DeviceContext& ctx, msg::ConfigureDevice::Reader config) override {
    ctx_ = &ctx;
    std::vector<devproc::RangeSpec> ranges;
    auto device = config.getDevice();
    config_base_ = (uint64_t{device.getSlot()} << 15) | (uint64_t{device.getFunction()} << 12);
    ranges.push_back({msg::AddressSpace::PCI_CONFIG, config_base_, 4096, true});

    auto lpc = config.getLpc();
    schema::Serial::Reader serials[] = {lpc.getCom1(), lpc.getCom2(), lpc.getCom3(), lpc.getCom4()};
    for (int i = 0; i < 4; ++i) {
      if (serials[i].isNone()) continue;
      const ComPort& com = kComPorts[i];
      auto irq = ctx.NamedFd(absl::StrCat("irq", com.irq));
      auto port = std::make_unique<SerialPort>(com.name, com.base, irq.ok() ? *irq : -1);
      if (serials[i].isStdio()) {
        auto in = ctx.NamedFd(absl::StrCat(com.name, ".in"));
        auto out = ctx.NamedFd(absl::StrCat(com.name, ".out"));
        if (!in.ok()) return in.status();
        if (!out.ok()) return out.status();
        port->UseStreams(*in, *out);
      } else {
        auto listen = ctx.NamedFd(absl::StrCat(com.name, ".listen"));
        if (!listen.ok()) return listen.status();
        port->UseListeningSocket(*listen);
      }
      port->Attach(ctx);
      ranges.push_back({msg::AddressSpace::PIO, com.base, 8, /*posted_writes=*/true});
      ports_.push_back(std::move(port));
    }
    ranges.push_back({msg::AddressSpace::PIO, kDebugExitPort, 1, true});
    ranges.push_back({msg::AddressSpace::PIO, kPvPanicPort, 1, true});
    return ranges;
  }

  uint64_t Read(msg::AddressSpace space, uint64_t addr, uint8_t size) override {
    if (space == msg::AddressSpace::PCI_CONFIG) return bridge_.Read(addr - config_base_, size);
    if (space == msg::AddressSpace::PIO && addr == kPvPanicPort) {
      return kPvPanicPanicked | kPvPanicCrashLoaded;  // the events we understand
    }
    uint64_t value = 0;
    for (uint8_t i = 0; i < size; ++i) value |= uint64_t{ReadByte(space, addr + i)} << (8 * i);
    return value;
  }

  void Write(msg::AddressSpace space, uint64_t addr, uint8_t size, uint64_t value) override {
    if (space == msg::AddressSpace::PCI_CONFIG) {
      bridge_.Write(addr - config_base_, size, value);
      return;
    }
    if (space != msg::AddressSpace::PIO) return;
    if (addr == kDebugExitPort) {
      uint32_t status = value & 0xff;
      ctx_->GuestExit(msg::ExitReason::POWER_OFF, status,
                      absl::StrCat("guest wrote ", status, " to the debug exit port"));
      return;
    }
    if (addr == kPvPanicPort) {
      if (value & kPvPanicPanicked) {
        ctx_->GuestExit(msg::ExitReason::PANIC, 0,
                        absl::StrCat("the guest kernel panicked", ConsoleTail()));
      }
      return;
    }
    for (uint8_t i = 0; i < size; ++i) WriteByte(addr + i, (value >> (8 * i)) & 0xff);
  }

 private:
  // The last console lines, which say why a kernel panicked.
  std::string ConsoleTail() const {
    if (ports_.empty()) return "";
    std::string out = ports_[0]->RecentOutput();
    size_t lines = 0, at = out.size();
    while (at > 0 && lines < 12) {
      at = out.rfind('\n', at - 1);
      if (at == std::string::npos) {
        at = 0;
        break;
      }
      ++lines;
    }
    std::string tail = out.substr(at);
    if (tail.empty()) return "";
    return absl::StrCat("; last console output:\n", tail);
  }

  SerialPort* PortAt(uint64_t addr) {
    for (auto& p : ports_) {
      if (addr >= p->base() && addr < p->base() + 8u) return p.get();
    }
    return nullptr;
  }
  uint8_t ReadByte(msg::AddressSpace space, uint64_t addr) {
    if (space != msg::AddressSpace::PIO) return 0xff;
    SerialPort* port = PortAt(addr);
    return port == nullptr ? 0xff : port->Read(addr - port->base());
  }
  void WriteByte(uint64_t addr, uint8_t value) {
    SerialPort* port = PortAt(addr);
    if (port != nullptr) port->Write(addr - port->base(), value);
  }

  devproc::DeviceContext* ctx_ = nullptr;
  devproc::PciConfigSpace bridge_;
  uint64_t config_base_ = 0;
  std::vector<std::unique_ptr<SerialPort>> ports_;
};

}  // namespace
}  // namespace hv::lpc

int main(int argc, char** argv) {
  return hv::devproc::RunDevice(argc, argv, "lpc", std::make_unique<hv::lpc::LpcDevice>());
}
