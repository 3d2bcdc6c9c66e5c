// Reading and validating a VM description (a Cap'n Proto text file, see
// schema/vm.capnp). Every error names the file, the line and column, and the field:
//   vm.capnp:9:5: devices[1].slot: slot 3 function 0 is already used by devices[0]
#ifndef HV_BROKER_CONFIG_H_
#define HV_BROKER_CONFIG_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "capnp/message.h"
#include "schema/vm.capnp.h"

namespace hv::broker {

// What the broker runs as a process of its own.
enum class DeviceProcessKind { kLpc, kVirtioBlk, kVirtioNet, kAhci };

// A file the broker opens for a device (an AHCI port's disk or ISO).
struct BackendFile {
  std::string path;  // resolved
  bool read_only = false;
  bool no_cache = false;  // O_DIRECT
  bool sync = false;      // O_DSYNC
};

struct DeviceProcess {
  DeviceProcessKind kind;
  std::string name;     // unique in the VM: "lpc", or "<emulation>@<slot>.<func>"
  uint32_t device_index;  // in Vm.devices
  std::string path;       // the backend, resolved (virtio-blk: the disk)
  uint16_t queues = 1;    // virtio-blk: request queues; virtio-net: queue pairs
  std::string tap;        // virtio-net: the tap interface to open (empty: user mode)
  bool read_only = false;
  bool no_cache = false;  // open with O_DIRECT
  bool sync = false;      // open with O_DSYNC
  std::vector<BackendFile> ports;  // ahci: port i's file, passed as "port<i>"
  // When its process dies (RestartPolicy in vm.capnp).
  schema::RestartMode restart_mode = schema::RestartMode::NEVER;
  uint32_t restart_limit = 5;
  uint32_t restart_window_s = 60;
  uint32_t restart_backoff_ms = 0;
};

// Whether a kind's process keeps its state for a successor (restart).
bool CanRestart(DeviceProcessKind kind);

struct VmConfig {
  std::string path;      // the file, as given
  std::string base_dir;  // relative paths in it are relative to this
  std::unique_ptr<capnp::MallocMessageBuilder> message;
  schema::Vm::Reader vm() { return message->getRoot<schema::Vm>(); }
  uint64_t memory_bytes = 0;
  std::string kernel_path;  // resolved
  std::string initrd_path;  // resolved, or empty
  std::vector<DeviceProcess> processes;
};

// Parses `path` (the constant named `vm`, or the file's only Vm constant) and checks it.
absl::StatusOr<VmConfig> LoadVmConfig(const std::string& path);

// The same for a VM file's text that is not on disk (`hvbroker bhyve` builds one):
// errors name `path`, and relative paths in it are relative to `base_dir`.
absl::StatusOr<VmConfig> LoadVmConfigText(const std::string& path, std::string text,
                                          const std::string& base_dir);

// "256M", "1G", "512" (MiB, as bhyve reads a plain number). Exposed for tests.
absl::StatusOr<uint64_t> ParseMemorySize(const std::string& text);

// Emulations bhyve has, and whether hv runs them yet.
bool IsKnownEmulation(const std::string& emulation);
bool IsSupportedEmulation(const std::string& emulation);

}  // namespace hv::broker

#endif  // HV_BROKER_CONFIG_H_
