#include "hvcore/seccomp_policy.h"

#include <linux/kvm.h>
#include <signal.h>
#include <sys/syscall.h>

#include "common/process_policy.h"
#include "kdriver/kvm.h"

namespace hv {

sandbox::SyscallPolicy CoreSyscallPolicy() {
  sandbox::SyscallPolicy p = sandbox::BaseProcessPolicy("hvcore");
  // The running VM: only the KVM ioctls used after it is built.
  p.AllowIoctl(KVM_RUN, "each vCPU runs the guest");
  p.AllowIoctl(KVM_IRQ_LINE, "interrupt lines the core drives itself");
  p.AllowIoctl(kvm::SetGsiRoutingIoctlNumber(), "the guest programs an MSI-X vector");
  p.AllowIoctl(KVM_SIGNAL_MSI, "an MSI the core injects directly");
  p.AllowIoctl(KVM_IOEVENTFD, "queue doorbells follow a BAR the guest moves");
  p.AllowIoctl(KVM_IRQFD, "irqfds follow MSI-X route changes");
  p.AllowIoctl(KVM_GET_REGS, "a vCPU's state for a triple fault or KVM error report");
  p.AllowIoctl(KVM_GET_SREGS, "a vCPU's state for a triple fault or KVM error report");
  // vCPU threads are kicked out of KVM_RUN with SIGUSR1 (Core::Start installs
  // the handler, after sealing); no other signal's handling may change.
  p.AllowIf(SYS_rt_sigaction, {SCMP_A0(SCMP_CMP_EQ, SIGUSR1)}, "the vCPU kick handler");
  return p;
}

}  // namespace hv
