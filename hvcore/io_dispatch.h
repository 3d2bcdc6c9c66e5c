// The core's address-space dispatch: which device process owns a port or MMIO
// address. Built before the vCPUs start; lookups are lock-free reads.
#ifndef HV_HVCORE_IO_DISPATCH_H_
#define HV_HVCORE_IO_DISPATCH_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "schema/msg.capnp.h"

namespace hv {

struct IoRangeOwner {
  msg::AddressSpace space;
  uint64_t base;
  uint64_t length;
  uint32_t device;     // index into the core's device table
  bool posted_writes;  // writes need not wait for the device
  int bar = -1;        // a PCI BAR of the device's function, or -1 for a fixed range
};

class IoDispatch {
 public:
  // Refuses an empty range, one that wraps, or one overlapping a range already added.
  absl::Status Add(const IoRangeOwner& range, const char* device_name);
  // The owner of [addr, addr + size), or nullptr. An access straddling two
  // ranges belongs to neither.
  const IoRangeOwner* Find(msg::AddressSpace space, uint64_t addr, uint32_t size) const;
  size_t size() const { return ranges_.size(); }

 private:
  std::vector<IoRangeOwner> ranges_;  // sorted by (space, base)
  std::vector<const char*> names_;
};

}  // namespace hv

#endif  // HV_HVCORE_IO_DISPATCH_H_
