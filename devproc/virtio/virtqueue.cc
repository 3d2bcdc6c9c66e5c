#include "devproc/virtio/virtqueue.h"

#include <endian.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace hv::virtio {
namespace {

// Offsets inside the parts (2.7.6, 2.7.8).
constexpr uint64_t kRingFlags = 0;
constexpr uint64_t kRingIdx = 2;
constexpr uint64_t kRingEntries = 4;
constexpr uint64_t kUsedElemSize = 8;

// Ring memory is shared with the guest, which may write it at any moment. The
// aligned 16/32-bit fields are accessed with atomics so that each access is one
// load or store the compiler can neither split nor repeat.
uint16_t Load16(const uint8_t* p, int order) {
  return le16toh(__atomic_load_n(reinterpret_cast<const uint16_t*>(p), order));
}
void Store16(uint8_t* p, uint16_t v, int order) {
  __atomic_store_n(reinterpret_cast<uint16_t*>(p), htole16(v), order);
}
void Store32(uint8_t* p, uint32_t v, int order) {
  __atomic_store_n(reinterpret_cast<uint32_t*>(p), htole32(v), order);
}

struct Desc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};

// One snapshot of the descriptor at `p` (an indirect table need not be
// aligned, so no atomics). The signal fence stops the compiler from going back
// to guest memory for a field instead of using the copy.
Desc LoadDesc(const uint8_t* p) {
  uint8_t raw[kDescSize];
  memcpy(raw, p, sizeof(raw));
  std::atomic_signal_fence(std::memory_order_seq_cst);
  Desc d;
  uint64_t addr;
  uint32_t len;
  uint16_t flags, next;
  memcpy(&addr, raw, 8);
  memcpy(&len, raw + 8, 4);
  memcpy(&flags, raw + 12, 2);
  memcpy(&next, raw + 14, 2);
  d.addr = le64toh(addr);
  d.len = le32toh(len);
  d.flags = le16toh(flags);
  d.next = le16toh(next);
  return d;
}

template <typename... Args>
absl::Status DriverError(const absl::FormatSpec<Args...>& fmt, const Args&... args) {
  return absl::InvalidArgumentError(absl::StrFormat(fmt, args...));
}

}  // namespace

SplitQueue::SplitQueue(const GuestMemory& mem, bool event_idx, bool indirect)
    : mem_(mem), event_idx_(event_idx), indirect_(indirect) {}

absl::Status SplitQueue::Configure(const QueueLayout& layout) {
  Reset();
  const uint32_t size = layout.size;
  if (size == 0 || size > kMaxQueueSize || (size & (size - 1)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("queue size %u is not a power of two in 1..%u", size, kMaxQueueSize));
  }
  if (layout.desc % 16 != 0 || layout.avail % 2 != 0 || layout.used % 4 != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "queue areas misaligned: desc %#x (needs 16), avail %#x (needs 2), used %#x (needs 4)",
        layout.desc, layout.avail, layout.used));
  }
  auto desc = mem_.Translate(layout.desc, DescTableBytes(size));
  if (!desc.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("descriptor table: ", desc.status().message()));
  }
  auto avail = mem_.Translate(layout.avail, AvailRingBytes(size));
  if (!avail.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("available ring: ", avail.status().message()));
  }
  auto used = mem_.Translate(layout.used, UsedRingBytes(size));
  if (!used.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("used ring: ", used.status().message()));
  }
  size_ = static_cast<uint16_t>(size);
  desc_ = *desc;
  avail_ = *avail;
  used_ = *used;
  configured_ = true;
  return absl::OkStatus();
}

void SplitQueue::Reset() {
  configured_ = false;
  broken_ = false;
  notifications_enabled_ = true;
  size_ = 0;
  desc_ = avail_ = used_ = nullptr;
  next_avail_ = next_used_ = signalled_used_ = 0;
}

void SplitQueue::Restore(const Position& p) {
  next_avail_ = p.next_avail;
  next_used_ = p.next_used;
  signalled_used_ = p.signalled_used;
  if (configured_) Store16(used_ + kRingIdx, next_used_, __ATOMIC_RELEASE);
}

absl::StatusOr<Chain> SplitQueue::ChainAt(uint16_t head) const {
  if (!configured_) return absl::FailedPreconditionError("virtqueue is not configured");
  if (head >= size_) {
    return absl::InvalidArgumentError(absl::StrFormat("head %u is outside a queue of %u", head, size_));
  }
  return ReadChainAt(head);
}

uint16_t SplitQueue::LoadAvailIdx() const {
  // Acquire: the ring entries and descriptors the driver wrote before raising
  // idx are visible to the reads that follow.
  return Load16(avail_ + kRingIdx, __ATOMIC_ACQUIRE);
}

void SplitQueue::StoreAvailEvent(uint16_t v) {
  Store16(used_ + kRingEntries + kUsedElemSize * size_, v, __ATOMIC_RELAXED);
}

void SplitQueue::StoreUsedFlags(uint16_t v) { Store16(used_ + kRingFlags, v, __ATOMIC_RELAXED); }

absl::Status SplitQueue::Refuse(absl::Status s) {
  broken_ = true;
  return s;
}

absl::StatusOr<std::optional<Chain>> SplitQueue::Pop() {
  if (!configured_) return absl::FailedPreconditionError("virtqueue is not configured");
  if (broken_) {
    return absl::FailedPreconditionError("virtqueue refused after a driver error; reset needed");
  }
  uint16_t avail_idx = LoadAvailIdx();
  if (avail_idx == next_avail_) {
    if (!event_idx_ || !notifications_enabled_) return std::optional<Chain>();
    // Ask for a notification at the next entry, then look again: the driver may
    // have added it after our first look but before seeing the new avail_event
    // (2.7.10; the driver fences between raising idx and reading avail_event).
    StoreAvailEvent(next_avail_);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    avail_idx = LoadAvailIdx();
    if (avail_idx == next_avail_) return std::optional<Chain>();
  }
  const uint16_t pending = avail_idx - next_avail_;
  if (pending > size_) {
    return Refuse(DriverError("avail idx %u is %u entries past %u, more than the queue size %u",
                              avail_idx, pending, next_avail_, size_));
  }
  const uint16_t outstanding = avail_idx - next_used_;
  if (outstanding > size_) {
    return Refuse(
        DriverError("%u chains outstanding (avail idx %u, used idx %u), more than the "
                    "queue size %u",
                    outstanding, avail_idx, next_used_, size_));
  }
  const uint16_t slot = next_avail_ & (size_ - 1);
  const uint16_t head = Load16(avail_ + kRingEntries + 2ull * slot, __ATOMIC_RELAXED);
  if (head >= size_) {
    return Refuse(
        DriverError("avail ring entry %u holds head %u, outside a queue of %u", slot, head, size_));
  }
  auto chain = ReadChainAt(head);
  if (!chain.ok()) return Refuse(chain.status());
  ++next_avail_;
  return std::optional<Chain>(std::move(*chain));
}

absl::StatusOr<Chain> SplitQueue::ReadChainAt(uint16_t head) const {
  Chain chain;
  chain.head = head;
  const uint8_t* table = desc_;  // the table `idx` indexes: the queue's, or an indirect one
  uint32_t table_entries = size_;
  uint32_t budget = size_;  // descriptors the walk may still visit in this table
  bool in_indirect = false;
  bool seen_writable = false;
  uint64_t total = 0;
  uint16_t idx = head;
  for (;;) {
    if (budget == 0) {
      return DriverError("descriptor chain from head %u is longer than %s (%u); a loop?", head,
                         in_indirect ? "its indirect table" : "the queue", table_entries);
    }
    --budget;
    const Desc d = LoadDesc(table + kDescSize * idx);
    const char* where = in_indirect ? "indirect descriptor" : "descriptor";

    if (d.flags & kDescFIndirect) {
      if (!indirect_) {
        return DriverError(
            "descriptor %u has INDIRECT but VIRTIO_F_INDIRECT_DESC was not "
            "negotiated",
            idx);
      }
      if (in_indirect) return DriverError("indirect descriptor %u refers to another table", idx);
      if (d.flags & kDescFNext) return DriverError("descriptor %u has both INDIRECT and NEXT", idx);
      // The WRITE flag of this descriptor is ignored (2.7.5.3.2).
      if (d.len == 0 || d.len % kDescSize != 0) {
        return DriverError(
            "indirect table of descriptor %u is %u bytes, not a non-zero multiple "
            "of 16",
            idx, d.len);
      }
      const uint32_t entries = d.len / kDescSize;
      if (entries > MaxIndirectEntries(size_)) {
        return DriverError("indirect table of descriptor %u has %u entries, more than %u", idx,
                           entries, MaxIndirectEntries(size_));
      }
      auto t = mem_.Translate(d.addr, d.len);
      if (!t.ok()) {
        return DriverError("indirect table of descriptor %u: %s", idx, t.status().message());
      }
      table = *t;
      table_entries = entries;
      budget = entries;
      in_indirect = true;
      idx = 0;
      continue;
    }

    const bool writable = (d.flags & kDescFWrite) != 0;
    if (writable) {
      seen_writable = true;
    } else if (seen_writable) {
      return DriverError("device-readable %s %u follows a device-writable one", where, idx);
    }
    total += d.len;
    if (total > UINT32_MAX) {
      return DriverError("descriptor chain from head %u is more than 4 GiB long", head);
    }
    if (d.len != 0) {
      if (d.addr + d.len < d.addr) {
        return DriverError("%s %u: address %#x + length %#x overflows", where, idx, d.addr, d.len);
      }
      auto p = mem_.Translate(d.addr, d.len);
      if (!p.ok()) return DriverError("%s %u: %s", where, idx, p.status().message());
      if (writable) {
        chain.writable.push_back({d.addr, d.len});
        chain.writable_bytes += d.len;
      } else {
        chain.readable.push_back({d.addr, d.len});
        chain.readable_bytes += d.len;
      }
    }

    if (!(d.flags & kDescFNext)) break;
    if (d.next >= table_entries) {
      return DriverError("%s %u: next %u is outside a table of %u", where, idx, d.next,
                         table_entries);
    }
    idx = d.next;
  }
  return chain;
}

absl::Status SplitQueue::Push(uint16_t head, uint32_t written) {
  if (!configured_) return absl::FailedPreconditionError("virtqueue is not configured");
  if (head >= size_) {
    return absl::InvalidArgumentError(
        absl::StrFormat("head %u is outside a queue of %u", head, size_));
  }
  if (next_avail_ == next_used_) {
    return absl::FailedPreconditionError("Push without an outstanding popped chain");
  }
  uint8_t* elem = used_ + kRingEntries + kUsedElemSize * (next_used_ & (size_ - 1));
  Store32(elem, head, __ATOMIC_RELAXED);
  Store32(elem + 4, written, __ATOMIC_RELAXED);
  ++next_used_;
  if (commit_) commit_();
  // Release: the entry (and the data written into the buffers) is visible
  // before the driver can see the new idx.
  Store16(used_ + kRingIdx, next_used_, __ATOMIC_RELEASE);
  return absl::OkStatus();
}

bool SplitQueue::NeedsInterrupt() {
  if (!configured_) return false;
  const uint16_t old = signalled_used_;
  const uint16_t now = next_used_;
  if (old == now) return false;
  signalled_used_ = now;
  // used->idx was written before; the driver's suppression state must be read
  // after it, or a driver re-enabling interrupts and re-checking used->idx
  // could miss our update while we miss its re-enable.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (event_idx_) {
    const uint16_t used_event = Load16(avail_ + kRingEntries + 2ull * size_, __ATOMIC_RELAXED);
    // Did the used index step onto used_event + 1, i.e. was the entry at
    // used_event written by the pushes in (old, now]? (2.7.7.2)
    return static_cast<uint16_t>(now - used_event - 1) < static_cast<uint16_t>(now - old);
  }
  return !(Load16(avail_ + kRingFlags, __ATOMIC_RELAXED) & kAvailFNoInterrupt);
}

void SplitQueue::SetNotificationsEnabled(bool enabled) {
  if (!configured_) return;
  notifications_enabled_ = enabled;
  if (event_idx_) {
    // flags stay 0 (2.7.10.2). Enabled: notify when the entry at next_avail is
    // written. Disabled: an index the driver has already passed, so it stays
    // quiet (until 65536 more entries).
    StoreAvailEvent(enabled ? next_avail_ : static_cast<uint16_t>(next_avail_ - 1));
  } else {
    StoreUsedFlags(enabled ? 0 : kUsedFNoNotify);
  }
  // The caller looks at avail->idx next; that read must not pass this store.
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

namespace {

absl::Status CopyChain(const GuestMemory& mem, const std::vector<Buffer>& bufs, uint64_t offset,
                       uint8_t* host, size_t len, bool to_guest) {
  uint64_t total = 0;
  for (const Buffer& b : bufs) {
    if (b.gpa + b.len < b.gpa) {
      return absl::InvalidArgumentError(
          absl::StrFormat("buffer %#x + %#x overflows", b.gpa, b.len));
    }
    total += b.len;
  }
  if (offset > total || len > total - offset) {
    return absl::OutOfRangeError(absl::StrFormat(
        "%u bytes at offset %u do not fit buffers of %u bytes", len, offset, total));
  }
  // Translate every piece first, so that a bad buffer fails the copy before
  // any byte moves.
  struct Piece {
    uint8_t* p;
    uint64_t n;
  };
  std::vector<Piece> pieces;
  uint64_t left = len;
  for (const Buffer& b : bufs) {
    if (left == 0) break;
    if (offset >= b.len) {
      offset -= b.len;
      continue;
    }
    const uint64_t n = std::min<uint64_t>(b.len - offset, left);
    auto p = mem.Translate(b.gpa + offset, n);
    if (!p.ok()) return p.status();
    pieces.push_back({*p, n});
    left -= n;
    offset = 0;
  }
  for (const Piece& piece : pieces) {
    if (to_guest) {
      memcpy(piece.p, host, piece.n);
    } else {
      memcpy(host, piece.p, piece.n);
    }
    host += piece.n;
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ReadChain(const GuestMemory& mem, const std::vector<Buffer>& bufs, uint64_t offset,
                       void* dst, size_t len) {
  return CopyChain(mem, bufs, offset, static_cast<uint8_t*>(dst), len, false);
}

absl::Status WriteChain(const GuestMemory& mem, const std::vector<Buffer>& bufs, uint64_t offset,
                        const void* src, size_t len) {
  return CopyChain(mem, bufs, offset, static_cast<uint8_t*>(const_cast<void*>(src)), len, true);
}

}  // namespace hv::virtio
