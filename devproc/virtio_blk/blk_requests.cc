#include "devproc/virtio_blk/blk_requests.h"

#include <sys/uio.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace hv::virtio_blk {
namespace {

bool IsPowerOfTwo(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

int Log2(uint64_t v) {
  int n = 0;
  while (v > 1) {
    v >>= 1;
    ++n;
  }
  return n;
}

uint32_t Le32(const uint8_t* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}
uint64_t Le64(const uint8_t* p) { return uint64_t{Le32(p)} | uint64_t{Le32(p + 4)} << 32; }

void Put16(std::vector<uint8_t>& b, size_t at, uint16_t v) {
  b[at] = v & 0xff;
  b[at + 1] = v >> 8;
}
void Put32(std::vector<uint8_t>& b, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) b[at + i] = (v >> (8 * i)) & 0xff;
}
void Put64(std::vector<uint8_t>& b, size_t at, uint64_t v) {
  for (int i = 0; i < 8; ++i) b[at + i] = (v >> (8 * i)) & 0xff;
}

uint64_t TotalBytes(const std::vector<Buffer>& bufs) {
  uint64_t n = 0;
  for (const auto& b : bufs) n += b.len;
  return n;
}

// Host iovecs for bytes [offset, offset + len) of the chain part `bufs`.
absl::Status AppendIovecs(const GuestMemory& mem, const std::vector<Buffer>& bufs,
                          uint64_t offset, uint64_t len, std::vector<struct iovec>* out) {
  for (const auto& b : bufs) {
    if (len == 0) break;
    if (offset >= b.len) {
      offset -= b.len;
      continue;
    }
    uint64_t take = std::min<uint64_t>(b.len - offset, len);
    auto p = mem.Translate(b.gpa + offset, take);
    if (!p.ok()) return p.status();
    out->push_back({*p, static_cast<size_t>(take)});
    len -= take;
    offset = 0;
  }
  if (len != 0) return absl::InternalError("virtio-blk: chain shorter than its byte count");
  return absl::OkStatus();
}

absl::Status CopyFromChain(const GuestMemory& mem, const std::vector<Buffer>& bufs,
                           uint64_t offset, void* dst, uint64_t len) {
  std::vector<struct iovec> iov;
  if (auto s = AppendIovecs(mem, bufs, offset, len, &iov); !s.ok()) return s;
  auto* d = static_cast<uint8_t*>(dst);
  for (const auto& v : iov) {
    memcpy(d, v.iov_base, v.iov_len);
    d += v.iov_len;
  }
  return absl::OkStatus();
}

absl::Status ParseBool(const std::string& key, const std::string& value, bool* out) {
  if (value.empty() || value == "true" || value == "on" || value == "yes" || value == "1") {
    *out = true;
  } else if (value == "false" || value == "off" || value == "no" || value == "0") {
    *out = false;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        key, "=", value, ": '", key, "' is a flag; give it no value or true/false"));
  }
  return absl::OkStatus();
}

absl::Status ParseSectorSize(const std::string& value, BlkOptions* o) {
  std::vector<std::string> parts = absl::StrSplit(value, '/');
  std::string what = absl::StrCat("sectorsize=", value, ": ");
  if (parts.size() > 2 || value.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(what, "expected logical[/physical]"));
  }
  uint32_t logical = 0, physical = 0;
  if (!absl::SimpleAtoi(parts[0], &logical)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, "logical size '", parts[0], "' is not a number"));
  }
  if (!IsPowerOfTwo(logical) || logical < 512 || logical > 4096) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, "logical size ", logical, " is not a power of two from 512 to 4096"));
  }
  physical = logical;
  if (parts.size() == 2) {
    if (!absl::SimpleAtoi(parts[1], &physical)) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, "physical size '", parts[1], "' is not a number"));
    }
    if (!IsPowerOfTwo(physical) || physical < logical || physical > 65536) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, "physical size ", physical, " is not a power of two from ",
                       logical, " (the logical size) to 65536"));
    }
  }
  o->logical_sector_size = logical;
  o->physical_sector_size = parts.size() == 2 ? physical : 0;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<BlkOptions> ParseBlkOptions(
    const std::vector<std::pair<std::string, std::string>>& options) {
  BlkOptions o;
  std::map<std::string, std::string> seen;  // canonical key -> as given
  for (const auto& [key, value] : options) {
    std::string canonical = key;
    if (key == "ser") canonical = "serial";
    if (key == "sync") canonical = "direct";
    if (auto it = seen.find(canonical); it != seen.end()) {
      return absl::InvalidArgumentError(
          it->second == key
              ? absl::StrCat("option '", key, "' is given twice")
              : absl::StrCat("options '", it->second, "' and '", key, "' mean the same; give one"));
    }
    seen[canonical] = key;
    absl::Status s;
    if (canonical == "ro") {
      s = ParseBool(key, value, &o.read_only);
    } else if (canonical == "nocache") {
      s = ParseBool(key, value, &o.no_cache);
    } else if (canonical == "direct") {
      s = ParseBool(key, value, &o.sync_writes);
    } else if (canonical == "nodelete") {
      s = ParseBool(key, value, &o.no_delete);
    } else if (canonical == "sectorsize") {
      s = ParseSectorSize(value, &o);
    } else if (canonical == "serial") {
      if (value.size() > kIdBytes) {
        s = absl::InvalidArgumentError(absl::StrCat(key, "=", value, ": the serial is ",
                                                    value.size(), " bytes; at most 20"));
      } else if (!std::all_of(value.begin(), value.end(),
                              [](char c) { return c >= 0x20 && c < 0x7f; })) {
        s = absl::InvalidArgumentError(
            absl::StrCat(key, "=", value, ": the serial must be printable ASCII"));
      } else {
        o.serial = value;
      }
    } else if (canonical == "bootindex") {
      uint32_t index;
      if (!absl::SimpleAtoi(value, &index)) {
        s = absl::InvalidArgumentError(
            absl::StrCat("bootindex=", value, ": expected a non-negative number"));
      } else {
        o.boot_index = index;
      }
    } else {
      s = absl::InvalidArgumentError(absl::StrCat(
          "unknown virtio-blk option '", key,
          "' (known: ro, nocache, direct, sync, nodelete, sectorsize, ser, serial, bootindex)"));
    }
    if (!s.ok()) return s;
  }
  return o;
}

std::string DefaultSerial(std::string_view disk_path) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a
  for (unsigned char c : disk_path) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return absl::StrFormat("HV-%04X-%04X-%04X", (h >> 32) & 0xffff, (h >> 16) & 0xffff,
                         h & 0xffff);
}

BlockBackendOptions BackendOptions(const BlkOptions& options, int workers) {
  BlockBackendOptions b;
  b.read_only = options.read_only;
  b.logical_block_size = options.logical_sector_size;
  b.physical_block_size = options.physical_sector_size;
  b.num_workers = workers;
  return b;
}

absl::StatusOr<BlkDeviceConfig> MakeDeviceConfig(const BlkOptions& options,
                                                 const BlockBackend& backend,
                                                 uint16_t num_queues, uint16_t queue_size) {
  if (num_queues == 0) return absl::InvalidArgumentError("virtio-blk: no request queues");
  if (queue_size < 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("virtio-blk: queue size ", queue_size, " leaves no room for data"));
  }
  BlkDeviceConfig c;
  c.capacity_sectors = backend.size() / kSectorSize;
  c.logical_block_size = backend.logical_block_size();
  c.physical_block_size = backend.physical_block_size();
  c.read_only = backend.read_only() || options.read_only;
  c.discard = !options.no_delete;
  c.num_queues = num_queues;
  c.seg_max = queue_size - 2;
  c.discard_sector_alignment = c.physical_block_size / kSectorSize;
  c.serial = options.serial;
  return c;
}

uint64_t DeviceFeatures(const BlkDeviceConfig& c) {
  uint64_t f = 1ull << kFeatureVersion1 | 1ull << kFeatureRingIndirectDesc |
               1ull << kFeatureRingEventIdx | 1ull << kFeatureSizeMax | 1ull << kFeatureSegMax |
               1ull << kFeatureBlkSize | 1ull << kFeatureTopology | 1ull << kFeatureFlush;
  if (c.read_only) {
    f |= 1ull << kFeatureRo;
  } else {
    f |= 1ull << kFeatureWriteZeroes;
    if (c.discard) f |= 1ull << kFeatureDiscard;
  }
  if (c.num_queues > 1) f |= 1ull << kFeatureMq;
  return f;
}

std::vector<uint8_t> BuildConfig(const BlkDeviceConfig& c) {
  std::vector<uint8_t> b(kConfigSize, 0);
  uint64_t features = DeviceFeatures(c);
  auto has = [features](int bit) { return (features >> bit) & 1; };
  Put64(b, 0, c.capacity_sectors);
  Put32(b, 8, c.size_max);
  Put32(b, 12, c.seg_max);
  // 16: geometry (cylinders, heads, sectors) stays 0: no VIRTIO_BLK_F_GEOMETRY.
  Put32(b, 20, c.logical_block_size);
  uint32_t ratio = c.physical_block_size / c.logical_block_size;
  b[24] = static_cast<uint8_t>(Log2(ratio));  // physical_block_exp
  b[25] = 0;                                  // alignment_offset
  Put16(b, 26, static_cast<uint16_t>(ratio));  // min_io_size, in logical blocks
  Put32(b, 28, 0);                            // opt_io_size: no preference
  b[32] = 0;                                  // writeback (no CONFIG_WCE)
  Put16(b, 34, c.num_queues);
  if (has(kFeatureDiscard)) {
    Put32(b, 36, c.max_discard_sectors);
    Put32(b, 40, c.max_discard_seg);
    Put32(b, 44, c.discard_sector_alignment);
  }
  if (has(kFeatureWriteZeroes)) {
    Put32(b, 48, c.max_write_zeroes_sectors);
    Put32(b, 52, c.max_write_zeroes_seg);
    b[56] = c.discard ? 1 : 0;  // write_zeroes_may_unmap
  }
  return b;
}

BlkRequestEngine::BlkRequestEngine(const GuestMemory& memory, BlockBackend& backend,
                                   BlkDeviceConfig config, CompletionFn on_complete)
    : memory_(memory),
      backend_(backend),
      config_(std::move(config)),
      on_complete_(std::move(on_complete)) {
  // A read-only backend makes the device read-only whatever the config says.
  if (backend_.read_only()) config_.read_only = true;
  uint64_t backend_sectors = backend_.size() / kSectorSize;
  if (config_.capacity_sectors > backend_sectors) config_.capacity_sectors = backend_sectors;
}

BlkRequestEngine::~BlkRequestEngine() { WaitIdle(); }

void BlkRequestEngine::WaitIdle() {
  while (!in_flight_.empty()) {
    backend_.WaitForCompletion();
    backend_.DrainCompletions();
  }
}

size_t BlkRequestEngine::DrainCompletions() { return backend_.DrainCompletions(); }

std::vector<uint16_t> BlkRequestEngine::InFlight() const {
  std::vector<uint16_t> heads;
  heads.reserve(in_flight_.size());
  for (const auto& [id, head] : in_flight_) heads.push_back(head);
  return heads;
}

void BlkRequestEngine::Complete(uint16_t head, uint64_t id, uint8_t* status_byte,
                                uint8_t status, uint32_t used_len) {
  *status_byte = status;
  on_complete_(Completion{head, used_len, status, id});
}

void BlkRequestEngine::SubmitOp(uint16_t head, uint8_t* status_byte, uint32_t used_len_ok,
                                BlockOp op) {
  uint64_t id = next_id_++;
  in_flight_[id] = head;
  backend_.Submit(std::move(op), [this, head, id, status_byte, used_len_ok](absl::Status s) {
    in_flight_.erase(id);
    Complete(head, id, status_byte, s.ok() ? kStatusOk : kStatusIoErr, s.ok() ? used_len_ok : 1);
  });
}

absl::Status BlkRequestEngine::Submit(uint16_t head, const std::vector<Buffer>& readable,
                                      const std::vector<Buffer>& writable) {
  const uint64_t readable_bytes = TotalBytes(readable);
  const uint64_t writable_bytes = TotalBytes(writable);
  if (readable_bytes < kHeaderSize) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "virtio-blk: request %u: the header has %u readable bytes, needs 16", head,
        readable_bytes));
  }
  // The status byte is the chain's last writable byte.
  const Buffer* last = nullptr;
  for (const auto& b : writable) {
    if (b.len != 0) last = &b;
  }
  if (last == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrFormat("virtio-blk: request %u has no writable status byte", head));
  }
  auto status_or = memory_.Translate(last->gpa + last->len - 1, 1);
  if (!status_or.ok()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "virtio-blk: request %u: status byte: %s", head, status_or.status().message()));
  }
  uint8_t* status_byte = *status_or;
  uint8_t header[kHeaderSize];
  if (auto s = CopyFromChain(memory_, readable, 0, header, kHeaderSize); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("virtio-blk: request %u: header: %s", head, s.message()));
  }
  const uint32_t type = Le32(header);
  const uint64_t sector = Le64(header + 8);
  const uint64_t data_out = readable_bytes - kHeaderSize;  // device reads
  const uint64_t data_in = writable_bytes - 1;             // device writes
  auto bad_buffer = [head](const absl::Status& s) {
    return absl::InvalidArgumentError(
        absl::StrFormat("virtio-blk: request %u: data: %s", head, s.message()));
  };
  auto finish = [&](uint8_t status, uint32_t used_len = 1) {
    Complete(head, next_id_++, status_byte, status, used_len);
    return absl::OkStatus();
  };
  // Is [sector, sector + bytes / 512) on the disk?
  auto in_range = [this](uint64_t first, uint64_t bytes) {
    uint64_t n = bytes / kSectorSize;
    return first <= config_.capacity_sectors && n <= config_.capacity_sectors - first;
  };
  const uint64_t lbs = config_.logical_block_size;

  switch (type) {
    case kTypeIn:
    case kTypeOut: {
      const bool write = type == kTypeOut;
      // Data in the wrong direction: an IN with device-readable data or an
      // OUT with device-writable data besides the status byte.
      if (write ? data_in != 0 : data_out != 0) return finish(kStatusIoErr);
      if (write && config_.read_only) return finish(kStatusIoErr);
      const uint64_t len = write ? data_out : data_in;
      if (len % kSectorSize != 0 || len % lbs != 0) return finish(kStatusIoErr);
      // The used length is 32 bits: no transfer of 4 GiB or more.
      if (len >= UINT32_MAX) return finish(kStatusIoErr);
      if (sector > UINT64_MAX / kSectorSize || (sector * kSectorSize) % lbs != 0) {
        return finish(kStatusIoErr);
      }
      if (!in_range(sector, len)) return finish(kStatusIoErr);
      // Linux never sends an empty transfer; treat one as done.
      if (len == 0) return finish(kStatusOk, write ? 1 : static_cast<uint32_t>(writable_bytes));
      BlockOp op;
      op.kind = write ? BlockOp::Kind::kWrite : BlockOp::Kind::kRead;
      op.offset = sector * kSectorSize;
      auto s = write ? AppendIovecs(memory_, readable, kHeaderSize, len, &op.iov)
                     : AppendIovecs(memory_, writable, 0, len, &op.iov);
      if (!s.ok()) return bad_buffer(s);
      SubmitOp(head, status_byte, write ? 1 : static_cast<uint32_t>(writable_bytes),
               std::move(op));
      return absl::OkStatus();
    }
    case kTypeFlush: {
      BlockOp op;
      op.kind = BlockOp::Kind::kFlush;
      SubmitOp(head, status_byte, 1, std::move(op));
      return absl::OkStatus();
    }
    case kTypeGetId: {
      // 20 bytes, NUL-padded; a shorter buffer gets what fits, a longer one
      // NULs after the 20 bytes.
      std::vector<struct iovec> iov;
      if (auto s = AppendIovecs(memory_, writable, 0, data_in, &iov); !s.ok()) {
        return bad_buffer(s);
      }
      char id[kIdBytes] = {};
      memcpy(id, config_.serial.data(), std::min(config_.serial.size(), kIdBytes));
      size_t pos = 0;
      for (const auto& v : iov) {
        auto* d = static_cast<uint8_t*>(v.iov_base);
        for (size_t i = 0; i < v.iov_len; ++i, ++pos) d[i] = pos < kIdBytes ? id[pos] : 0;
      }
      return finish(kStatusOk, static_cast<uint32_t>(writable_bytes));
    }
    case kTypeDiscard:
    case kTypeWriteZeroes: {
      const bool discard = type == kTypeDiscard;
      if (config_.read_only) return finish(kStatusIoErr);
      if (discard && !config_.discard) return finish(kStatusUnsupp);
      if (data_in != 0) return finish(kStatusIoErr);
      const uint32_t max_seg = discard ? config_.max_discard_seg : config_.max_write_zeroes_seg;
      const uint32_t max_sectors =
          discard ? config_.max_discard_sectors : config_.max_write_zeroes_sectors;
      if (data_out == 0 || data_out % kSegmentSize != 0 || data_out / kSegmentSize > max_seg) {
        return finish(kStatusIoErr);
      }
      // Copy the segments out of guest memory before looking at them.
      std::vector<uint8_t> segs(data_out);
      if (auto s = CopyFromChain(memory_, readable, kHeaderSize, segs.data(), data_out);
          !s.ok()) {
        return bad_buffer(s);
      }
      const size_t nseg = data_out / kSegmentSize;
      // Unknown flags, or unmap on a discard: UNSUPP (5.2.6.2), before any
      // other check.
      for (size_t i = 0; i < nseg; ++i) {
        uint32_t flags = Le32(&segs[i * kSegmentSize + 12]);
        if ((flags & ~kSegmentFlagUnmap) != 0 || (discard && (flags & kSegmentFlagUnmap))) {
          return finish(kStatusUnsupp);
        }
      }
      BlockOp op;
      op.kind = discard ? BlockOp::Kind::kDiscard : BlockOp::Kind::kWriteZeroes;
      for (size_t i = 0; i < nseg; ++i) {
        const uint8_t* p = &segs[i * kSegmentSize];
        uint64_t first = Le64(p);
        uint32_t count = Le32(p + 8);
        uint32_t flags = Le32(p + 12);
        if (count > max_sectors || !in_range(first, uint64_t{count} * kSectorSize)) {
          return finish(kStatusIoErr);
        }
        op.ranges.push_back(ByteRange{first * kSectorSize, uint64_t{count} * kSectorSize,
                                      config_.discard && (flags & kSegmentFlagUnmap) != 0});
      }
      SubmitOp(head, status_byte, 1, std::move(op));
      return absl::OkStatus();
    }
    default:
      return finish(kStatusUnsupp);
  }
}

}  // namespace hv::virtio_blk
