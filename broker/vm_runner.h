// Runs one VM: creates its host resources, spawns hvcore and one process per
// device, wires them, supervises them, and turns how the VM ended into hvbroker's
// exit status.
#ifndef HV_BROKER_VM_RUNNER_H_
#define HV_BROKER_VM_RUNNER_H_

#include <set>
#include <string>

#include "broker/config.h"
#include "broker/vm_identity.h"

namespace hv::broker {

// hvbroker's exit statuses (documented in `hvbroker --help`).
enum ExitCode : int {
  kExitPowerOff = 0,        // the guest powered off (status 0)
  kExitStartFailed = 1,     // the VM could not be started; the message says why
  kExitReset = 2,           // the guest asked for a reset
  kExitTripleFault = 3,     // a vCPU triple-faulted
  kExitProcessCrashed = 4,  // hvcore or a device process died; the message names it
  kExitStopped = 5,         // stopped by SIGINT/SIGTERM
  kExitGuestFailure = 6,    // the guest powered off with a non-zero status
  kExitRuntimeError = 7,    // hv failed while running (KVM error, unhandled exit)
  kExitGuestPanic = 8,      // the guest kernel panicked (pvpanic); the message has its last words
};

struct RunOptions {
  int start_timeout_ms = 30000;
  // Processes started without their sandbox, by name ("lpc", "core", a disk's
  // name); "*" is every one (--no-sandbox). For debugging only.
  std::set<std::string> no_sandbox;
  // Forbidden calls are logged by the kernel, not fatal (--seccomp-log).
  bool seccomp_log = false;
  UidRange uid_range;
  // `up --detach`: COM ports on stdio become sockets in the runtime directory,
  // and once the VM runs the broker writes one byte to `detach_ready_fd`.
  bool detached = false;
  int detach_ready_fd = -1;
};

int RunVm(VmConfig config, const RunOptions& options);

// $HV_RUNTIME_DIR, else $XDG_RUNTIME_DIR/hv, else /run/hv (root) or /tmp/hv-UID.
std::string RuntimeBaseDir();

}  // namespace hv::broker

#endif  // HV_BROKER_VM_RUNNER_H_
