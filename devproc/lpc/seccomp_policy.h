// The lpc device process's seccomp allowlist (see common/sandbox.h).
#ifndef HV_DEVPROC_LPC_SECCOMP_POLICY_H_
#define HV_DEVPROC_LPC_SECCOMP_POLICY_H_

#include "common/sandbox.h"

namespace hv::lpc {

sandbox::SyscallPolicy LpcSyscallPolicy();

}  // namespace hv::lpc

#endif  // HV_DEVPROC_LPC_SECCOMP_POLICY_H_
