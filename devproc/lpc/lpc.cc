// The lpc device process: bhyve's lpc, the PC's legacy I/O behind a PCI-ISA
// bridge function. Each piece is a small model; this file wires them to the
// runtime: the bridge's config space, the COM ports, the pvpanic port and the
// debug exit port.
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <optional>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/fd.h"
#include "common/clock.h"
#include "common/device_state.h"
#include "common/log.h"
#include "devproc/lpc/acpi_pm.h"
#include "devproc/lpc/i8042.h"
#include "devproc/lpc/rtc_mc146818.h"
#include "devproc/lpc/seccomp_policy.h"
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
// The RTC and the ACPI fixed hardware (the FADT in hvcore/acpi names the same ports).
constexpr uint16_t kRtcPort = 0x70;
constexpr uint16_t kPm1aEvtPort = 0x400;
constexpr uint16_t kPm1aCntPort = 0x404;
constexpr uint16_t kPmTmrPort = 0x408;
constexpr uint16_t kResetPort = 0xcf9;

// An eventfd-backed interrupt line: edge lines pulse on the rising edge; the one
// level line (the SCI) is raised again after EOI while it is still asserted.
class IrqLine {
 public:
  explicit IrqLine(int fd = -1) : fd_(fd) {}
  void Pulse() const {
    if (fd_ < 0) return;
    SignalEventFd(fd_);
  }
  void Edge(bool asserted) const {
    if (asserted) Pulse();
  }

 private:
  int fd_;
};

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

  ~LpcDevice() override {
    if (timer_fd_ >= 0) close(timer_fd_);
  }

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
    if (auto s = ConfigurePlatform(ctx, config, ranges); !s.ok()) return s;
    return ranges;
  }

  uint64_t Read(msg::AddressSpace space, uint64_t addr, uint8_t size) override {
    if (space == msg::AddressSpace::PCI_CONFIG) return bridge_.Read(addr - config_base_, size);
    if (space == msg::AddressSpace::PIO && addr == kPvPanicPort) {
      return kPvPanicPanicked | kPvPanicCrashLoaded;  // the events we understand
    }
    if (space == msg::AddressSpace::PIO) {
      if (auto block = PmBlockAt(addr)) {
        uint32_t v = pm_->Read(block->first, addr - block->second, size);
        ArmTimer();
        return v;
      }
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
      if ((value & kPvPanicPanicked) && !panic_reported_) ReportPanicSoon();
      return;
    }
    if (auto block = PmBlockAt(addr)) {
      pm_->Write(block->first, addr - block->second, size, value);
      ArmTimer();
      return;
    }
    for (uint8_t i = 0; i < size; ++i) WriteByte(addr + i, (value >> (8 * i)) & 0xff);
  }

  // Restart: everything the guest can observe of the lpc, as plain structs.
  // Bytes the guest wrote to a COM port and that reached the backend are not
  // part of it; the receive FIFO is.
  static constexpr uint32_t kStateVersion = 1;
  static constexpr uint32_t kBridgeStateBytes = 0x40;  // the type 0 header
  bool SaveState(std::string* out) const override {
    StateWriter w(out);
    w.Put(kStateVersion);
    w.Put(static_cast<uint32_t>(ports_.size()));
    for (const auto& p : ports_) w.Put(p->SaveUart());
    w.Put(rtc_->Save());
    w.Put(pm_->Save());
    w.Put(i8042_->Save());
    w.Put(panic_reported_);
    std::array<uint8_t, kBridgeStateBytes> bridge;
    for (uint32_t i = 0; i < kBridgeStateBytes; ++i) bridge[i] = bridge_.RawByte(i);
    w.Put(bridge);
    return true;
  }

  absl::Status RestoreState(std::string_view state) override {
    StateReader r(state);
    uint32_t version = 0, ports = 0;
    if (!r.Get(&version) || version != kStateVersion) {
      return absl::DataLossError(absl::StrCat("lpc state version ", version, ", want ", kStateVersion));
    }
    if (!r.Get(&ports) || ports != ports_.size()) {
      return absl::DataLossError("lpc state: the COM ports differ from the configuration");
    }
    std::vector<Uart16550::State> uarts(ports);
    for (auto& u : uarts) {
      if (!r.Get(&u)) return absl::DataLossError("lpc state: truncated");
    }
    Rtc::State rtc;
    AcpiPm::State pm;
    I8042::State i8042;
    bool panic_reported = false;
    std::array<uint8_t, kBridgeStateBytes> bridge;
    if (!r.Get(&rtc) || !r.Get(&pm) || !r.Get(&i8042) || !r.Get(&panic_reported) ||
        !r.Get(&bridge)) {
      return absl::DataLossError("lpc state: truncated");
    }
    // The bridge's header as the guest left it, through the guest's own write
    // path (which keeps read-only bits); the status register has nothing to restore.
    for (uint32_t reg = 0x04; reg < kBridgeStateBytes; ++reg) {
      if (reg != 0x06 && reg != 0x07) bridge_.Write(reg, 1, bridge[reg]);
    }
    // Each model masks and clamps what it loads.
    for (size_t i = 0; i < ports_.size(); ++i) ports_[i]->RestoreUart(uarts[i]);
    rtc_->Restore(rtc);
    pm_->Restore(pm);
    i8042_->Restore(i8042);
    panic_reported_ = panic_reported;
    ArmTimer();
    return absl::OkStatus();
  }

  bool OnDeviceControl(msg::DeviceControl::Reader request) override {
    if (request.getAction() != msg::DeviceControl::Action::POWER_BUTTON || pm_ == nullptr) {
      return false;
    }
    HV_INFO("the ACPI power button is pressed");
    pm_->PressPowerButton();
    ArmTimer();
    return true;
  }

 private:
  absl::Status ConfigurePlatform(devproc::DeviceContext& ctx, msg::ConfigureDevice::Reader config,
                                 std::vector<devproc::RangeSpec>& ranges) {
    auto line = [&ctx](int irq) {
      auto fd = ctx.NamedFd(absl::StrCat("irq", irq));
      return IrqLine(fd.ok() ? *fd : -1);
    };
    irq1_ = line(1);
    irq8_ = line(8);
    irq9_ = line(9);
    irq12_ = line(12);
    rtc_ = std::make_unique<Rtc>([] { return ClockNs(CLOCK_REALTIME); },
                                 [] { return ClockNs(CLOCK_MONOTONIC); },
                                 [this](bool up) { irq8_.Edge(up); }, config.getRtcUtc());
    uint64_t below = 0, above = 0;
    for (auto r : config.getRam()) (r.getGpa() < (1ull << 32) ? below : above) += r.getSize();
    rtc_->SetMemory(below, above);
    pm_ = std::make_unique<AcpiPm>(
        [] { return ClockNs(CLOCK_MONOTONIC); }, [this](bool up) { irq9_.Edge(up); },
        [this](uint8_t slp_typ) {
          ctx_->GuestExit(msg::ExitReason::POWER_OFF, 0,
                          absl::StrCat("ACPI sleep state S", slp_typ, " (soft off)"));
        },
        [this] { ctx_->GuestExit(msg::ExitReason::RESET, 0, "reset through port 0xcf9"); });
    i8042_ = std::make_unique<I8042>(
        [this](bool up) { irq1_.Edge(up); }, [this](bool up) { irq12_.Edge(up); },
        [this] { ctx_->GuestExit(msg::ExitReason::RESET, 0, "reset through the i8042"); });
    // The SCI is level-triggered: after the guest's EOI, KVM signals the resample
    // fd, and a still-asserted SCI is raised again.
    auto resample = ctx.NamedFd("irq9.resample");
    if (resample.ok()) {
      int fd = *resample;
      ctx.WatchFd(fd, POLLIN, [this, fd](short) {
        uint64_t count;
        ssize_t ignored = read(fd, &count, sizeof(count));
        (void)ignored;
        if (pm_->SciAsserted()) irq9_.Pulse();
      });
    }
    timer_fd_ = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    if (timer_fd_ < 0) return absl::InternalError("timerfd_create failed");
    ctx.WatchFd(timer_fd_, POLLIN, [this](short) {
      uint64_t expirations;
      ssize_t ignored = read(timer_fd_, &expirations, sizeof(expirations));
      (void)ignored;
      rtc_->Advance();
      pm_->Advance();
      ArmTimer();
    });
    ranges.push_back({msg::AddressSpace::PIO, kRtcPort, 2, true});
    ranges.push_back({msg::AddressSpace::PIO, I8042::kDataPort, 1, true});
    ranges.push_back({msg::AddressSpace::PIO, I8042::kCommandPort, 1, true});
    ranges.push_back({msg::AddressSpace::PIO, kPm1aEvtPort, 4, true});
    ranges.push_back({msg::AddressSpace::PIO, kPm1aCntPort, 2, true});
    ranges.push_back({msg::AddressSpace::PIO, kPmTmrPort, 4, true});
    ranges.push_back({msg::AddressSpace::PIO, kResetPort, 1, true});
    return absl::OkStatus();
  }

  // The earliest deadline of the RTC and the PM timer, on the timerfd.
  void ArmTimer() {
    if (timer_fd_ < 0) return;
    std::optional<int64_t> next = rtc_->NextEventNs();
    if (auto pm = pm_->NextEventNs(); pm && (!next || *pm < *next)) next = pm;
    itimerspec spec = {};
    if (next) {
      int64_t at = std::max<int64_t>(*next, 1);
      spec.it_value.tv_sec = at / 1000000000;
      spec.it_value.tv_nsec = at % 1000000000;
    }
    timerfd_settime(timer_fd_, TFD_TIMER_ABSTIME, &spec, nullptr);
  }

  std::optional<std::pair<AcpiPm::Block, uint16_t>> PmBlockAt(uint64_t addr) const {
    if (addr >= kPm1aEvtPort && addr < kPm1aEvtPort + 4u) return {{AcpiPm::Block::kPm1aEvt, kPm1aEvtPort}};
    if (addr >= kPm1aCntPort && addr < kPm1aCntPort + 2u) return {{AcpiPm::Block::kPm1aCnt, kPm1aCntPort}};
    if (addr >= kPmTmrPort && addr < kPmTmrPort + 4u) return {{AcpiPm::Block::kPmTmr, kPmTmrPort}};
    if (addr == kResetPort) return {{AcpiPm::Block::kReset, kResetPort}};
    return std::nullopt;
  }

  // Linux notifies pvpanic before it flushes the panic message to the console:
  // give it a moment so that the report carries the message.
  void ReportPanicSoon() {
    panic_reported_ = true;
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    itimerspec spec = {};
    spec.it_value.tv_nsec = 800 * 1000 * 1000;
    if (fd < 0 || timerfd_settime(fd, 0, &spec, nullptr) != 0) {
      ctx_->GuestExit(msg::ExitReason::PANIC, 0,
                      absl::StrCat("the guest kernel panicked", ConsoleTail()));
      return;
    }
    ctx_->WatchFd(fd, POLLIN, [this, fd](short) {
      ctx_->UnwatchFd(fd);
      close(fd);
      ctx_->GuestExit(msg::ExitReason::PANIC, 0,
                      absl::StrCat("the guest kernel panicked", ConsoleTail()));
    });
  }

  // What the console said about the panic: Linux's "Kernel panic - not syncing:
  // <reason>" line first, then the last lines printed.
  std::string ConsoleTail() const {
    if (ports_.empty()) return "";
    std::string out = ports_[0]->RecentOutput();
    std::string reason;
    size_t at = out.rfind("Kernel panic - not syncing:");
    if (at != std::string::npos) {
      size_t eol = out.find_first_of("\r\n", at);
      reason = out.substr(at, eol == std::string::npos ? std::string::npos : eol - at);
    }
    size_t lines = 0, from = out.size();
    while (from > 0 && lines < 20) {
      from = out.rfind('\n', from - 1);
      if (from == std::string::npos) {
        from = 0;
        break;
      }
      ++lines;
    }
    std::string tail = out.substr(from);
    return absl::StrCat(reason.empty() ? "" : ": ", reason,
                        tail.empty() ? "" : "; last console output:\n", tail);
  }

  SerialPort* PortAt(uint64_t addr) {
    for (auto& p : ports_) {
      if (addr >= p->base() && addr < p->base() + 8u) return p.get();
    }
    return nullptr;
  }
  uint8_t ReadByte(msg::AddressSpace space, uint64_t addr) {
    if (space != msg::AddressSpace::PIO) return 0xff;
    if (addr == kRtcPort || addr == kRtcPort + 1u) {
      uint8_t v = rtc_->Read(addr - kRtcPort);
      ArmTimer();
      return v;
    }
    if (addr == I8042::kDataPort || addr == I8042::kCommandPort) return i8042_->Read(addr);
    SerialPort* port = PortAt(addr);
    return port == nullptr ? 0xff : port->Read(addr - port->base());
  }
  void WriteByte(uint64_t addr, uint8_t value) {
    if (addr == kRtcPort || addr == kRtcPort + 1u) {
      rtc_->Write(addr - kRtcPort, value);
      ArmTimer();
      return;
    }
    if (addr == I8042::kDataPort || addr == I8042::kCommandPort) {
      i8042_->Write(addr, value);
      return;
    }
    SerialPort* port = PortAt(addr);
    if (port != nullptr) port->Write(addr - port->base(), value);
  }

  devproc::DeviceContext* ctx_ = nullptr;
  IrqLine irq1_, irq8_, irq9_, irq12_;
  std::unique_ptr<Rtc> rtc_;
  std::unique_ptr<AcpiPm> pm_;
  std::unique_ptr<I8042> i8042_;
  int timer_fd_ = -1;
  bool panic_reported_ = false;
  devproc::PciConfigSpace bridge_;
  uint64_t config_base_ = 0;
  std::vector<std::unique_ptr<SerialPort>> ports_;
};

}  // namespace
}  // namespace hv::lpc

int main(int argc, char** argv) {
  return hv::devproc::RunDevice(argc, argv, "lpc", std::make_unique<hv::lpc::LpcDevice>(),
                                hv::lpc::LpcSyscallPolicy());
}
