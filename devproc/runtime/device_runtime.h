// The runtime every device process shares: the hand-shake with the broker, guest
// RAM, the exit channel the core forwards register accesses through, and one
// single-threaded event loop. A device model implements DeviceModel and calls
// RunDevice() from main(); it never touches sockets or the channel itself.
#ifndef HV_DEVPROC_RUNTIME_DEVICE_RUNTIME_H_
#define HV_DEVPROC_RUNTIME_DEVICE_RUNTIME_H_

#include <poll.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/guest_memory.h"
#include "absl/status/status.h"
#include "common/sandbox.h"
#include "schema/msg.capnp.h"

namespace hv::devproc {

struct RangeSpec {
  msg::AddressSpace space;
  uint64_t base;
  uint64_t length;
  bool posted_writes = true;
};

// A PCI function's layout as the core must know it (see PciFunctionInfo in msg.capnp).
struct PciFunctionSpec {
  struct Bar {
    int index;
    msg::BarKind kind;
    uint64_t size;
  };
  std::vector<Bar> bars;
  uint8_t msix_bar = 0;
  uint32_t msix_table_offset = 0;
  uint16_t msix_vectors = 0;
  uint8_t notify_bar = 0;
  uint32_t notify_offset = 0;
  uint32_t notify_stride = 0;
  uint16_t notify_queues = 0;
  // Config-space offset of a 64-bit MSI capability (single message); 0: none.
  // The core turns its address/data into a KVM route for the "msi" eventfd.
  uint8_t msi_cap = 0;
};

// What the runtime offers a device model. All calls are from the loop thread.
class DeviceContext {
 public:
  virtual ~DeviceContext() = default;
  // Runs `on_ready` when `fd` has any of `events`; events 0 pauses the watch.
  virtual void WatchFd(int fd, short events, std::function<void(short revents)> on_ready) = 0;
  virtual void SetFdEvents(int fd, short events) = 0;
  virtual void UnwatchFd(int fd) = 0;
  // Ends the VM (the guest powered off or reported a failure through this device).
  virtual void GuestExit(msg::ExitReason reason, uint32_t status, const std::string& detail) = 0;
  // A backend fd the broker handed over under `name` ("com1.in", "disk", ...).
  virtual absl::StatusOr<int> NamedFd(std::string_view name) const = 0;
  virtual const GuestMemory& memory() const = 0;
  // In Configure: a read-only copy of this host file will be in the sandbox's
  // otherwise empty root (sandbox::Sandbox::CarryFile).
  virtual absl::Status CarryIntoSandbox(const std::string& host_path) = 0;
  virtual const std::string& name() const = 0;
  // Read-mostly registers (common/exit_channel.h): the core answers reads of a
  // published register from shared memory without waking this process. Declare
  // it in Configure; `unaffected_by` is a write address (same space) that never
  // changes it. Returns a handle, or -1 when the table is full (reads then just
  // come here as usual).
  virtual int PublishRegister(msg::AddressSpace space, uint64_t addr, uint8_t size,
                              std::optional<uint64_t> unaffected_by) = 0;
  // The register's current value, or nullopt while reading it has side effects.
  // Call before returning from whatever changed it.
  virtual void SetPublished(int handle, std::optional<uint64_t> value) = 0;
  // Restart: saves the device's state now (SaveState), before the guest can
  // see what just changed (a used ring index). No-op for a model without state.
  virtual void CommitState() = 0;
};

class DeviceModel {
 public:
  virtual ~DeviceModel() = default;
  // Called once; returns the ranges the core forwards to this device.
  virtual absl::StatusOr<std::vector<RangeSpec>> Configure(
      DeviceContext& context, msg::ConfigureDevice::Reader config) = 0;
  virtual uint64_t Read(msg::AddressSpace space, uint64_t addr, uint8_t size) = 0;
  virtual void Write(msg::AddressSpace space, uint64_t addr, uint8_t size, uint64_t value) = 0;
  // A PCI function with BARs describes them here (after Configure).
  virtual std::optional<PciFunctionSpec> PciFunction() const { return std::nullopt; }
  // A request the broker relays from the VM's control socket. Returns false
  // when this device cannot do it (the broker is told).
  virtual bool OnDeviceControl(msg::DeviceControl::Reader request) {
    (void)request;
    return false;
  }
  // Restart (common/device_state.h): appends the model's whole state to `out`
  // and returns true; false means this model keeps no state for a successor
  // (then the runtime never saves). Called after every access and event, so
  // keep it to copying plain structs.
  virtual bool SaveState(std::string* out) const {
    (void)out;
    return false;
  }
  // A successor, configured like its predecessor, loads what SaveState wrote
  // (after Configure, before the guest can reach it). The bytes come from a
  // process that may have been compromised: validate them.
  virtual absl::Status RestoreState(std::string_view state) {
    (void)state;
    return absl::UnimplementedError("this device keeps no state for a successor");
  }
  // A successor, once restored, its state saved and its sandbox entered:
  // redo what its predecessor left unfinished (requests in flight).
  virtual void Resume() {}
};

// Parses `--ctl ENDPOINT --name NAME` and the sandbox flags, runs the device
// until the broker says stop. `policy` is the device kind's seccomp allowlist
// (devproc/<kind>/seccomp_policy.cc); the process enters its sandbox after it
// is configured and before it tells the broker it is ready, that is before the
// guest can reach it. Returns the process's exit status.
int RunDevice(int argc, char** argv, const char* kind, std::unique_ptr<DeviceModel> model,
              sandbox::SyscallPolicy policy);

}  // namespace hv::devproc

#endif  // HV_DEVPROC_RUNTIME_DEVICE_RUNTIME_H_
