// The allowlists themselves: what no process kind may ever be allowed, and the
// size of each (printed, for the table in docs/security.md).
#include <cstdio>
#include <set>
#include <string>
#include <vector>

#include "common/sandbox.h"
#include "devproc/ahci/seccomp_policy.h"
#include "devproc/lpc/seccomp_policy.h"
#include "devproc/virtio_blk/seccomp_policy.h"
#include "devproc/virtio_net/seccomp_policy.h"
#include "gtest/gtest.h"
#include "hvcore/seccomp_policy.h"

namespace hv {
namespace {

std::vector<sandbox::SyscallPolicy> EveryPolicy() {
  return {lpc::LpcSyscallPolicy(), virtio_blk::VirtioBlkSyscallPolicy(),
          virtio_net::VirtioNetSyscallPolicy(), ahci::AhciSyscallPolicy(), CoreSyscallPolicy()};
}

TEST(SyscallPolicyTest, NoKindMayOpenExecConnectOrEscape) {
  // A device gets every file and socket from the broker as an fd; none may name
  // a file, start a program, reach the network or leave its namespaces.
  const std::set<std::string> kNever = {
      "open", "openat", "openat2", "creat", "execve", "execveat", "socket", "connect", "bind",
      "listen", "ptrace", "process_vm_readv", "process_vm_writev", "mount", "umount2",
      "pivot_root", "chroot", "unshare", "setns", "fork", "vfork", "kill", "memfd_create",
      "userfaultfd", "bpf", "perf_event_open", "keyctl", "add_key", "init_module",
      "finit_module", "kexec_load", "reboot", "setuid", "setresuid", "capset", "seccomp",
      "name_to_handle_at", "open_by_handle_at", "io_uring_setup"};
  // The one exception: user-mode networking (libslirp) makes the guest's
  // connections itself, so virtio-net may use sockets, and open for reading
  // (only: the rule checks the flags, sandbox_test tries a write) the one file
  // in its root, a copy of /etc/resolv.conf; never programs.
  const std::set<std::string> kNetworking = {"socket", "connect", "bind", "listen", "openat"};
  for (const auto& policy : EveryPolicy()) {
    for (const auto& name : policy.AllowedSyscallNames()) {
      if (policy.kind() == "virtio-net" && kNetworking.count(name)) continue;
      EXPECT_EQ(kNever.count(name), 0u) << policy.kind() << " allows " << name;
    }
  }
}

TEST(SyscallPolicyTest, EachKindHasItsOwnAllowlistAndTheirSizesArePrinted) {
  std::set<size_t> sizes;
  for (const auto& policy : EveryPolicy()) {
    auto names = policy.AllowedSyscallNames();
    std::string list;
    for (const auto& n : names) list += " " + n;
    printf("%-12s %3zu syscalls:%s\n", policy.kind().c_str(), names.size(), list.c_str());
    EXPECT_GT(names.size(), 20u) << policy.kind();
    EXPECT_LT(names.size(), 70u) << policy.kind();
    sizes.insert(names.size());
  }
  EXPECT_EQ(sizes.size(), 4u) << "four kinds, four different allowlists";
}

}  // namespace
}  // namespace hv
