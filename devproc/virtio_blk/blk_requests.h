// virtio-blk requests (virtio 1.2, section 5.2): bhyve's device options, the
// feature bits and configuration space the device offers, and the engine that
// turns one descriptor chain into a disk operation and its completion.
//
// A request (5.2.6) is, over the chain's bytes:
//   readable:  le32 type, le32 reserved, le64 sector  (16-byte header, may span
//              buffers), then the data the device reads (OUT, DISCARD and
//              WRITE_ZEROES segments)
//   writable:  the data the device writes (IN, GET_ID), then the status byte,
//              which is the last writable byte of the chain.
// The engine does not depend on the virtqueue code: it takes a chain as its
// readable and writable buffer lists, and hands back per request the head and
// the number of bytes written, for the caller to put on the used ring.
#ifndef HV_DEVPROC_VIRTIO_BLK_BLK_REQUESTS_H_
#define HV_DEVPROC_VIRTIO_BLK_BLK_REQUESTS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/guest_memory.h"
#include "devproc/block/block_backend.h"

namespace hv::virtio_blk {

// The disk backend is shared with other block devices (devproc/block).
using block::BlockBackend;
using block::BlockBackendOptions;
using block::BlockOp;
using block::ByteRange;

// One guest buffer of a descriptor chain (same shape as hv::virtio::Buffer).
struct Buffer {
  uint64_t gpa;
  uint32_t len;
};

// Request types (5.2.6).
inline constexpr uint32_t kTypeIn = 0;
inline constexpr uint32_t kTypeOut = 1;
inline constexpr uint32_t kTypeFlush = 4;
inline constexpr uint32_t kTypeGetId = 8;
inline constexpr uint32_t kTypeDiscard = 11;
inline constexpr uint32_t kTypeWriteZeroes = 13;

// Status byte values.
inline constexpr uint8_t kStatusOk = 0;
inline constexpr uint8_t kStatusIoErr = 1;
inline constexpr uint8_t kStatusUnsupp = 2;

// Feature bits (5.2.3) and the transport-independent ones the device offers.
inline constexpr int kFeatureSizeMax = 1;
inline constexpr int kFeatureSegMax = 2;
inline constexpr int kFeatureRo = 5;
inline constexpr int kFeatureBlkSize = 6;
inline constexpr int kFeatureFlush = 9;
inline constexpr int kFeatureTopology = 10;
inline constexpr int kFeatureMq = 12;
inline constexpr int kFeatureDiscard = 13;
inline constexpr int kFeatureWriteZeroes = 14;
inline constexpr int kFeatureRingIndirectDesc = 28;
inline constexpr int kFeatureRingEventIdx = 29;
inline constexpr int kFeatureVersion1 = 32;

inline constexpr uint64_t kSectorSize = 512;  // protocol unit, whatever blk_size is
inline constexpr size_t kHeaderSize = 16;
inline constexpr size_t kSegmentSize = 16;  // struct virtio_blk_discard_write_zeroes
inline constexpr size_t kIdBytes = 20;
inline constexpr uint32_t kSegmentFlagUnmap = 1;
inline constexpr size_t kConfigSize = 60;  // through write_zeroes_may_unmap + unused1

// bhyve's virtio-blk options (`-s N,virtio-blk,PATH,opt,opt=value,...`); the
// path is the broker's business.
struct BlkOptions {
  bool read_only = false;          // ro
  bool no_cache = false;           // nocache: the broker opens with O_DIRECT
  bool sync_writes = false;        // direct (or sync): the broker opens with O_DSYNC
  bool no_delete = false;          // nodelete: no DISCARD, write zeroes never unmaps
  uint32_t logical_sector_size = 0;   // sectorsize=L[/P]; 0 = the disk's default
  uint32_t physical_sector_size = 0;  // 0 = same as logical (or the device's)
  std::string serial;              // ser= or serial=, at most 20 printable ASCII bytes
  std::optional<uint32_t> boot_index;  // bootindex=N, for the boot ROM
};

// Parses (key, value) pairs; a flag has an empty value (or true/false, on/off,
// yes/no, 1/0). Errors name the option.
absl::StatusOr<BlkOptions> ParseBlkOptions(
    const std::vector<std::pair<std::string, std::string>>& options);

// A stable serial derived from the disk's path, for when none is configured:
// "HV-XXXX-XXXX-XXXX" (17 characters, 12 hex digits of a hash of the path).
std::string DefaultSerial(std::string_view disk_path);

// Backend options from the device options (`workers` threads).
BlockBackendOptions BackendOptions(const BlkOptions& options, int workers = 2);

// What the device offers and enforces; BuildConfig lays it out for the guest.
struct BlkDeviceConfig {
  uint64_t capacity_sectors = 0;  // 512-byte sectors
  uint32_t logical_block_size = 512;
  uint32_t physical_block_size = 512;
  bool read_only = false;
  bool discard = true;  // DISCARD offered, and write zeroes may unmap
  uint16_t num_queues = 1;
  uint32_t size_max = 1u << 20;  // bytes per buffer (a hint to the driver)
  uint32_t seg_max = 254;        // data buffers per request (a hint to the driver)
  uint32_t max_discard_sectors = 1u << 22;
  uint32_t max_discard_seg = 32;
  uint32_t discard_sector_alignment = 1;  // 512-byte sectors
  uint32_t max_write_zeroes_sectors = 1u << 22;
  uint32_t max_write_zeroes_seg = 32;
  std::string serial;  // GET_ID
};

// The device config for `backend` (size, block sizes, read-only) and `options`.
// seg_max is queue_size - 2 (the header and status descriptors).
absl::StatusOr<BlkDeviceConfig> MakeDeviceConfig(const BlkOptions& options,
                                                 const BlockBackend& backend,
                                                 uint16_t num_queues = 1,
                                                 uint16_t queue_size = 256);

// Feature bits the device offers: VERSION_1, RING_INDIRECT_DESC, RING_EVENT_IDX,
// SIZE_MAX, SEG_MAX, BLK_SIZE, TOPOLOGY, FLUSH; RO when read-only, else
// WRITE_ZEROES and (unless nodelete) DISCARD; MQ when num_queues > 1.
uint64_t DeviceFeatures(const BlkDeviceConfig& config);

// struct virtio_blk_config (5.2.4), little-endian, kConfigSize bytes. Fields
// whose feature is not offered are 0; writeback is 0 (no CONFIG_WCE).
std::vector<uint8_t> BuildConfig(const BlkDeviceConfig& config);

// A finished request: put `head` on the used ring with `used_len`.
struct Completion {
  uint16_t head;
  // Bytes written into the writable buffers, status byte included: all of
  // them after a successful IN or any GET_ID (data, NUL padding, status),
  // else 1 (the status byte; data of a failed IN is undefined).
  uint32_t used_len;
  uint8_t status;  // also written to the status byte
  uint64_t id;     // the engine's request id (in order of acceptance)
};

// Runs the requests of one request queue against a BlockBackend (several
// engines, one per queue, may share a backend). Single-threaded: every call,
// and every completion callback, is on the caller's (event-loop) thread.
//
// Event loop wiring: watch backend.event_fd() for POLLIN and call
// DrainCompletions() (on any engine sharing the backend, or on the backend)
// when it is readable.
class BlkRequestEngine {
 public:
  using CompletionFn = std::function<void(const Completion&)>;

  // `memory` and `backend` must outlive the engine.
  BlkRequestEngine(const GuestMemory& memory, BlockBackend& backend, BlkDeviceConfig config,
                   CompletionFn on_complete);
  // Waits for this engine's requests to finish (their callbacks run).
  ~BlkRequestEngine();
  BlkRequestEngine(const BlkRequestEngine&) = delete;
  BlkRequestEngine& operator=(const BlkRequestEngine&) = delete;

  // Takes the chain `head`. A request that can be answered at once (a
  // validation failure, GET_ID, an unknown type) completes before Submit
  // returns; the others complete from DrainCompletions. An error means the
  // chain cannot be completed at all (header shorter than 16 bytes, no
  // writable status byte, a buffer outside guest RAM): the driver is broken
  // and the transport should set DEVICE_NEEDS_RESET; nothing was completed.
  absl::Status Submit(uint16_t head, const std::vector<Buffer>& readable,
                      const std::vector<Buffer>& writable);

  // Runs the completions the backend has finished (of every engine sharing
  // it). Returns how many ran.
  size_t DrainCompletions();
  // Blocks until none of this engine's requests is in flight, running
  // completions as they arrive (device reset, shutdown).
  void WaitIdle();

  // Heads of the requests accepted and not yet completed, oldest first. A
  // successor process can redo them: every request type is idempotent.
  std::vector<uint16_t> InFlight() const;

  const BlkDeviceConfig& config() const { return config_; }

 private:
  void Complete(uint16_t head, uint64_t id, uint8_t* status_byte, uint8_t status,
                uint32_t used_len);
  void SubmitOp(uint16_t head, uint8_t* status_byte, uint32_t used_len_ok, BlockOp op);

  const GuestMemory& memory_;
  BlockBackend& backend_;
  BlkDeviceConfig config_;
  CompletionFn on_complete_;
  uint64_t next_id_ = 0;
  std::map<uint64_t, uint16_t> in_flight_;  // id -> head
};

}  // namespace hv::virtio_blk

#endif  // HV_DEVPROC_VIRTIO_BLK_BLK_REQUESTS_H_
