// Starting the VM's processes: each gets exactly the fds on its keep-list
// (inherited at the same numbers), nothing else, and dies with the broker.
#ifndef HV_BROKER_SPAWN_H_
#define HV_BROKER_SPAWN_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/fd.h"

namespace hv::broker {

struct Child {
  pid_t pid = -1;
  Fd pidfd;  // readable when the child exits
};

// Finds a sibling executable: $HV_LIBEXEC_DIR/<basename>, then the Bazel output
// layout next to this binary (<bin>/<relative_path>), then beside this binary.
absl::StatusOr<std::string> FindExecutable(const std::string& relative_path);

// How a sandboxed child starts: new user, pid, mount, ipc and uts namespaces
// (and net unless it needs the host's), uid and gid 0 inside mapped to the
// VM's own `uid`/`gid` outside, and already running as them when it is exec'd.
// The rest of its sandbox it enters itself (common/sandbox.h).
struct SandboxSpawn {
  uid_t uid = 0;
  gid_t gid = 0;
  bool new_network = true;
};

// `sandbox` null: a plain fork and exec (--no-sandbox).
absl::StatusOr<Child> Spawn(const std::string& path, const std::vector<std::string>& args,
                            const std::vector<int>& keep_fds,
                            const SandboxSpawn* sandbox = nullptr);

// "exited with status 3", "killed by signal 9 (Killed)".
std::string DescribeWaitStatus(int status);

}  // namespace hv::broker

#endif  // HV_BROKER_SPAWN_H_
