#include "common/sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/securebits.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/fd.h"
#include "common/log.h"

namespace hv::sandbox {
namespace {

// The SIGSYS handler's only state: where to report.
int g_report_fd = -1;

// A forbidden call, trapped: report it, then die by SIGSYS. The handler is
// one-shot (SA_RESETHAND), so the next trapped call finds SIGSYS at its default
// (kill) disposition; `reboot` is forbidden to every policy and is made to kill
// outright, so it is the call used for that. Async-signal-safe: write and syscall.
void OnSigsys(int, siginfo_t* info, void*) {
  SeccompReport report = {};
  report.magic = SeccompReport::kMagic;
  report.syscall_nr = info->si_syscall;
  report.arch = info->si_arch;
  report.instruction_pointer = reinterpret_cast<uint64_t>(info->si_call_addr);
  if (g_report_fd >= 0) {
    ssize_t ignored = write(g_report_fd, &report, sizeof(report));
    (void)ignored;
  }
  syscall(SYS_reboot, 0, 0, 0, nullptr);
  _exit(128 + SIGSYS);  // not reached
}

absl::Status DropCapabilities() {
  // No way back to privilege: root in this user namespace gets nothing from
  // exec or setuid, and no capability can be raised again.
  if (prctl(PR_SET_SECUREBITS, SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP |
                                   SECBIT_NO_SETUID_FIXUP_LOCKED | SECBIT_KEEP_CAPS_LOCKED |
                                   SECBIT_NO_CAP_AMBIENT_RAISE |
                                   SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED) != 0) {
    return ErrnoStatus("PR_SET_SECUREBITS");
  }
  for (int cap = 0; cap <= 63; ++cap) {
    if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) {
      return ErrnoStatus(absl::StrCat("PR_CAPBSET_DROP ", cap));
    }
  }
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) {
    return ErrnoStatus("PR_CAP_AMBIENT_CLEAR_ALL");
  }
  __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  if (syscall(SYS_capset, &header, data) != 0) return ErrnoStatus("capset");
  return absl::OkStatus();
}

// Runs in the helper, before the pivot: copies a host file into the new root
// (still writable), creating its directories. A missing host file is skipped:
// the process then finds none, as it would on a host without one.
int CopyIntoNewRoot(const std::string& host_path) {
  char contents[kMaxCarriedFileBytes];
  ssize_t length = 0;
  {
    Fd in(open(host_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!in.valid()) return errno == ENOENT ? 0 : errno;
    length = read(in.get(), contents, sizeof(contents));
    if (length < 0) return errno;
  }
  std::string target = "/tmp" + host_path;
  for (size_t slash = target.find('/', 5); slash != std::string::npos;
       slash = target.find('/', slash + 1)) {
    if (mkdir(target.substr(0, slash).c_str(), 0555) != 0 && errno != EEXIST) return errno;
  }
  Fd out(open(target.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444));
  if (!out.valid()) return errno;
  if (write(out.get(), contents, length) != length) return EIO;
  return 0;
}

// Runs in the helper: a read-only tmpfs, empty but for the carried files,
// becomes the root of the mount namespace (and so of the main process, whose
// root and cwd are the old root), and the old root is detached. Returns 0 or
// an errno.
int PivotToEmptyRoot(const std::vector<std::string>& carried_files) {
  if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return errno;
  // Any existing directory serves as the mount point; /tmp exists everywhere.
  constexpr unsigned long kFlags = MS_NOSUID | MS_NODEV | MS_NOEXEC;
  if (mount("hv-empty-root", "/tmp", "tmpfs", kFlags, "size=64k,mode=0555") != 0) return errno;
  for (const auto& path : carried_files) {
    if (int error = CopyIntoNewRoot(path); error != 0) return error;
  }
  if (mount(nullptr, "/tmp", nullptr, MS_REMOUNT | MS_RDONLY | kFlags, nullptr) != 0) {
    return errno;
  }
  if (chdir("/tmp") != 0) return errno;
  if (syscall(SYS_pivot_root, ".", ".") != 0) return errno;
  if (umount2(".", MNT_DETACH) != 0) return errno;
  if (chdir("/") != 0) return errno;
  return 0;
}

// The command pipe carries "go" and then the carried files' paths, each as a
// length and the bytes, ended by a zero length.
bool ReadAll(int fd, void* buffer, size_t length) {
  auto* p = static_cast<char*>(buffer);
  while (length > 0) {
    ssize_t n = read(fd, p, length);
    if (n <= 0) return false;
    p += n;
    length -= n;
  }
  return true;
}

[[noreturn]] void RootHelperMain(int command_fd, int result_fd) {
  char go;
  if (read(command_fd, &go, 1) != 1) _exit(0);  // the main process ended first
  std::vector<std::string> carried_files;
  for (;;) {
    uint32_t length = 0;
    if (!ReadAll(command_fd, &length, sizeof(length))) _exit(0);
    if (length == 0) break;
    std::string path(length, '\0');
    if (!ReadAll(command_fd, path.data(), length)) _exit(0);
    carried_files.push_back(std::move(path));
  }
  int result = PivotToEmptyRoot(carried_files);
  ssize_t ignored = write(result_fd, &result, sizeof(result));
  (void)ignored;
  _exit(0);
}

absl::Status SetLimit(int resource, uint64_t value, const char* what) {
  rlimit limit = {value, value};
  if (setrlimit(resource, &limit) != 0) return ErrnoStatus(absl::StrCat("setrlimit ", what));
  return absl::OkStatus();
}

}  // namespace

SyscallPolicy& SyscallPolicy::Allow(int nr, const char* why) { return AllowIf(nr, {}, why); }

SyscallPolicy& SyscallPolicy::AllowIf(int nr, std::vector<scmp_arg_cmp> conditions,
                                      const char* why) {
  rules_.push_back({nr, std::move(conditions), 0, why});
  return *this;
}

SyscallPolicy& SyscallPolicy::AllowIoctl(uint64_t request, const char* why) {
  // Only the low 32 bits: the kernel takes the request as an unsigned int.
  return AllowIf(SYS_ioctl, {SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, request & 0xffffffffu)},
                 why);
}

SyscallPolicy& SyscallPolicy::Fail(int nr, int error, const char* why) {
  rules_.push_back({nr, {}, error, why});
  return *this;
}

std::vector<std::string> SyscallPolicy::AllowedSyscallNames() const {
  std::set<std::string> names;
  for (const auto& r : rules_) {
    if (r.error == 0) names.insert(SyscallName(r.nr));
  }
  return {names.begin(), names.end()};
}

absl::Status SyscallPolicy::Install(bool log_only) const {
  scmp_filter_ctx ctx = seccomp_init(log_only ? SCMP_ACT_LOG : SCMP_ACT_TRAP);
  if (ctx == nullptr) return absl::InternalError("seccomp_init failed");
  auto fail = [&](const std::string& what, int rc) {
    seccomp_release(ctx);
    return absl::InternalError(absl::StrCat(kind_, " seccomp policy: ", what, ": ", strerror(-rc)));
  };
  // Every thread (ZeroMQ's, the disk workers) gets the same filter, now.
  if (int rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1); rc != 0) return fail("TSYNC", rc);
  for (const auto& r : rules_) {
    uint32_t action = r.error == 0 ? SCMP_ACT_ALLOW : SCMP_ACT_ERRNO(r.error);
    int rc = seccomp_rule_add_array(ctx, action, r.nr, r.conditions.size(),
                                    r.conditions.empty() ? nullptr : r.conditions.data());
    if (rc != 0) return fail(absl::StrCat("rule for ", SyscallName(r.nr)), rc);
  }
  // The SIGSYS handler's way out (see OnSigsys).
  if (int rc = seccomp_rule_add(ctx, SCMP_ACT_KILL_PROCESS, SCMP_SYS(reboot), 0); rc != 0) {
    return fail("the kill rule", rc);
  }
  if (int rc = seccomp_load(ctx); rc != 0) return fail("seccomp_load", rc);
  seccomp_release(ctx);
  return absl::OkStatus();
}

std::string SyscallName(int nr) {
  char* name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr);
  if (name == nullptr) return absl::StrCat("syscall ", nr);
  std::string result(name);
  free(name);
  return result;
}

bool ParseSandboxFlag(int argc, char** argv, int* i, SandboxArgs* args) {
  std::string arg = argv[*i];
  if (arg == "--no-sandbox") {
    args->no_sandbox = true;
    args->enabled = false;
    return true;
  }
  if (arg == "--seccomp-log") {
    args->seccomp_log = true;
    return true;
  }
  if (arg == "--sandbox-report-fd" && *i + 1 < argc) {
    int fd;
    if (!absl::SimpleAtoi(argv[*i + 1], &fd) || fd < 0) return false;
    ++*i;
    args->report_fd = fd;
    args->enabled = !args->no_sandbox;
    return true;
  }
  return false;
}

Sandbox::~Sandbox() {
  if (helper_command_fd_ >= 0) close(helper_command_fd_);
  if (helper_result_fd_ >= 0) close(helper_result_fd_);
  if (root_helper_ > 0) waitpid(root_helper_, nullptr, 0);
}

absl::StatusOr<std::unique_ptr<Sandbox>> Sandbox::Begin(const SandboxArgs& args,
                                                        const std::string& name,
                                                        const char* argv0) {
  std::unique_ptr<Sandbox> sandbox(new Sandbox(args, name));
  const char* base = strrchr(argv0, '/');
  prctl(PR_SET_NAME, base != nullptr ? base + 1 : argv0, 0, 0, 0);
  if (!args.enabled) {
    fprintf(stderr,
            "hv %s: *** SANDBOX OFF (--no-sandbox): this process has the broker's privileges, "
            "host filesystem and every system call ***\n",
            name.c_str());
    return sandbox;
  }
  // Relative paths must not reach the old root after the pivot: with the cwd at
  // the root, the pivot moves it too.
  if (chdir("/") != 0) return ErrnoStatus("chdir /");
  int command[2], result[2];
  if (pipe2(command, O_CLOEXEC) != 0 || pipe2(result, O_CLOEXEC) != 0) {
    return ErrnoStatus("pipe2");
  }
  pid_t helper = fork();
  if (helper < 0) return ErrnoStatus("fork the root helper");
  if (helper == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    close(command[1]);
    close(result[0]);
    RootHelperMain(command[0], result[1]);
  }
  close(command[0]);
  close(result[1]);
  sandbox->root_helper_ = helper;
  sandbox->helper_command_fd_ = command[1];
  sandbox->helper_result_fd_ = result[0];

  if (auto s = DropCapabilities(); !s.ok()) return s;
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return ErrnoStatus("PR_SET_NO_NEW_PRIVS");
  // No core dumps of guest memory, and no ptrace by other processes of this uid.
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) return ErrnoStatus("PR_SET_DUMPABLE");
  if (auto s = SetLimit(RLIMIT_CORE, 0, "RLIMIT_CORE"); !s.ok()) return s;

  g_report_fd = args.report_fd;
  struct sigaction sa = {};
  sa.sa_sigaction = OnSigsys;
  sa.sa_flags = SA_SIGINFO | SA_RESETHAND | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGSYS, &sa, nullptr) != 0) return ErrnoStatus("sigaction SIGSYS");
  return sandbox;
}

absl::Status Sandbox::CarryFile(const std::string& host_path) {
  if (host_path.empty() || host_path[0] != '/' || host_path.find("/..") != std::string::npos ||
      host_path.find("/./") != std::string::npos || host_path.back() == '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("a file carried into the sandbox needs a plain absolute path, not '",
                     host_path, "'"));
  }
  carried_files_.push_back(host_path);
  return absl::OkStatus();
}

absl::Status Sandbox::EnterEmptyRoot() {
  // The time zone is read from /etc/localtime once; read it while it is there.
  tzset();
  std::string command(1, 1);  // go
  for (const auto& path : carried_files_) {
    uint32_t length = path.size();
    command.append(reinterpret_cast<const char*>(&length), sizeof(length));
    command += path;
  }
  command.append(sizeof(uint32_t), '\0');
  if (write(helper_command_fd_, command.data(), command.size()) !=
      static_cast<ssize_t>(command.size())) {
    return ErrnoStatus("start the root helper");
  }
  int result = 0;
  ssize_t n = read(helper_result_fd_, &result, sizeof(result));
  int status = 0;
  waitpid(root_helper_, &status, 0);
  root_helper_ = -1;
  close(std::exchange(helper_command_fd_, -1));
  close(std::exchange(helper_result_fd_, -1));
  if (n != sizeof(result)) return absl::InternalError("the root helper died");
  if (result != 0) return ErrnoStatus("pivot to an empty root", result);
  return absl::OkStatus();
}

absl::Status Sandbox::Seal(const SyscallPolicy& policy, const ProcessLimits& limits) {
  if (!args_.enabled) {
    AfterSealTestHook(name_);  // so that a test can show the same call is harmless unsandboxed
    return absl::OkStatus();
  }
  if (auto s = EnterEmptyRoot(); !s.ok()) return s;
  if (auto s = SetLimit(RLIMIT_AS, limits.address_space_bytes, "RLIMIT_AS"); !s.ok()) return s;
  if (auto s = SetLimit(RLIMIT_NPROC, limits.max_threads, "RLIMIT_NPROC"); !s.ok()) return s;
  if (auto s = SetLimit(RLIMIT_NOFILE, limits.max_fds, "RLIMIT_NOFILE"); !s.ok()) return s;
  if (args_.seccomp_log) {
    fprintf(stderr,
            "hv %s: *** SECCOMP IN LOG MODE (--seccomp-log): forbidden system calls are only "
            "logged by the kernel ***\n",
            name_.c_str());
  }
  if (auto s = policy.Install(args_.seccomp_log); !s.ok()) return s;
  AfterSealTestHook(name_);
  return absl::OkStatus();
}

// Production builds: nothing. //common:sandbox_test_hook replaces it.
__attribute__((weak)) void AfterSealTestHook(const std::string&) {}

}  // namespace hv::sandbox
