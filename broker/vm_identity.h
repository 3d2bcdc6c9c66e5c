// Each VM's processes run under a uid and gid of their own, taken from a
// configurable range: a VM's devices and core share it, no two running VMs do.
// A uid is held by an flock on <lock dir>/<uid>.lock for as long as the broker
// runs, so brokers need no shared daemon and a crashed broker frees its uid.
#ifndef HV_BROKER_VM_IDENTITY_H_
#define HV_BROKER_VM_IDENTITY_H_

#include <sys/types.h>

#include <string>

#include "absl/status/statusor.h"
#include "common/fd.h"

namespace hv::broker {

struct UidRange {
  uint32_t first = 2100000000;  // far above login users and the usual subuid ranges
  uint32_t count = 10000;
};

// "FIRST:COUNT" (hvbroker --uid-range).
absl::StatusOr<UidRange> ParseUidRange(const std::string& text);

struct VmIdentity {
  uid_t uid = 0;
  gid_t gid = 0;  // the same number as the uid
  Fd lock;        // held while the VM runs
};

// $HV_UID_LOCK_DIR, else /run/hv-uids.
std::string UidLockDir();

// The first uid of `range` no running broker holds. A broker that is not root
// cannot map other uids: its VMs run under its own uid (and say so).
absl::StatusOr<VmIdentity> ClaimVmIdentity(const UidRange& range);

}  // namespace hv::broker

#endif  // HV_BROKER_VM_IDENTITY_H_
