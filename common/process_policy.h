// The system calls every sealed hv process makes, whatever it is: glibc's
// threads and memory, ZeroMQ's I/O thread, eventfds and poll. Each process kind
// starts from this and adds its own (devproc/*/seccomp_policy.cc,
// hvcore/seccomp_policy.cc).
#ifndef HV_COMMON_PROCESS_POLICY_H_
#define HV_COMMON_PROCESS_POLICY_H_

#include "common/sandbox.h"

namespace hv::sandbox {

SyscallPolicy BaseProcessPolicy(std::string kind);

}  // namespace hv::sandbox

#endif  // HV_COMMON_PROCESS_POLICY_H_
