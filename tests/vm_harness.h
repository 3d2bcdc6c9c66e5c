// Runs hvbroker on a VM file from a test, capturing its output, and finds the
// processes it started. Tests that need KVM call RequireKvm() first: without
// /dev/kvm they skip and say so loudly.
#ifndef HV_TESTS_VM_HARNESS_H_
#define HV_TESTS_VM_HARNESS_H_

#include <sys/types.h>

#include <string>
#include <vector>

namespace hv::test {

// A file in the test's runfiles ("guest/hello.elf").
std::string Runfile(const std::string& relative);

// A fresh short directory under /tmp (Unix socket paths must stay short), mode 0711.
std::string TempDir();

struct BrokerRun {
  pid_t pid = -1;
  int stdout_fd = -1;
  int stderr_fd = -1;
  std::string out;
  std::string err;
  int exit_code = -1;  // set by Wait
};

// Starts `hvbroker ARGS...` with HV_RUNTIME_DIR=runtime_dir and stdin from /dev/null.
BrokerRun StartBroker(const std::vector<std::string>& args, const std::string& runtime_dir);
// Reads its output until it exits or `timeout_ms` passes (then kills it, exit_code -1).
void WaitBroker(BrokerRun& run, int timeout_ms);
// Reads what is available so far without blocking longer than `ms`.
void PumpOutput(BrokerRun& run, int ms);

// Child pids of `pid` with their command names (from /proc).
struct ProcessInfo {
  pid_t pid;
  std::string comm;
};
std::vector<ProcessInfo> Children(pid_t pid);

// A VM file for `kernel` with COM1 on stdio.
std::string WriteVmFile(const std::string& dir, const std::string& name, const std::string& kernel,
                        const std::string& cmdline, int cpus = 1);

}  // namespace hv::test

#endif  // HV_TESTS_VM_HARNESS_H_
