// The exit channel: how hvcore forwards a vCPU's register access to a device
// process without a system call on the common path.
//
// The broker creates one memfd per device holding a header and one ring per vCPU.
// The vCPU thread (producer) puts an IoRequest (a Cap'n Proto struct, schema/msg.capnp)
// in the next slot; the device (consumer) takes slots in order, so posted writes
// and later reads keep their order. A read waits for the device to store its reply:
// a short spin, then a futex wait on reply_seq. The device sleeps in poll() on its
// doorbell eventfd; a producer writes the doorbell only when the device said it
// is about to sleep (device_sleeping), so a busy device costs no system call.
//
// Read-mostly registers skip the round trip: the device publishes the current
// value of a register whose read has no side effects (a UART's LSR) in the
// header, and the core answers a read of it from there once the device has
// handled every earlier access of that vCPU that could change it.
//
// Nothing the device writes here is trusted by the core: ring indices are
// re-checked and every wait is bounded so that a dead or hostile device cannot
// hang a vCPU forever.
#ifndef HV_COMMON_EXIT_CHANNEL_H_
#define HV_COMMON_EXIT_CHANNEL_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "schema/msg.capnp.h"

namespace hv {

inline constexpr uint32_t kExitChannelMagic = 0x68766563;  // "hvec"
inline constexpr uint32_t kExitRingSlots = 64;
inline constexpr size_t kExitSlotBytes = 64;

struct IoAccess {
  uint32_t seq = 0;
  msg::AddressSpace space = msg::AddressSpace::PIO;
  bool is_write = false;
  uint8_t size = 0;
  uint64_t addr = 0;
  uint64_t data = 0;
};

struct alignas(64) ExitRing {
  // Written by the vCPU.
  std::atomic<uint32_t> head;          // slots posted so far
  std::atomic<uint32_t> vcpu_waiting;  // 1: the vCPU sleeps on reply_seq
  uint8_t pad0[56];
  // Written by the device.
  std::atomic<uint32_t> tail;       // slots consumed so far
  std::atomic<uint32_t> reply_seq;  // seq of the last read answered (futex word)
  std::atomic<uint64_t> reply_data;
  std::atomic<uint32_t> handled_seq;  // seq of the last access fully handled
  uint8_t pad1[44];
  uint8_t slots[kExitRingSlots][kExitSlotBytes];
};

inline constexpr int kPublishedRegisters = 4;

// One read-mostly register (see above). `key` names it (PublishedKey; 0: unused)
// and `unaffected_by` a write that never changes it (0: none), both set once;
// `value` is valid while `version` is even and `valid` is 1 (a seqlock: the
// device makes `version` odd while it changes `value` or `valid`).
struct alignas(32) PublishedRegister {
  std::atomic<uint64_t> key;
  std::atomic<uint64_t> unaffected_by;
  std::atomic<uint64_t> value;
  std::atomic<uint32_t> version;
  std::atomic<uint32_t> valid;
};

// A register or write target as one word: space, size (0 for "any size") and address.
uint64_t PublishedKey(msg::AddressSpace space, uint64_t addr, uint8_t size);

struct alignas(64) ExitChannelHeader {
  uint32_t magic;
  uint32_t vcpus;
  std::atomic<uint32_t> device_sleeping;  // 1: the device may be blocked on its doorbell
  uint8_t pad[52];
  PublishedRegister published[kPublishedRegisters];
};

// Bytes of the memfd for a device's channel with `vcpus` rings.
size_t ExitChannelBytes(uint32_t vcpus);
// Initialises a freshly created (zeroed) mapping.
void InitExitChannel(void* base, uint32_t vcpus);

// Encodes/decodes one slot as a single-segment Cap'n Proto message.
void EncodeIoAccess(const IoAccess& access, uint8_t (&slot)[kExitSlotBytes]);
absl::StatusOr<IoAccess> DecodeIoAccess(const uint8_t (&slot)[kExitSlotBytes]);

// The vCPU side of one ring. Not thread-safe: one per (device, vCPU).
class ExitChannelClient {
 public:
  ExitChannelClient(ExitChannelHeader* header, ExitRing* ring, int doorbell_fd)
      : header_(header), ring_(ring), doorbell_fd_(doorbell_fd) {}

  // Queues a write and returns; the device applies it before any later access.
  // `abandon` is polled while the ring is full; when it returns true the call gives up.
  absl::Status PostWrite(msg::AddressSpace space, uint64_t addr, uint8_t size, uint64_t data,
                         const std::function<bool()>& abandon);
  // Answers from a published register when it can (see above); otherwise queues
  // the read and waits for its reply.
  absl::StatusOr<uint64_t> Read(msg::AddressSpace space, uint64_t addr, uint8_t size,
                                const std::function<bool()>& abandon);
  // How many reads were answered from a published register (for profiles and tests).
  uint64_t published_reads() const { return published_reads_; }

 private:
  absl::StatusOr<uint32_t> Post(const IoAccess& access, const std::function<bool()>& abandon);
  void RingDoorbell();
  bool ReadPublished(uint64_t key, uint64_t* value);

  ExitChannelHeader* header_;
  ExitRing* ring_;
  int doorbell_fd_;
  uint32_t next_seq_ = 1;
  // Per published register: the seq of the last access posted that might change it.
  uint32_t ordering_seq_[kPublishedRegisters] = {};
  uint64_t published_reads_ = 0;
};

// How far a device got in one ring: what a successor process resumes from.
struct ExitRingProgress {
  uint32_t tail = 0;         // slots consumed
  uint32_t handled_seq = 0;  // seq of the last access handled
  uint32_t reply_seq = 0;    // seq of the last read answered
  uint32_t pad = 0;
  uint64_t reply_data = 0;   // its value
};

// The device side of all the rings of one channel. Single-threaded.
class ExitChannelServer {
 public:
  // Returns the value of a read (ignored for writes).
  using Handler = std::function<uint64_t(const IoAccess&)>;

  // `vcpus` comes from the device's configuration, not from the shared header.
  ExitChannelServer(void* base, uint32_t vcpus, int doorbell_fd);

  // Handles every pending request of every ring; returns how many.
  size_t Drain(const Handler& handler);
  // Call before blocking on the doorbell: returns false if work arrived meanwhile
  // (then do not block; call Drain again).
  bool PrepareToSleep();
  // Whether any vCPU has queued an access not yet handled (cheap: shared loads).
  bool Pending() const { return AnyPending(); }
  // Call after waking up: clears the doorbell and the sleeping flag.
  void Woke();
  int doorbell_fd() const { return doorbell_fd_; }

  // Restart: called after an access was handled and progress() counts it, and
  // before the vCPU can see that (its slot consumed, a read's reply): the
  // device saves its state there, so that a successor neither loses nor
  // repeats the access.
  void SetCommitHook(std::function<void()> hook) { commit_ = std::move(hook); }
  const std::vector<ExitRingProgress>& progress() const { return progress_; }
  // A successor resumes from `saved` (its predecessor's last commit): the
  // slots it consumed are skipped and a read it answered is answered again in
  // case the vCPU has not seen it. Entries that do not fit the ring are ignored.
  void Restore(const std::vector<ExitRingProgress>& saved);

  // Offers the register (space, addr, size) for the core to read from shared
  // memory; `unaffected_by` is a write target (PublishedKey with size 0) that
  // never changes it, or 0. Returns its handle, or -1 when the table is full.
  // It starts unpublished: reads go to the device until SetPublished(h, value).
  int AddPublished(msg::AddressSpace space, uint64_t addr, uint8_t size, uint64_t unaffected_by);
  // The register's value now, or nullopt while a read of it has side effects or
  // cannot be known in advance. Call whenever the value may have changed, before
  // returning from the access that changed it.
  void SetPublished(int handle, std::optional<uint64_t> value);

 private:
  bool AnyPending() const;

  ExitChannelHeader* header_;
  ExitRing* rings_;
  uint32_t vcpus_;
  int doorbell_fd_;
  std::vector<ExitRingProgress> progress_;
  std::function<void()> commit_;
};

}  // namespace hv

#endif  // HV_COMMON_EXIT_CHANNEL_H_
