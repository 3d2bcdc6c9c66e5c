#include "devproc/virtio_blk/seccomp_policy.h"

#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/syscall.h>

#include "common/process_policy.h"

namespace hv::virtio_blk {

sandbox::SyscallPolicy VirtioBlkSyscallPolicy() {
  sandbox::SyscallPolicy p = sandbox::BaseProcessPolicy("virtio-blk");
  // The disk is an fd the broker opened; the device never names a file.
  p.Allow(SYS_preadv, "guest reads, straight into guest RAM");
  p.Allow(SYS_pwritev, "guest writes, straight from guest RAM");
  p.Allow(SYS_pread64, "reads through an aligned bounce buffer (O_DIRECT)");
  p.Allow(SYS_pwrite64, "writes through an aligned bounce buffer (O_DIRECT)");
  p.Allow(SYS_fdatasync, "VIRTIO_BLK_T_FLUSH");
  p.AllowIf(SYS_fallocate, {SCMP_A1(SCMP_CMP_EQ, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)},
            "discard and write-zeroes with unmap punch holes in a file-backed disk");
  p.AllowIf(SYS_fallocate, {SCMP_A1(SCMP_CMP_EQ, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE)},
            "write-zeroes without unmap on a file-backed disk");
  p.AllowIoctl(BLKDISCARD, "discard on a block-device disk");
  p.AllowIoctl(BLKZEROOUT, "write-zeroes on a block-device disk");
  return p;
}

}  // namespace hv::virtio_blk
