// The virtio-blk device process's seccomp allowlist (see common/sandbox.h).
#ifndef HV_DEVPROC_VIRTIO_BLK_SECCOMP_POLICY_H_
#define HV_DEVPROC_VIRTIO_BLK_SECCOMP_POLICY_H_

#include "common/sandbox.h"

namespace hv::virtio_blk {

sandbox::SyscallPolicy VirtioBlkSyscallPolicy();

}  // namespace hv::virtio_blk

#endif  // HV_DEVPROC_VIRTIO_BLK_SECCOMP_POLICY_H_
