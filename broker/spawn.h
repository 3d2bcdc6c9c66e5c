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

absl::StatusOr<Child> Spawn(const std::string& path, const std::vector<std::string>& args,
                            const std::vector<int>& keep_fds);

// "exited with status 3", "killed by signal 9 (Killed)".
std::string DescribeWaitStatus(int status);

}  // namespace hv::broker

#endif  // HV_BROKER_SPAWN_H_
