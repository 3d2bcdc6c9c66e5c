// The device side of a virtio split virtqueue (virtio 1.2, section 2.7): pops
// descriptor chains the driver made available, pushes them back as used, and
// decides on notifications in both directions (2.7.7, 2.7.10, VIRTIO_F_EVENT_IDX).
//
// Everything in the rings is written by the guest and is hostile: every
// descriptor is read once into a local copy, every buffer is checked against
// guest RAM, every chain is bounded. A driver that breaks the rules gets an
// error from Pop(), after which the queue refuses to pop until Reset() (the
// transport sets DEVICE_NEEDS_RESET). The device never reads back anything it
// wrote into guest memory (used->idx, used ring entries): its own indices live
// here, so a guest scribbling over the used ring cannot confuse it.
//
// Limits (2.7.4.1 lets a device have "a reasonable limit"):
//   - a direct chain visits at most `size` descriptors, the descriptor that
//     refers to an indirect table included ("a driver MUST NOT create a
//     descriptor chain longer than the Queue Size", 2.7.5.3.1); since the table
//     has only `size` entries, a chain that gets longer has a loop;
//   - an indirect table is 16 * n bytes, 1 <= n <= MaxIndirectEntries(size),
//     and the walk inside it visits at most n descriptors. The spec's rule
//     would be n <= size, but Linux builds indirect tables longer than small
//     queues, so the cap is 4 * size, at least 256, at most 32768;
//   - the device-readable plus device-writable bytes of a chain fit 32 bits
//     (used->len is 32 bits; 2.7.5.2 forbids chains longer than 2^32 bytes);
//   - at most `size` chains are outstanding: avail->idx may run at most `size`
//     ahead of the used index (each outstanding chain holds a head descriptor).
// Zero-length descriptors are allowed: they count toward the limits and the
// readable-before-writable rule but carry no bytes, so they are left out of
// Chain::readable / Chain::writable and their address is not checked.
//
// Not thread-safe: one thread drives a queue. The guest may change ring memory
// at any time; that is expected, and only ever yields an error.
#ifndef HV_DEVPROC_VIRTIO_VIRTQUEUE_H_
#define HV_DEVPROC_VIRTIO_VIRTQUEUE_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/guest_memory.h"

namespace hv::virtio {

// One guest buffer, already bounds-checked against RAM (never zero-length).
struct Buffer {
  uint64_t gpa;
  uint32_t len;
};

struct Chain {
  uint16_t head = 0;             // what Push() takes back
  std::vector<Buffer> readable;  // device-readable (driver -> device), in chain order
  std::vector<Buffer> writable;  // device-writable (device -> driver), in chain order
  uint64_t readable_bytes = 0, writable_bytes = 0;
};

// Guest-physical addresses of the three parts of a split virtqueue (2.7).
struct QueueLayout {
  uint16_t size;
  uint64_t desc;   // Descriptor Table: 16 * size bytes, 16-aligned
  uint64_t avail;  // Available Ring (Driver Area): 6 + 2 * size bytes, 2-aligned
  uint64_t used;   // Used Ring (Device Area): 6 + 8 * size bytes, 4-aligned
};

// Ring layout constants (2.7.5, 2.7.6, 2.7.8).
inline constexpr uint32_t kMaxQueueSize = 32768;
inline constexpr uint16_t kDescFNext = 1;
inline constexpr uint16_t kDescFWrite = 2;
inline constexpr uint16_t kDescFIndirect = 4;
inline constexpr uint16_t kAvailFNoInterrupt = 1;
inline constexpr uint16_t kUsedFNoNotify = 1;
inline constexpr uint64_t kDescSize = 16;

inline constexpr uint64_t DescTableBytes(uint32_t size) { return kDescSize * size; }
inline constexpr uint64_t AvailRingBytes(uint32_t size) { return 6 + 2ull * size; }
inline constexpr uint64_t UsedRingBytes(uint32_t size) { return 6 + 8ull * size; }

// The most entries an indirect table may hold on a queue of `size`.
inline constexpr uint32_t MaxIndirectEntries(uint32_t size) {
  uint32_t n = 4 * size;
  if (n < 256) n = 256;
  if (n > kMaxQueueSize) n = kMaxQueueSize;
  return n;
}

class SplitQueue {
 public:
  // `event_idx`: VIRTIO_F_EVENT_IDX negotiated; `indirect`: VIRTIO_F_INDIRECT_DESC
  // negotiated. `mem` must outlive the queue.
  SplitQueue(const GuestMemory& mem, bool event_idx, bool indirect);

  // Validates: size a power of two 1..32768, alignments (desc 16, avail 2,
  // used 4), each of the three areas wholly inside one RAM region. On success
  // the queue starts at index 0 with notifications enabled; on failure it is
  // left unconfigured. Does not write guest memory.
  absl::Status Configure(const QueueLayout& layout);
  bool configured() const { return configured_; }

  // The next chain the driver made available. nullopt: none now. An error means
  // the driver broke the rules (the transport then sets DEVICE_NEEDS_RESET); the
  // queue refuses further pops until Reset. Calling it unconfigured is a
  // FailedPrecondition error that does not break the queue.
  // Rule: every device-readable descriptor precedes every device-writable one
  // (2.7.4.2). With EVENT_IDX and notifications enabled, an empty Pop publishes
  // avail_event = the next index and looks again, so a caller that pops until
  // nullopt never misses a buffer the driver added without notifying.
  absl::StatusOr<std::optional<Chain>> Pop();

  // Returns a chain to the driver with `written` bytes written into its
  // writable buffers: fills the next used ring entry, then publishes used->idx
  // (release). Refused if `head` >= size or no popped chain is outstanding.
  absl::Status Push(uint16_t head, uint32_t written);

  // After a batch of Push(): does the driver want an interrupt now?
  // Without EVENT_IDX: something was pushed since the last call and
  // VIRTQ_AVAIL_F_NO_INTERRUPT is clear. With EVENT_IDX: the used index passed
  // used_event since the last call (2.7.7.2). Either way the pushes so far
  // count as signalled afterwards.
  bool NeedsInterrupt();

  // Tell the driver whether we want available buffer notifications
  // (VIRTQ_USED_F_NO_NOTIFY, or avail_event with EVENT_IDX; 2.7.10). After
  // enabling, callers must check for work again (Pop) — a buffer added just
  // before the enable was seen may have come without a notification. Does
  // nothing on an unconfigured queue (Configure starts enabled).
  void SetNotificationsEnabled(bool enabled);

  // Back to the unconfigured state: indices zero, errors forgotten.
  void Reset();

  // For a successor process after a restart: the indices it must continue from.
  struct Position {
    uint16_t next_avail = 0;
    uint16_t next_used = 0;
    uint16_t signalled_used = 0;
  };
  Position position() const { return {next_avail_, next_used_, signalled_used_}; }
  // Continue from `p`. Call after Configure (which starts at zero). Publishes
  // used->idx = p.next_used: its predecessor may have saved a Push whose idx
  // never reached the guest (the used entry itself was written before).
  void Restore(const Position& p);
  // The chain whose head is `head`, read again (a successor redoing a request
  // its predecessor had popped and not completed).
  absl::StatusOr<Chain> ChainAt(uint16_t head) const;
  // Called inside Push after the used entry is written and the index counted,
  // before the driver can see it: the device saves its state there, so that a
  // completion is never lost nor given twice across a restart.
  void SetCommitHook(std::function<void()> hook) { commit_ = std::move(hook); }

  uint16_t size() const { return size_; }

 private:
  absl::StatusOr<Chain> ReadChainAt(uint16_t head) const;
  absl::Status Refuse(absl::Status s);

  uint16_t LoadAvailIdx() const;
  void StoreAvailEvent(uint16_t v);
  void StoreUsedFlags(uint16_t v);

  const GuestMemory& mem_;
  const bool event_idx_;
  const bool indirect_;

  bool configured_ = false;
  bool broken_ = false;
  bool notifications_enabled_ = true;
  uint16_t size_ = 0;
  // Host addresses of the three parts; valid while configured_.
  uint8_t* desc_ = nullptr;
  uint8_t* avail_ = nullptr;
  uint8_t* used_ = nullptr;

  uint16_t next_avail_ = 0;      // next avail ring slot to read
  uint16_t next_used_ = 0;       // next used ring slot to write (== used->idx we published)
  uint16_t signalled_used_ = 0;  // used index at the last NeedsInterrupt decision
  std::function<void()> commit_;
};

// Copy helpers over a chain's buffers, seen as one byte stream: `len` bytes at
// `offset`. Bounds are re-checked against RAM; a copy that would run past the
// end of the buffers is an error and copies nothing.
absl::Status ReadChain(const GuestMemory& mem, const std::vector<Buffer>& bufs, uint64_t offset,
                       void* dst, size_t len);
absl::Status WriteChain(const GuestMemory& mem, const std::vector<Buffer>& bufs, uint64_t offset,
                        const void* src, size_t len);

}  // namespace hv::virtio

#endif  // HV_DEVPROC_VIRTIO_VIRTQUEUE_H_
