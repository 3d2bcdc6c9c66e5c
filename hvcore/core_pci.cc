// The core's side of PCI functions that live in device processes: BAR mapping,
// MSI-X and MSI routes and queue doorbells (ioeventfds). All of it is decided from what
// the guest writes, as the core routes it, so nothing waits for a device.
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/log.h"
#include "hvcore/core.h"

namespace hv {
namespace {

devproc::BarKind ToBarKind(msg::BarKind k) {
  switch (k) {
    case msg::BarKind::IO:
      return devproc::BarKind::kIo;
    case msg::BarKind::MEM32:
      return devproc::BarKind::kMem32;
    default:
      return devproc::BarKind::kMem64;
  }
}

}  // namespace

absl::Status Core::AddPciFunction(uint32_t device, msg::DeviceInfo::Reader info) {
  auto pci = info.getPci();
  PciFunction f;
  f.device = device;
  f.slot = info.getSlot();
  f.function = info.getFunction();
  f.shadow = std::make_unique<devproc::PciConfigSpace>(devproc::PciIdentity{});
  for (auto bar : pci.getBars()) {
    if (bar.getIndex() > 5 || bar.getSize() == 0 || (bar.getSize() & (bar.getSize() - 1)) != 0 ||
        bar.getSize() > (1ull << 32)) {
      return absl::InvalidArgumentError(
          absl::StrCat(devices_[device].name, ": bad BAR ", bar.getIndex()));
    }
    f.shadow->AddBar(bar.getIndex(), ToBarKind(bar.getKind()), bar.getSize());
    f.bar_sizes.push_back({bar.getIndex(), bar.getSize()});
  }
  uint16_t vectors = pci.getMsixVectors();
  if (vectors > 0) {
    if (info.getMsixFds().size() != vectors || vectors > 2048) {
      return absl::InvalidArgumentError(
          absl::StrCat(devices_[device].name, ": MSI-X vectors and eventfds do not match"));
    }
    f.msix_bar = pci.getMsixBar();
    f.msix_table_offset = pci.getMsixTableOffset();
    f.msix_table.assign(vectors, {});
    f.first_msix_gsi = next_gsi_;
    next_gsi_ += vectors;
    for (uint16_t v = 0; v < vectors; ++v) {
      // The route appears when the guest programs the vector.
      if (auto s = vm_->AssignIrqfd(info.getMsixFds()[v], f.first_msix_gsi + v); !s.ok()) return s;
    }
  }
  if (pci.getMsiCap() != 0) {
    if (info.getMsiFd() < 0 || pci.getMsiCap() < 0x40 || pci.getMsiCap() > 0xf0) {
      return absl::InvalidArgumentError(
          absl::StrCat(devices_[device].name, ": MSI capability without an eventfd"));
    }
    f.msi_cap = pci.getMsiCap();
    f.msi_gsi = next_gsi_++;
    // The route appears when the guest programs the address.
    if (auto s = vm_->AssignIrqfd(info.getMsiFd(), f.msi_gsi); !s.ok()) return s;
  }
  if (pci.getNotifyQueues() > 0) {
    if (info.getNotifyFds().size() != pci.getNotifyQueues()) {
      return absl::InvalidArgumentError(
          absl::StrCat(devices_[device].name, ": notify queues and eventfds do not match"));
    }
    f.notify_bar = pci.getNotifyBar();
    f.notify_offset = pci.getNotifyOffset();
    f.notify_stride = pci.getNotifyStride();
    for (auto fd : info.getNotifyFds()) f.notify_fds.push_back(fd);
  }
  functions_.push_back(std::move(f));
  return absl::OkStatus();
}

Core::PciFunction* Core::FunctionAt(uint32_t slot, uint32_t function) {
  for (auto& f : functions_) {
    if (f.slot == slot && f.function == function) return &f;
  }
  return nullptr;
}

void Core::RebuildDispatch() {
  auto next = std::make_shared<IoDispatch>();
  for (const auto& [range, name] : fixed_ranges_) (void)next->Add(range, name);
  for (const auto& f : functions_) {
    for (const auto& [index, size] : f.bar_sizes) {
      uint64_t base = f.shadow->BarAddress(index);
      bool io = (f.shadow->Read(0x10 + 4 * index, 1) & 1) != 0;
      bool enabled = io ? f.shadow->io_enabled() : f.shadow->memory_enabled();
      if (!enabled || base == 0) continue;
      IoRangeOwner range{io ? msg::AddressSpace::PIO : msg::AddressSpace::MMIO, base, size,
                         f.device, true, index};
      if (auto s = next->Add(range, devices_[f.device].name.c_str()); !s.ok()) {
        // A guest that places BARs on top of each other gets neither mapped.
        HV_WARN("BAR %d not mapped: %s", index, std::string(s.message()).c_str());
      }
    }
  }
  std::atomic_store(&dispatch_, std::shared_ptr<const IoDispatch>(std::move(next)));
}

void Core::RemapPciFunction(PciFunction& f) {
  RebuildDispatch();
  if (f.notify_bar < 0) return;
  uint64_t base = f.shadow->BarAddress(f.notify_bar);
  uint64_t want = (f.shadow->memory_enabled() && base != 0) ? base + f.notify_offset : 0;
  if (want == f.notify_mapped) return;
  for (size_t q = 0; q < f.notify_fds.size(); ++q) {
    if (f.notify_mapped != 0) {
      (void)vm_->DeassignIoeventfd(f.notify_fds[q], f.notify_mapped + q * f.notify_stride, 0,
                                   false);
    }
    if (want != 0) {
      if (auto s = vm_->AssignIoeventfd(f.notify_fds[q], want + q * f.notify_stride, 0, false);
          !s.ok()) {
        HV_WARN("%s: queue %zu doorbell: %s", devices_[f.device].name.c_str(), q,
                std::string(s.message()).c_str());
      }
    }
  }
  f.notify_mapped = want;
}

absl::Status Core::UpdateRoutes() {
  std::vector<kvm::GsiRoute> routes = base_routes_;
  for (const auto& f : functions_) {
    for (size_t v = 0; v < f.msix_table.size(); ++v) {
      uint64_t address;
      uint32_t data;
      memcpy(&address, &f.msix_table[v][0], 8);
      memcpy(&data, &f.msix_table[v][8], 4);
      if (address == 0) continue;  // not programmed yet
      kvm::GsiRoute r{kvm::GsiRoute::Kind::kMsi, f.first_msix_gsi + static_cast<uint32_t>(v)};
      r.msi_address = address;
      r.msi_data = data;
      routes.push_back(r);
    }
  }
  for (const auto& f : functions_) {
    if (f.msi_cap == 0) continue;
    uint64_t address;
    uint32_t data = 0;
    memcpy(&address, &f.msi[4], 8);
    memcpy(&data, &f.msi[12], 2);
    if (address == 0) continue;
    kvm::GsiRoute r{kvm::GsiRoute::Kind::kMsi, f.msi_gsi};
    r.msi_address = address;
    r.msi_data = data;
    routes.push_back(r);
  }
  return vm_->SetGsiRouting(routes);
}

void Core::NoteMsiWrite(PciFunction& f, uint32_t reg, uint32_t size, uint32_t value) {
  if (f.msi_cap == 0 || reg + size <= f.msi_cap + 4u || reg >= f.msi_cap + 14u) return;
  bool changed = false;
  for (uint32_t i = 0; i < size; ++i) {
    uint32_t at = reg + i - f.msi_cap;  // address (4..11) and data (12..13) only
    if (reg + i < f.msi_cap || at < 4 || at >= 14) continue;
    uint8_t byte = value >> (8 * i);
    if (at == 4) byte &= 0xfc;  // the address is dword aligned
    if (f.msi[at] != byte) {
      f.msi[at] = byte;
      changed = true;
    }
  }
  if (changed) {
    if (auto s = UpdateRoutes(); !s.ok()) {
      HV_WARN("MSI route update: %s", std::string(s.message()).c_str());
    }
  }
}

void Core::NoteMsixWrite(const IoRangeOwner& owner, uint64_t addr, uint32_t size,
                         const uint8_t* data) {
  std::lock_guard<std::mutex> lock(pci_mu_);
  for (auto& f : functions_) {
    if (f.device != owner.device || f.msix_bar != owner.bar || f.msix_table.empty()) continue;
    uint64_t offset = addr - owner.base;
    uint64_t table_end = f.msix_table_offset + 16ull * f.msix_table.size();
    if (offset < f.msix_table_offset || offset + size > table_end) return;
    bool changed = false;
    for (uint32_t i = 0; i < size; ++i) {
      uint64_t at = offset + i - f.msix_table_offset;
      uint8_t& byte = f.msix_table[at / 16][at % 16];
      // Only the address and data words make a route; vector control is the device's.
      if (at % 16 < 12 && byte != data[i]) {
        byte = data[i];
        changed = true;
      }
    }
    if (changed) {
      if (auto s = UpdateRoutes(); !s.ok()) {
        HV_WARN("MSI-X route update: %s", std::string(s.message()).c_str());
      }
    }
    return;
  }
}

}  // namespace hv
