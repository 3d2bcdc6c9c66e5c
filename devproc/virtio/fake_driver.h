// A guest driver for tests of device-side virtqueue code: it drives a split
// queue the way Linux's virtio_ring does, and offers raw access to the rings
// for tests that play a driver breaking the rules. Test-only.
#ifndef HV_DEVPROC_VIRTIO_FAKE_DRIVER_H_
#define HV_DEVPROC_VIRTIO_FAKE_DRIVER_H_

#include <atomic>
#include <cstdint>
#include <cstring>
#include <optional>
#include <utility>
#include <vector>

#include "common/guest_memory.h"
#include "devproc/virtio/virtqueue.h"
#include "gtest/gtest.h"

namespace hv::virtio {

// Where the fake driver puts indirect tables by default: one per head.
inline constexpr uint64_t kIndirectGpa = 0x100000;
inline constexpr uint64_t kIndirectStride = 0x1000;

struct Sg {
  uint64_t gpa;
  uint32_t len;
};

// A guest driver, the way Linux's virtio_ring drives a split queue: a free list
// of descriptors, direct chains or one indirect table per chain, the avail
// index published after the ring entry (release), and the kick decision taken
// after a full fence. Its own bookkeeping lives outside guest memory, so the
// tests can scribble over the rings without confusing it.
class FakeDriver {
 public:
  FakeDriver(const GuestMemory& mem, QueueLayout layout, bool event_idx,
             uint64_t indirect_gpa = kIndirectGpa)
      : mem_(mem), layout_(layout), event_idx_(event_idx), indirect_gpa_(indirect_gpa) {
    Init();
  }

  const QueueLayout& layout() const { return layout_; }
  uint16_t size() const { return layout_.size; }

  // A freshly allocated queue whose indices start at `start` (0 for a new one;
  // other values stand in for a queue that has been running for a while).
  void Init(uint16_t start = 0) {
    memset(P(layout_.desc, DescTableBytes(size())), 0, DescTableBytes(size()));
    memset(P(layout_.avail, AvailRingBytes(size())), 0, AvailRingBytes(size()));
    memset(P(layout_.used, UsedRingBytes(size())), 0, UsedRingBytes(size()));
    Put16(layout_.avail + 2, start);
    Put16(layout_.used + 2, start);
    avail_idx_ = start;
    last_used_ = start;
    num_added_ = 0;
    free_.clear();
    for (int i = size() - 1; i >= 0; --i) free_.push_back(static_cast<uint16_t>(i));
    chains_.assign(size(), {});
  }

  size_t num_free() const { return free_.size(); }

  // Adds a buffer: `out` device-readable, then `in` device-writable.
  std::optional<uint16_t> Add(const std::vector<Sg>& out, const std::vector<Sg>& in,
                              bool indirect = false) {
    const size_t total = out.size() + in.size();
    if (total == 0) return std::nullopt;
    const size_t need = indirect ? 1 : total;
    if (free_.size() < need) return std::nullopt;
    std::vector<uint16_t> descs;
    for (size_t i = 0; i < need; ++i) {
      descs.push_back(free_.back());
      free_.pop_back();
    }
    const uint16_t head = descs[0];
    if (indirect) {
      const uint64_t table = IndirectTable(head);
      for (size_t i = 0; i < total; ++i) {
        const Sg& sg = i < out.size() ? out[i] : in[i - out.size()];
        uint16_t flags = i < out.size() ? 0 : kDescFWrite;
        if (i + 1 < total) flags |= kDescFNext;
        SetDescAt(table, static_cast<uint16_t>(i), sg.gpa, sg.len, flags,
                  static_cast<uint16_t>(i + 1));
      }
      SetDesc(head, table, static_cast<uint32_t>(total * kDescSize), kDescFIndirect, 0);
    } else {
      for (size_t i = 0; i < total; ++i) {
        const Sg& sg = i < out.size() ? out[i] : in[i - out.size()];
        uint16_t flags = i < out.size() ? 0 : kDescFWrite;
        uint16_t next = 0;
        if (i + 1 < total) {
          flags |= kDescFNext;
          next = descs[i + 1];
        }
        SetDesc(descs[i], sg.gpa, sg.len, flags, next);
      }
    }
    chains_[head] = descs;
    Publish(head);
    return head;
  }

  // After a batch of Add(): does the device want a notification?
  bool Kick() {
    const uint16_t now = avail_idx_;
    const uint16_t old = now - num_added_;
    num_added_ = 0;
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (event_idx_) {
      const uint16_t avail_event = AvailEvent();
      return static_cast<uint16_t>(now - avail_event - 1) < static_cast<uint16_t>(now - old);
    }
    return !(UsedFlags() & kUsedFNoNotify);
  }

  // The next used buffer (head, len), freeing its descriptors.
  std::optional<std::pair<uint16_t, uint32_t>> GetUsed() {
    const uint16_t idx = __atomic_load_n(U16(layout_.used + 2), __ATOMIC_ACQUIRE);
    if (idx == last_used_) return std::nullopt;
    const uint64_t elem = layout_.used + 4 + 8ull * (last_used_ % size());
    uint32_t id, len;
    memcpy(&id, P(elem, 4), 4);
    memcpy(&len, P(elem + 4, 4), 4);
    ++last_used_;
    if (id < size()) {
      for (uint16_t d : chains_[id]) free_.push_back(d);
      chains_[id].clear();
    }
    return std::make_pair(static_cast<uint16_t>(id), len);
  }

  // Raw access, for drivers that break the rules.
  void SetDesc(uint16_t i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next) {
    SetDescAt(layout_.desc, i, addr, len, flags, next);
  }
  void SetDescAt(uint64_t table, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags,
                 uint16_t next) {
    uint8_t* p = P(table + kDescSize * i, kDescSize);
    memcpy(p, &addr, 8);
    memcpy(p + 8, &len, 4);
    memcpy(p + 12, &flags, 2);
    memcpy(p + 14, &next, 2);
  }
  uint64_t IndirectTable(uint16_t head) const { return indirect_gpa_ + kIndirectStride * head; }
  // Puts `head` in the next avail ring slot and raises avail->idx.
  void Publish(uint16_t head) {
    Put16(layout_.avail + 4 + 2ull * (avail_idx_ % size()), head);
    ++avail_idx_;
    ++num_added_;
    __atomic_store_n(U16(layout_.avail + 2), avail_idx_, __ATOMIC_RELEASE);
  }
  void SetAvailIdx(uint16_t v) {
    avail_idx_ = v;
    __atomic_store_n(U16(layout_.avail + 2), v, __ATOMIC_RELEASE);
  }
  void SetAvailFlags(uint16_t v) { Put16(layout_.avail, v); }
  void SetUsedEvent(uint16_t v) { Put16(layout_.avail + 4 + 2ull * size(), v); }
  uint16_t UsedFlags() { return Get16(layout_.used); }
  uint16_t UsedIdx() { return Get16(layout_.used + 2); }
  uint16_t AvailEvent() { return Get16(layout_.used + 4 + 8ull * size()); }
  uint16_t avail_idx() const { return avail_idx_; }

  uint8_t* P(uint64_t gpa, uint64_t len) const {
    auto p = mem_.Translate(gpa, len);
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() ? *p : nullptr;
  }

 private:
  uint16_t* U16(uint64_t gpa) const { return reinterpret_cast<uint16_t*>(P(gpa, 2)); }
  void Put16(uint64_t gpa, uint16_t v) { __atomic_store_n(U16(gpa), v, __ATOMIC_RELAXED); }
  uint16_t Get16(uint64_t gpa) { return __atomic_load_n(U16(gpa), __ATOMIC_RELAXED); }

  const GuestMemory& mem_;
  QueueLayout layout_;
  bool event_idx_;
  uint64_t indirect_gpa_;
  uint16_t avail_idx_ = 0;  // what this driver last wrote to avail->idx
  uint16_t num_added_ = 0;  // since the last Kick
  uint16_t last_used_ = 0;
  std::vector<uint16_t> free_;
  std::vector<std::vector<uint16_t>> chains_;  // descriptors of each outstanding head
};

}  // namespace hv::virtio

#endif  // HV_DEVPROC_VIRTIO_FAKE_DRIVER_H_
