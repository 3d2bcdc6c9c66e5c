#include "broker/spawn.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/close_range.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <climits>
#include <cstring>

#include "absl/strings/str_cat.h"

extern char** environ;

namespace hv::broker {
namespace {

absl::Status WriteProcFile(pid_t pid, const char* file, const std::string& text) {
  std::string path = absl::StrCat("/proc/", pid, "/", file);
  Fd fd(open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus("open " + path);
  if (write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    return ErrnoStatus(absl::StrCat("write '", text, "' to ", path));
  }
  return absl::OkStatus();
}

// The child of a sandboxed spawn: waits until the broker has mapped its user
// namespace, becomes uid/gid 0 there (the VM's ids outside), and execs.
// Only async-signal-safe calls: the broker has other threads.
[[noreturn]] void SandboxedChild(int exe_fd, int go_fd, int go_write_fd, char** argv,
                                 const std::vector<int>& keep_fds) {
  close(go_write_fd);  // so that a broker that dies before saying go means EOF
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  sigset_t all;
  sigfillset(&all);
  sigprocmask(SIG_UNBLOCK, &all, nullptr);
  char go = 0;
  if (read(go_fd, &go, 1) != 1 || go != 1) _exit(127);  // the broker failed or died
  // The supplementary groups are the broker's (host root's): drop them. A broker
  // that is not root could not map them anyway, and then setgroups is denied.
  // Raw system calls: glibc's wrappers would try to change the credentials of
  // every thread it knows of, the broker's, which do not exist in this child,
  // and wait for them forever.
  if (syscall(SYS_setgroups, 0, nullptr) != 0 && errno != EPERM) _exit(126);
  if (syscall(SYS_setresgid, 0, 0, 0) != 0 || syscall(SYS_setresuid, 0, 0, 0) != 0) _exit(126);
  syscall(SYS_close_range, 3, ~0u, CLOSE_RANGE_CLOEXEC);
  for (int fd : keep_fds) fcntl(fd, F_SETFD, 0);
  // By fd: the path may not be reachable by the VM's uid (a home directory).
  syscall(SYS_execveat, exe_fd, "", argv, environ, AT_EMPTY_PATH);
  _exit(127);
}

absl::StatusOr<Child> SpawnSandboxed(const std::string& path, std::vector<char*>& argv,
                                     const std::vector<int>& keep_fds, const SandboxSpawn& box) {
  Fd exe(open(path.c_str(), O_PATH | O_CLOEXEC));
  if (!exe.valid()) return ErrnoStatus("open " + path);
  int go[2];
  if (pipe2(go, O_CLOEXEC) != 0) return ErrnoStatus("pipe2");
  Fd go_read(go[0]), go_write(go[1]);
  int pidfd = -1;
  clone_args args = {};
  args.flags = CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS |
               CLONE_PIDFD | (box.new_network ? CLONE_NEWNET : 0);
  args.pidfd = reinterpret_cast<uint64_t>(&pidfd);
  args.exit_signal = SIGCHLD;
  long pid = syscall(SYS_clone3, &args, sizeof(args));
  if (pid < 0) return ErrnoStatus("clone3 into new namespaces");
  if (pid == 0) SandboxedChild(exe.get(), go_read.get(), go_write.get(), argv.data(), keep_fds);
  Child child;
  child.pid = static_cast<pid_t>(pid);
  child.pidfd.Reset(pidfd);
  go_read.Reset();
  auto map = [&]() -> absl::Status {
    auto s = WriteProcFile(child.pid, "uid_map", absl::StrCat("0 ", box.uid, " 1\n"));
    if (!s.ok()) return s;
    // Without CAP_SETGID, a gid map needs setgroups denied first.
    if (getuid() != 0) {
      if (auto s = WriteProcFile(child.pid, "setgroups", "deny"); !s.ok()) return s;
    }
    return WriteProcFile(child.pid, "gid_map", absl::StrCat("0 ", box.gid, " 1\n"));
  };
  absl::Status mapped = map();
  char ok = 1;
  if (!mapped.ok() || write(go_write.get(), &ok, 1) != 1) {
    kill(child.pid, SIGKILL);
    waitpid(child.pid, nullptr, 0);
    return mapped.ok() ? ErrnoStatus("start the child") : mapped;
  }
  return child;
}

}  // namespace

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
                            const std::vector<int>& keep_fds, const SandboxSpawn* sandbox) {
  // Everything the child needs is prepared before fork: after it, only
  // async-signal-safe calls (the broker has ZeroMQ threads).
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(path.c_str()));
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  if (sandbox != nullptr) return SpawnSandboxed(path, argv, keep_fds, *sandbox);
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
