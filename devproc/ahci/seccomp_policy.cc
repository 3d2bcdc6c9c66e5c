#include "devproc/ahci/seccomp_policy.h"

#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/syscall.h>

#include "common/process_policy.h"

namespace hv::ahci {

sandbox::SyscallPolicy AhciSyscallPolicy() {
  sandbox::SyscallPolicy p = sandbox::BaseProcessPolicy("ahci");
  // Each port's disk or ISO is an fd the broker opened; the device never names a file.
  p.Allow(SYS_preadv, "DMA and ATAPI reads, straight into guest RAM");
  p.Allow(SYS_pwritev, "DMA writes, straight from guest RAM");
  p.Allow(SYS_pread64, "reads through an aligned bounce buffer (O_DIRECT)");
  p.Allow(SYS_pwrite64, "writes through an aligned bounce buffer (O_DIRECT)");
  p.Allow(SYS_fdatasync, "FLUSH CACHE (EXT), and writes with the write cache off");
  p.AllowIf(SYS_fallocate, {SCMP_A1(SCMP_CMP_EQ, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)},
            "DATA SET MANAGEMENT TRIM punches holes in a file-backed disk");
  p.AllowIoctl(BLKDISCARD, "DATA SET MANAGEMENT TRIM on a block-device disk");
  return p;
}

}  // namespace hv::ahci
