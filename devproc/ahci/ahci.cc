// The AHCI device process (bhyve's -s N,ahci,hd:PATH,cd:PATH / ahci-hd / ahci-cd):
// an Intel ICH9 AHCI controller (8086:2922, class 01.06.01) whose ports are
// disks or ATAPI CD-ROMs. The broker opens each port's file and hands it over as
// "port<N>" (an ISO read-only); BAR 5 (ABAR) register accesses arrive through
// the exit channel, writes posted; interrupts leave on the "msi" eventfd (the
// core routes it from the MSI capability) or INTx.
#include <unistd.h>

#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/fd.h"
#include "common/log.h"
#include "devproc/ahci/ahci_hba.h"
#include "devproc/ahci/ahci_options.h"
#include "devproc/ahci/seccomp_policy.h"
#include "devproc/block/block_backend.h"
#include "devproc/runtime/device_runtime.h"
#include "devproc/runtime/pci_config.h"

namespace hv::ahci {
namespace {

constexpr uint16_t kIntelVendor = 0x8086;
constexpr uint16_t kIch9Ahci = 0x2922;
constexpr uint32_t kClassAhci = 0x010601;  // mass storage, SATA, AHCI 1.0
constexpr int kAbar = 5;

class AhciDevice : public devproc::DeviceModel {
 public:
  ~AhciDevice() override {
    hba_.reset();  // waits for commands in flight, which point into the backends
    backends_.clear();
  }

  absl::StatusOr<std::vector<devproc::RangeSpec>> Configure(
      devproc::DeviceContext& ctx, msg::ConfigureDevice::Reader config) override {
    ctx_ = &ctx;
    auto device = config.getDevice();
    std::string emulation = device.getEmulation();
    struct Wanted {
      bool cdrom;
      std::string path;
      std::vector<std::pair<std::string, std::string>> options;
    };
    std::vector<Wanted> wanted;
    if (emulation == "ahci-hd" || emulation == "ahci-cd") {
      Wanted w{emulation == "ahci-cd", device.getPath(), {}};
      for (auto o : device.getOptions()) w.options.push_back({o.getKey(), o.getValue()});
      wanted.push_back(std::move(w));
    } else {
      for (auto port : device.getPorts()) {
        Wanted w{port.getType() == schema::AhciPortType::CD, port.getPath(), {}};
        for (auto o : port.getOptions()) w.options.push_back({o.getKey(), o.getValue()});
        wanted.push_back(std::move(w));
      }
    }
    if (wanted.empty() || wanted.size() > kMaxPorts) {
      return absl::InvalidArgumentError(
          absl::StrCat(emulation, ": ", wanted.size(), " ports; want 1 to ", kMaxPorts));
    }
    std::vector<PortSetup> ports;
    for (size_t i = 0; i < wanted.size(); ++i) {
      auto options = ParseAhciPortOptions(wanted[i].cdrom, wanted[i].options);
      if (!options.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("port ", i, ": ", options.status().message()));
      }
      auto fd = ctx.NamedFd(absl::StrCat("port", i));
      if (!fd.ok()) return fd.status();
      block::BlockBackendOptions b;
      b.read_only = options->read_only;
      b.logical_block_size = options->logical_sector_size;
      b.physical_block_size = options->physical_sector_size;
      // Two workers per port let queued commands overlap; past 16 ports one
      // each keeps the process well under the sandbox's 64 threads.
      b.num_workers = wanted.size() <= 16 ? 2 : 1;
      auto backend = block::BlockBackend::Create(Fd(*fd), b);
      if (!backend.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("port ", i, ": ", backend.status().message()));
      }
      PortSetup setup;
      setup.options = *options;
      setup.serial = options->serial.empty() ? DefaultAhciSerial(wanted[i].path, i) : options->serial;
      setup.backend = backend->get();
      ctx.WatchFd((*backend)->event_fd(), POLLIN, [this](short) { hba_->DrainCompletions(); });
      backends_.push_back(std::move(*backend));
      ports.push_back(std::move(setup));
    }
    hba_ = std::make_unique<Hba>(ctx.memory(), std::move(ports), [this] { Interrupt(); });

    devproc::PciIdentity id;
    id.vendor = kIntelVendor;
    id.device = kIch9Ahci;
    id.subsystem_vendor = kIntelVendor;
    id.subsystem = kIch9Ahci;
    id.revision = 2;
    id.class_code = kClassAhci;
    id.multifunction = config.getMultifunction();
    id.interrupt_pin = 1;  // INTA
    config_ = std::make_unique<devproc::PciConfigSpace>(id);
    config_->AddBar(kAbar, devproc::BarKind::kMem32, hba_->abar_size());
    // MSI, single message, 64-bit addresses: enable and MME are writable (MME
    // is ignored: one vector), address and data entirely.
    std::vector<uint8_t> msi(14, 0);
    msi[0] = 0x05;
    msi[2] = 0x80;  // 64-bit address capable, one message
    std::vector<uint8_t> writable(14, 0);
    writable[2] = 0x71;
    for (int i = 4; i < 12; ++i) writable[i] = 0xff;
    writable[4] = 0xfc;
    writable[12] = writable[13] = 0xff;
    msi_cap_ = config_->AddCapability(msi, writable);

    auto msi_fd = ctx.NamedFd("msi");
    if (!msi_fd.ok()) return msi_fd.status();
    msi_fd_ = *msi_fd;
    if (auto fd = ctx.NamedFd("intx"); fd.ok()) intx_fd_ = *fd;
    if (auto resample = ctx.NamedFd("intx.resample"); resample.ok()) {
      int rfd = *resample;
      // Level-triggered INTx: after the guest's EOI, raise it again while pending.
      ctx.WatchFd(rfd, POLLIN, [this, rfd](short) {
        uint64_t count;
        ssize_t ignored = read(rfd, &count, sizeof(count));
        (void)ignored;
        if (!MsiEnabled() && hba_->InterruptPending()) SignalEventFd(intx_fd_);
      });
    }
    config_base_ = (uint64_t{device.getSlot()} << 15) | (uint64_t{device.getFunction()} << 12);
    HV_DEBUG("ahci: %zu ports, ABAR %#x bytes", backends_.size(), hba_->abar_size());
    return std::vector<devproc::RangeSpec>{
        {msg::AddressSpace::PCI_CONFIG, config_base_, 4096, true}};
  }

  std::optional<devproc::PciFunctionSpec> PciFunction() const override {
    devproc::PciFunctionSpec spec;
    spec.bars.push_back({kAbar, msg::BarKind::MEM32, hba_->abar_size()});
    spec.msi_cap = msi_cap_;
    return spec;
  }

  uint64_t Read(msg::AddressSpace space, uint64_t addr, uint8_t size) override {
    if (space == msg::AddressSpace::PCI_CONFIG) return config_->Read(addr - config_base_, size);
    uint64_t base = config_->BarAddress(kAbar);
    if (space != msg::AddressSpace::MMIO || base == 0 || addr < base ||
        addr - base >= hba_->abar_size()) {
      return ~0ull;
    }
    return hba_->Read(addr - base, size);
  }

  void Write(msg::AddressSpace space, uint64_t addr, uint8_t size, uint64_t value) override {
    if (space == msg::AddressSpace::PCI_CONFIG) {
      bool was_enabled = MsiEnabled();
      config_->Write(addr - config_base_, size, value);
      // Switching between INTx and MSI: what is pending goes out the new way.
      if (MsiEnabled() != was_enabled && hba_->InterruptPending()) Interrupt();
      return;
    }
    uint64_t base = config_->BarAddress(kAbar);
    if (space != msg::AddressSpace::MMIO || base == 0 || addr < base ||
        addr - base >= hba_->abar_size()) {
      return;
    }
    hba_->Write(addr - base, size, value);
  }

 private:
  bool MsiEnabled() const { return config_->RawByte(msi_cap_ + 2) & 1; }

  void Interrupt() {
    if (MsiEnabled()) {
      SignalEventFd(msi_fd_);
    } else if (intx_fd_ >= 0 && !(config_->command() & 0x400)) {  // INTx disable
      SignalEventFd(intx_fd_);
    }
  }

  devproc::DeviceContext* ctx_ = nullptr;
  std::vector<std::unique_ptr<block::BlockBackend>> backends_;
  std::unique_ptr<Hba> hba_;
  std::unique_ptr<devproc::PciConfigSpace> config_;
  uint64_t config_base_ = 0;
  uint8_t msi_cap_ = 0;
  int msi_fd_ = -1;
  int intx_fd_ = -1;
};

}  // namespace
}  // namespace hv::ahci

int main(int argc, char** argv) {
  return hv::devproc::RunDevice(argc, argv, "ahci", std::make_unique<hv::ahci::AhciDevice>(),
                                hv::ahci::AhciSyscallPolicy());
}
