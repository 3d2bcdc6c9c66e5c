// hvcore's seccomp allowlist (see common/sandbox.h). Installed after the VM is
// built: creating the VM, its memslots and vCPUs needs calls the running core
// never makes again.
#ifndef HV_HVCORE_SECCOMP_POLICY_H_
#define HV_HVCORE_SECCOMP_POLICY_H_

#include "common/sandbox.h"

namespace hv {

sandbox::SyscallPolicy CoreSyscallPolicy();

}  // namespace hv

#endif  // HV_HVCORE_SECCOMP_POLICY_H_
