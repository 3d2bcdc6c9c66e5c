// The VM inside hvcore: the KVM VM and vCPUs, guest RAM, the loaded guest, and
// the vCPU loops that dispatch port and MMIO exits to device processes.
#ifndef HV_HVCORE_CORE_H_
#define HV_HVCORE_CORE_H_

#include <atomic>
#include <array>
#include <functional>
#include <mutex>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "common/exit_channel.h"
#include "common/guest_memory.h"
#include "devproc/runtime/pci_config.h"
#include "hvcore/acpi/acpi.h"
#include "hvcore/exit_profile.h"
#include "hvcore/io_dispatch.h"
#include "hvcore/pci_host.h"
#include "kdriver/kvm.h"
#include "schema/msg.capnp.h"

namespace hv {

class Core {
 public:
  // Called from vCPU threads when the guest ends the VM or a vCPU fails.
  using ExitSink = std::function<void(msg::ExitReason reason, uint32_t status, std::string detail)>;

  // `kvm_fd`: /dev/kvm as the broker opened it (-1: open it here).
  static absl::StatusOr<std::unique_ptr<Core>> Create(msg::ConfigureCore::Reader config,
                                                      ExitSink sink, int kvm_fd = -1);
  ~Core();

  absl::Status Start();
  // Stops every vCPU (a vCPU waiting on a device gives up) and joins the threads.
  void Stop();

 private:
  struct DeviceChannel {
    std::string name;
    void* base = nullptr;
    size_t bytes = 0;
    int doorbell_fd = -1;
  };
  // A device's PCI function as the core tracks it: a shadow of its BARs (fed the
  // same config writes the device sees) so that the core maps them synchronously,
  // and its MSI-X table, whose entries become KVM MSI routes.
  struct PciFunction {
    uint32_t device = 0;
    uint32_t slot = 0, function = 0;
    std::unique_ptr<devproc::PciConfigSpace> shadow;
    std::vector<std::pair<int, uint64_t>> bar_sizes;  // (index, size)
    int msix_bar = -1;
    uint32_t msix_table_offset = 0;
    std::vector<std::array<uint8_t, 16>> msix_table;
    uint32_t first_msix_gsi = 0;
    int notify_bar = -1;
    uint32_t notify_offset = 0, notify_stride = 0;
    std::vector<int> notify_fds;
    uint64_t notify_mapped = 0;  // guest address the ioeventfds sit at (0: none)
    // MSI (single message): the capability's offset (0: none), its address and
    // data as the guest wrote them, and the GSI its eventfd is bound to.
    uint8_t msi_cap = 0;
    std::array<uint8_t, 16> msi{};
    uint32_t msi_gsi = 0;
  };
  struct VcpuContext {
    std::unique_ptr<kvm::Vcpu> vcpu;
    std::vector<ExitChannelClient> channels;  // one per device
    std::thread thread;
    uint64_t unclaimed_accesses = 0;
    ExitProfile profile;  // filled only when profiling_
  };

  explicit Core(ExitSink sink) : sink_(std::move(sink)) {}
  absl::Status Build(msg::ConfigureCore::Reader config, int kvm_fd);
  // How the boot vCPU starts: the loader's choice.
  struct BootState {
    bool long_mode = false;  // Linux 64-bit entry; else PVH 32-bit
    uint64_t rip = 0;
    uint64_t rsi = 0;        // Linux: boot_params
    uint64_t rbx = 0;        // PVH: start_info
    uint64_t cr3 = 0;
    uint64_t gdt = 0;
    uint16_t gdt_limit = 0;
  };
  absl::StatusOr<BootState> LoadGuest(msg::ConfigureCore::Reader config,
                                      const std::vector<GuestRamRegion>& regions);
  absl::Status SetUpInterrupts(msg::ConfigureCore::Reader config);
  static acpi::Platform DescribePlatform(schema::Vm::Reader vm);
  absl::Status SetUpVcpu(VcpuContext& ctx, uint32_t id, const BootState& boot);
  bool PciConfigAccess(VcpuContext& ctx, uint32_t port, uint32_t size, bool is_write,
                       uint8_t* data);
  // Sends an access to the device that owns it, through the vCPU's exit channel.
  bool Forward(VcpuContext& ctx, const IoRangeOwner& owner, msg::AddressSpace space,
               uint64_t addr, uint32_t size, bool is_write, uint8_t* data);
  void VcpuLoop(VcpuContext* ctx);
  // Returns false when the vCPU must stop.
  bool HandleExit(VcpuContext& ctx);
  void RecordExit(VcpuContext& ctx, uint64_t ns);
  std::string ExitProfileReport() const;
  bool HandlePio(VcpuContext& ctx);
  bool HandleMmio(VcpuContext& ctx);
  // One access of `size` bytes to a device or to nobody; `data` in/out.
  bool Access(VcpuContext& ctx, msg::AddressSpace space, uint64_t addr, uint32_t size,
              bool is_write, uint8_t* data);
  void Fail(VcpuContext& ctx, msg::ExitReason reason, const std::string& what);

  ExitSink sink_;
  std::unique_ptr<kvm::Kvm> kvm_;
  std::unique_ptr<kvm::Vm> vm_;
  std::unique_ptr<GuestMemory> ram_;
  absl::Status AddPciFunction(uint32_t device, msg::DeviceInfo::Reader info);
  // After a config write: maps BARs where the shadow says, moves the doorbells.
  void RemapPciFunction(PciFunction& f);
  void RebuildDispatch();
  absl::Status UpdateRoutes();
  PciFunction* FunctionAt(uint32_t slot, uint32_t function);
  // An MMIO write into a function's MSI-X table updates its route before the
  // device sees the write.
  void NoteMsixWrite(const IoRangeOwner& owner, uint64_t addr, uint32_t size, const uint8_t* data);
  // A config write that may reprogram the function's MSI address/data (pci_mu_ held).
  void NoteMsiWrite(PciFunction& f, uint32_t reg, uint32_t size, uint32_t value);

  // Replaced whole when a BAR moves; vCPUs read it without a lock.
  std::shared_ptr<const IoDispatch> dispatch_;
  std::vector<std::pair<IoRangeOwner, const char*>> fixed_ranges_;
  std::mutex pci_mu_;  // BAR maps, MSI-X tables, routes
  std::vector<PciFunction> functions_;
  std::vector<kvm::GsiRoute> base_routes_;
  uint32_t next_gsi_ = 24;
  PciHost pci_;
  std::vector<DeviceChannel> devices_;
  std::vector<std::unique_ptr<VcpuContext>> vcpus_;
  std::vector<kvm_cpuid_entry2> cpuid_;
  uint32_t vcpus_expected_ = 1;
  std::atomic<bool> stopping_{false};
  bool profiling_ = false;
  bool tsc_deadline_ = false;  // KVM_CAP_TSC_DEADLINE_TIMER: CPUID may offer it  // HV_EXIT_PROFILE: ExitProfile per vCPU, printed at Stop
  std::function<bool()> abandon_;
};

}  // namespace hv

#endif  // HV_HVCORE_CORE_H_
