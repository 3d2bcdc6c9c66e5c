#include "common/exit_channel.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "capnp/message.h"
#include "capnp/serialize.h"
#include "common/fd.h"

namespace hv {
namespace {

// Spins before sleeping: a device that is awake answers within a few µs.
constexpr int kReadSpins = 2000;
// How long one futex wait lasts before `abandon` is consulted again.
constexpr long kWaitSliceNs = 20 * 1000 * 1000;

void CpuRelax() { __builtin_ia32_pause(); }

// Shared (not FUTEX_PRIVATE) futex operations: the word lives in a memfd
// mapped by two processes.
void FutexWait(std::atomic<uint32_t>* word, uint32_t expected, long timeout_ns) {
  struct timespec ts = {0, timeout_ns};
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT, expected, &ts, nullptr, 0);
}

void FutexWakeAll(std::atomic<uint32_t>* word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE, INT32_MAX, nullptr, nullptr,
          0);
}

ExitRing* RingsOf(void* base) {
  return reinterpret_cast<ExitRing*>(static_cast<uint8_t*>(base) + sizeof(ExitChannelHeader));
}

}  // namespace

uint64_t PublishedKey(msg::AddressSpace space, uint64_t addr, uint8_t size) {
  return (uint64_t{1} << 63) | (uint64_t{static_cast<uint8_t>(space)} << 56) |
         (uint64_t{size} << 48) | (addr & ((uint64_t{1} << 48) - 1));
}

size_t ExitChannelBytes(uint32_t vcpus) {
  return sizeof(ExitChannelHeader) + sizeof(ExitRing) * vcpus;
}

void InitExitChannel(void* base, uint32_t vcpus) {
  auto* header = static_cast<ExitChannelHeader*>(base);
  header->magic = kExitChannelMagic;
  header->vcpus = vcpus;
  header->device_sleeping.store(0);
}

void EncodeIoAccess(const IoAccess& access, uint8_t (&slot)[kExitSlotBytes]) {
  // Segment table (count-1, size in words), then the segment.
  constexpr size_t kSegmentWords = kExitSlotBytes / sizeof(capnp::word) - 1;
  capnp::word segment[kSegmentWords];
  memset(segment, 0, sizeof(segment));
  capnp::FlatMessageBuilder builder(kj::arrayPtr(segment, kSegmentWords));
  auto request = builder.initRoot<msg::IoRequest>();
  request.setSeq(access.seq);
  request.setSpace(access.space);
  request.setIsWrite(access.is_write);
  request.setSize(access.size);
  request.setAddr(access.addr);
  request.setData(access.data);
  auto segments = builder.getSegmentsForOutput();
  uint32_t table[2] = {0, static_cast<uint32_t>(segments[0].size())};
  memcpy(slot, table, sizeof(table));
  memcpy(slot + sizeof(table), segments[0].begin(), segments[0].size() * sizeof(capnp::word));
}

absl::StatusOr<IoAccess> DecodeIoAccess(const uint8_t (&slot)[kExitSlotBytes]) {
  capnp::word words[kExitSlotBytes / sizeof(capnp::word)];
  memcpy(words, slot, sizeof(words));
  uint32_t table[2];
  memcpy(table, words, sizeof(table));
  if (table[0] != 0 || table[1] + 1 > kExitSlotBytes / sizeof(capnp::word)) {
    return absl::DataLossError("exit-channel slot: bad segment table");
  }
  IoAccess access;
  try {
    capnp::FlatArrayMessageReader reader(kj::arrayPtr(words, table[1] + 1));
    auto request = reader.getRoot<msg::IoRequest>();
    access.seq = request.getSeq();
    access.space = request.getSpace();
    access.is_write = request.getIsWrite();
    access.size = request.getSize();
    access.addr = request.getAddr();
    access.data = request.getData();
  } catch (const kj::Exception& e) {
    return absl::DataLossError(absl::StrCat("exit-channel slot: ", e.getDescription().cStr()));
  }
  return access;
}

void ExitChannelClient::RingDoorbell() {
  // Pairs with PrepareToSleep(): the head store above is seq_cst, so either the
  // device sees the new slot or we see that it sleeps.
  if (header_->device_sleeping.load(std::memory_order_seq_cst) != 0) {
    SignalEventFd(doorbell_fd_);
  }
}

absl::StatusOr<uint32_t> ExitChannelClient::Post(const IoAccess& access,
                                                 const std::function<bool()>& abandon) {
  uint32_t head = ring_->head.load(std::memory_order_relaxed);
  // The ring is full while the device has not consumed head - kExitRingSlots.
  for (int spins = 0;; ++spins) {
    uint32_t tail = ring_->tail.load(std::memory_order_acquire);
    if (head - tail < kExitRingSlots) break;
    if (spins % 1024 == 1023) {
      if (abandon()) return absl::UnavailableError("device stopped consuming its exit channel");
      RingDoorbell();
      usleep(50);
    }
    CpuRelax();
  }
  IoAccess numbered = access;
  numbered.seq = next_seq_++;
  // Which published registers this access might change: all of them, except the
  // ones that name it as a write that leaves them alone.
  uint64_t target = PublishedKey(access.space, access.addr, 0);
  for (int i = 0; i < kPublishedRegisters; ++i) {
    if (!access.is_write ||
        header_->published[i].unaffected_by.load(std::memory_order_relaxed) != target) {
      ordering_seq_[i] = numbered.seq;
    }
  }
  EncodeIoAccess(numbered, ring_->slots[head % kExitRingSlots]);
  ring_->head.store(head + 1, std::memory_order_seq_cst);
  RingDoorbell();
  return numbered.seq;
}

absl::Status ExitChannelClient::PostWrite(msg::AddressSpace space, uint64_t addr, uint8_t size,
                                          uint64_t data, const std::function<bool()>& abandon) {
  IoAccess access;
  access.space = space;
  access.is_write = true;
  access.size = size;
  access.addr = addr;
  access.data = data;
  return Post(access, abandon).status();
}

absl::StatusOr<uint64_t> ExitChannelClient::Read(msg::AddressSpace space, uint64_t addr,
                                                 uint8_t size,
                                                 const std::function<bool()>& abandon) {
  uint64_t published = 0;
  if (ReadPublished(PublishedKey(space, addr, size), &published)) {
    ++published_reads_;
    return published;
  }
  IoAccess access;
  access.space = space;
  access.size = size;
  access.addr = addr;
  auto seq = Post(access, abandon);
  if (!seq.ok()) return seq.status();
  for (int i = 0; i < kReadSpins; ++i) {
    if (ring_->reply_seq.load(std::memory_order_acquire) == *seq) {
      return ring_->reply_data.load(std::memory_order_relaxed);
    }
    CpuRelax();
  }
  for (;;) {
    ring_->vcpu_waiting.store(1, std::memory_order_seq_cst);
    uint32_t seen = ring_->reply_seq.load(std::memory_order_seq_cst);
    if (seen == *seq) break;
    FutexWait(&ring_->reply_seq, seen, kWaitSliceNs);
    if (ring_->reply_seq.load(std::memory_order_acquire) == *seq) break;
    if (abandon()) {
      ring_->vcpu_waiting.store(0, std::memory_order_relaxed);
      return absl::UnavailableError("device did not answer a read");
    }
  }
  ring_->vcpu_waiting.store(0, std::memory_order_relaxed);
  return ring_->reply_data.load(std::memory_order_relaxed);
}

bool ExitChannelClient::ReadPublished(uint64_t key, uint64_t* value) {
  for (int i = 0; i < kPublishedRegisters; ++i) {
    PublishedRegister& r = header_->published[i];
    if (r.key.load(std::memory_order_relaxed) != key) continue;
    // Everything this vCPU posted that could change the register must be handled.
    uint32_t handled = ring_->handled_seq.load(std::memory_order_acquire);
    if (static_cast<int32_t>(handled - ordering_seq_[i]) < 0) return false;
    uint32_t before = r.version.load(std::memory_order_acquire);
    if (before & 1) return false;
    bool valid = r.valid.load(std::memory_order_acquire) != 0;
    uint64_t v = r.value.load(std::memory_order_acquire);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (!valid || r.version.load(std::memory_order_relaxed) != before) return false;
    *value = v;
    return true;
  }
  return false;
}

ExitChannelServer::ExitChannelServer(void* base, uint32_t vcpus, int doorbell_fd)
    : header_(static_cast<ExitChannelHeader*>(base)),
      rings_(RingsOf(base)),
      vcpus_(vcpus),
      doorbell_fd_(doorbell_fd),
      progress_(vcpus) {
  // A successor without saved state goes on from what the rings say.
  for (uint32_t v = 0; v < vcpus_; ++v) {
    ExitRing& ring = rings_[v];
    progress_[v].tail = ring.tail.load(std::memory_order_relaxed);
    progress_[v].handled_seq = ring.handled_seq.load(std::memory_order_relaxed);
    progress_[v].reply_seq = ring.reply_seq.load(std::memory_order_relaxed);
    progress_[v].reply_data = ring.reply_data.load(std::memory_order_relaxed);
  }
}

void ExitChannelServer::Restore(const std::vector<ExitRingProgress>& saved) {
  for (uint32_t v = 0; v < vcpus_ && v < saved.size(); ++v) {
    ExitRing& ring = rings_[v];
    const ExitRingProgress& p = saved[v];
    uint32_t head = ring.head.load(std::memory_order_acquire);
    uint32_t tail = ring.tail.load(std::memory_order_relaxed);
    // The saved tail lies between what the ring shows consumed and what was posted.
    if (static_cast<int32_t>(head - p.tail) < 0 || static_cast<int32_t>(p.tail - tail) < 0) {
      continue;
    }
    progress_[v] = p;
    ring.handled_seq.store(p.handled_seq, std::memory_order_release);
    ring.tail.store(p.tail, std::memory_order_release);
    if (ring.reply_seq.load(std::memory_order_relaxed) != p.reply_seq) {
      ring.reply_data.store(p.reply_data, std::memory_order_relaxed);
      ring.reply_seq.store(p.reply_seq, std::memory_order_seq_cst);
      FutexWakeAll(&ring.reply_seq);
    }
  }
}

size_t ExitChannelServer::Drain(const Handler& handler) {
  size_t handled = 0;
  for (uint32_t v = 0; v < vcpus_; ++v) {
    ExitRing& ring = rings_[v];
    uint32_t tail = ring.tail.load(std::memory_order_relaxed);
    for (;;) {
      uint32_t head = ring.head.load(std::memory_order_acquire);
      if (tail == head) break;
      auto access = DecodeIoAccess(ring.slots[tail % kExitRingSlots]);
      ++tail;
      ++handled;
      ExitRingProgress& progress = progress_[v];
      progress.tail = tail;
      if (!access.ok()) {  // only the core writes slots; a bad one is skipped
        ring.tail.store(tail, std::memory_order_release);
        continue;
      }
      uint64_t value = handler(*access);
      progress.handled_seq = access->seq;
      if (!access->is_write) {
        progress.reply_seq = access->seq;
        progress.reply_data = value;
      }
      // The access is in the device's state before the vCPU can see it done
      // (the slot free, the reply): a successor neither loses nor repeats it.
      if (commit_) commit_();
      ring.tail.store(tail, std::memory_order_release);
      // After the handler: published registers it changed are already updated.
      ring.handled_seq.store(access->seq, std::memory_order_release);
      if (!access->is_write) {
        ring.reply_data.store(value, std::memory_order_relaxed);
        ring.reply_seq.store(access->seq, std::memory_order_seq_cst);
        if (ring.vcpu_waiting.load(std::memory_order_seq_cst) != 0) FutexWakeAll(&ring.reply_seq);
      }
    }
  }
  return handled;
}

bool ExitChannelServer::AnyPending() const {
  for (uint32_t v = 0; v < vcpus_; ++v) {
    if (rings_[v].head.load(std::memory_order_seq_cst) !=
        rings_[v].tail.load(std::memory_order_relaxed)) {
      return true;
    }
  }
  return false;
}

int ExitChannelServer::AddPublished(msg::AddressSpace space, uint64_t addr, uint8_t size,
                                    uint64_t unaffected_by) {
  uint64_t key = PublishedKey(space, addr, size);
  // A successor process takes over its predecessor's entry: it starts
  // unpublished until the successor has restored the register and says so.
  for (int i = 0; i < kPublishedRegisters; ++i) {
    PublishedRegister& r = header_->published[i];
    if (r.key.load(std::memory_order_relaxed) != key) continue;
    uint32_t version = r.version.load(std::memory_order_relaxed);
    r.version.store(version | 1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);
    r.valid.store(0, std::memory_order_relaxed);
    r.unaffected_by.store(unaffected_by, std::memory_order_relaxed);
    r.version.store((version | 1) + 1, std::memory_order_release);
    return i;
  }
  for (int i = 0; i < kPublishedRegisters; ++i) {
    PublishedRegister& r = header_->published[i];
    if (r.key.load(std::memory_order_relaxed) != 0) continue;
    r.valid.store(0, std::memory_order_relaxed);
    r.unaffected_by.store(unaffected_by, std::memory_order_relaxed);
    r.key.store(PublishedKey(space, addr, size), std::memory_order_release);
    return i;
  }
  return -1;
}

void ExitChannelServer::SetPublished(int handle, std::optional<uint64_t> value) {
  if (handle < 0 || handle >= kPublishedRegisters) return;
  PublishedRegister& r = header_->published[handle];
  uint32_t version = r.version.load(std::memory_order_relaxed);
  if (value.has_value() == (r.valid.load(std::memory_order_relaxed) != 0) &&
      (!value.has_value() || *value == r.value.load(std::memory_order_relaxed))) {
    return;  // unchanged: no store, no cache-line traffic
  }
  r.version.store(version + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  r.value.store(value.value_or(0), std::memory_order_relaxed);
  r.valid.store(value.has_value() ? 1 : 0, std::memory_order_relaxed);
  r.version.store(version + 2, std::memory_order_release);
}

bool ExitChannelServer::PrepareToSleep() {
  header_->device_sleeping.store(1, std::memory_order_seq_cst);
  if (AnyPending()) {
    header_->device_sleeping.store(0, std::memory_order_relaxed);
    return false;
  }
  return true;
}

void ExitChannelServer::Woke() {
  header_->device_sleeping.store(0, std::memory_order_relaxed);
  uint64_t count;
  ssize_t ignored = read(doorbell_fd_, &count, sizeof(count));  // doorbell is non-blocking
  (void)ignored;
}

}  // namespace hv
