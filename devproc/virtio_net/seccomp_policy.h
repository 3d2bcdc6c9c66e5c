// The virtio-net device process's seccomp allowlist (see common/sandbox.h).
#ifndef HV_DEVPROC_VIRTIO_NET_SECCOMP_POLICY_H_
#define HV_DEVPROC_VIRTIO_NET_SECCOMP_POLICY_H_

#include "common/sandbox.h"

namespace hv::virtio_net {

// One policy for both backends: a tap process never reaches the socket calls
// (it has no libslirp), but it cannot gain them either.
sandbox::SyscallPolicy VirtioNetSyscallPolicy();

}  // namespace hv::virtio_net

#endif  // HV_DEVPROC_VIRTIO_NET_SECCOMP_POLICY_H_
