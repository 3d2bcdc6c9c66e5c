// The sandbox every hv child process (hvcore and each device) enters before it
// reads anything from the guest. Two halves:
//
//  * Broker side (broker/spawn.cc): the child is cloned into new user, pid,
//    mount, ipc and (usually) net namespaces, its user namespace maps uid/gid 0
//    to the VM's own host uid/gid, and it is exec'd already running as that uid.
//
//  * Process side (this file): `Sandbox::Begin` runs first in main() while the
//    process has one thread: it drops every capability, sets no_new_privs and
//    makes the process undumpable, and forks a tiny helper that keeps
//    CAP_SYS_ADMIN (in the process's own user namespace) only to pivot the
//    mount namespace into an empty read-only root later. `Sandbox::Seal` runs
//    once the process has connected to the broker and mapped its fds: the root
//    becomes empty, rlimits are set, and the seccomp allowlist is installed on
//    every thread. A forbidden system call traps into a SIGSYS handler that
//    writes the call's number to a pipe the broker reads, then the process is
//    killed by SIGSYS.
#ifndef HV_COMMON_SANDBOX_H_
#define HV_COMMON_SANDBOX_H_

#include <seccomp.h>
#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace hv::sandbox {

// A default-deny seccomp allowlist. Each rule says why it is there.
class SyscallPolicy {
 public:
  explicit SyscallPolicy(std::string kind) : kind_(std::move(kind)) {}

  // Allows `nr` whatever its arguments.
  SyscallPolicy& Allow(int nr, const char* why);
  // Allows `nr` when every condition holds (several AllowIf of one call: any of them).
  SyscallPolicy& AllowIf(int nr, std::vector<scmp_arg_cmp> conditions, const char* why);
  // Allows ioctl(fd, `request`, ...) for this one request.
  SyscallPolicy& AllowIoctl(uint64_t request, const char* why);
  // `nr` fails with `error` instead of trapping (clone3 -> ENOSYS: glibc then uses
  // clone, whose flags a filter can check).
  SyscallPolicy& Fail(int nr, int error, const char* why);

  const std::string& kind() const { return kind_; }
  // Distinct system calls that can succeed under this policy.
  std::vector<std::string> AllowedSyscallNames() const;
  size_t AllowedSyscallCount() const { return AllowedSyscallNames().size(); }

  // Loads the filter on every thread of the process (TSYNC). With `log_only`
  // a forbidden call is logged by the kernel (audit type 1326) and runs: for
  // finding what an allowlist lacks, never for real use.
  absl::Status Install(bool log_only) const;

 private:
  struct Rule {
    int nr;
    std::vector<scmp_arg_cmp> conditions;
    int error;  // 0: allow; else fail with this errno
    const char* why;
  };
  std::string kind_;
  std::vector<Rule> rules_;
};

// How the broker told a child to run (from its command line).
struct SandboxArgs {
  bool enabled = false;  // --sandbox-report-fd N turns it on; --no-sandbox leaves it off
  int report_fd = -1;    // the pipe the SIGSYS handler reports forbidden calls on
  bool seccomp_log = false;  // --seccomp-log (debugging allowlists)
  bool no_sandbox = false;   // --no-sandbox was given explicitly
};

// Consumes argv[*i] (and its value) if it is a sandbox flag; returns whether it was.
bool ParseSandboxFlag(int argc, char** argv, int* i, SandboxArgs* args);

// The largest file Sandbox::CarryFile copies (the rest is cut off).
inline constexpr size_t kMaxCarriedFileBytes = 16 * 1024;

// Resource limits a sealed process keeps.
struct ProcessLimits {
  uint64_t address_space_bytes = 0;  // RLIMIT_AS
  uint64_t max_threads = 0;          // RLIMIT_NPROC (threads of this uid in its namespace)
  uint64_t max_fds = 0;              // RLIMIT_NOFILE
};

class Sandbox {
 public:
  ~Sandbox();
  // First thing in main(), single-threaded. `name` is for messages ("lpc", "core");
  // `argv0` names the process again (exec by fd names it after the fd number).
  static absl::StatusOr<std::unique_ptr<Sandbox>> Begin(const SandboxArgs& args,
                                                        const std::string& name,
                                                        const char* argv0);
  // Empty root, limits, seccomp. Call before reading anything the guest wrote.
  absl::Status Seal(const SyscallPolicy& policy, const ProcessLimits& limits);
  // Before Seal: a copy of this host file (read when sealing, at most
  // kMaxCarriedFileBytes, read-only) is in the otherwise empty root, at the
  // same path. For the few files a library insists on reading (libslirp's
  // /etc/resolv.conf); a missing host file is left out.
  absl::Status CarryFile(const std::string& host_path);
  bool enabled() const { return args_.enabled; }

 private:
  explicit Sandbox(SandboxArgs args, std::string name)
      : args_(args), name_(std::move(name)) {}
  absl::Status EnterEmptyRoot();

  SandboxArgs args_;
  std::string name_;
  std::vector<std::string> carried_files_;
  pid_t root_helper_ = -1;  // keeps CAP_SYS_ADMIN until the pivot, then exits
  int helper_command_fd_ = -1;
  int helper_result_fd_ = -1;
};

// What the SIGSYS handler writes to the report pipe (native endianness).
struct SeccompReport {
  static constexpr uint32_t kMagic = 0x68767373;  // "hvss"
  uint32_t magic;
  int32_t syscall_nr;
  uint32_t arch;  // AUDIT_ARCH_*
  uint32_t reserved;
  uint64_t instruction_pointer;
};

// "openat" for 257 (x86-64), or "syscall 999" when libseccomp does not know it.
std::string SyscallName(int nr);

// Test builds only: a process linked with //common:sandbox_test_hook runs this
// after Seal (it makes a forbidden call when HV_TEST_FORBIDDEN_SYSCALL says so).
// Production binaries get the weak no-op.
void AfterSealTestHook(const std::string& name);

}  // namespace hv::sandbox

#endif  // HV_COMMON_SANDBOX_H_
