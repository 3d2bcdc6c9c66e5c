// The AHCI device process's seccomp allowlist (see common/sandbox.h).
#ifndef HV_DEVPROC_AHCI_SECCOMP_POLICY_H_
#define HV_DEVPROC_AHCI_SECCOMP_POLICY_H_

#include "common/sandbox.h"

namespace hv::ahci {

sandbox::SyscallPolicy AhciSyscallPolicy();

}  // namespace hv::ahci

#endif  // HV_DEVPROC_AHCI_SECCOMP_POLICY_H_
