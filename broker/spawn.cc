#include "broker/spawn.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <climits>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace hv::broker {

absl::StatusOr<std::string> FindExecutable(const std::string& relative_path) {
  std::string base = relative_path.substr(relative_path.rfind('/') + 1);
  std::vector<std::string> candidates;
  if (const char* dir = getenv("HV_LIBEXEC_DIR"); dir != nullptr && dir[0] != '\0') {
    candidates.push_back(absl::StrCat(dir, "/", base));
  }
  char self[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n > 0) {
    self[n] = '\0';
    std::string exe_dir(self);
    exe_dir.resize(exe_dir.rfind('/'));
    std::string bin_dir = exe_dir.substr(0, exe_dir.rfind('/'));  // .../bin/broker -> .../bin
    candidates.push_back(absl::StrCat(bin_dir, "/", relative_path));
    candidates.push_back(absl::StrCat(exe_dir, "/", base));
  }
  for (const auto& c : candidates) {
    if (access(c.c_str(), X_OK) == 0) return c;
  }
  return absl::NotFoundError(absl::StrCat("cannot find the executable '", base,
                                          "' (build it with bazel, or set HV_LIBEXEC_DIR)"));
}

absl::StatusOr<Child> Spawn(const std::string& path, const std::vector<std::string>& args,
                            const std::vector<int>& keep_fds) {
  // Everything the child needs is prepared before fork: after it, only
  // async-signal-safe calls (the broker has ZeroMQ threads).
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(path.c_str()));
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) return ErrnoStatus("fork");
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    // Unblock what the broker blocked for its signalfd.
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_UNBLOCK, &all, nullptr);
    // Every fd from 3 up closes on exec, except the keep-list.
    syscall(SYS_close_range, 3, ~0u, CLOSE_RANGE_CLOEXEC);
    for (int fd : keep_fds) fcntl(fd, F_SETFD, 0);
    execv(path.c_str(), argv.data());
    _exit(127);
  }
  Child child;
  child.pid = pid;
  int pidfd = syscall(SYS_pidfd_open, pid, 0);
  if (pidfd < 0) {
    kill(pid, SIGKILL);
    return ErrnoStatus("pidfd_open");
  }
  child.pidfd.Reset(pidfd);
  return child;
}

std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) return absl::StrCat("exited with status ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    return absl::StrCat("was killed by signal ", sig, " (", strsignal(sig), ")",
                        WCOREDUMP(status) ? ", core dumped" : "");
  }
  return absl::StrCat("ended with wait status ", status);
}

}  // namespace hv::broker
