#include "devproc/virtio_net/net_queues.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace hv::virtio_net {
namespace {

constexpr uint64_t Bit(int n) { return 1ull << n; }
constexpr uint64_t kVersion1 = 1ull << 32;
constexpr uint64_t kRingIndirect = 1ull << 28;
constexpr uint64_t kRingEventIdx = 1ull << 29;
constexpr uint16_t kStatusLinkUp = 1;

uint16_t Le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
void PutLe16(uint8_t* p, uint16_t v) {
  p[0] = v & 0xff;
  p[1] = v >> 8;
}

bool ParseFlag(const std::string& value, bool* out) {
  if (value.empty() || value == "true" || value == "on" || value == "yes" || value == "1") {
    *out = true;
    return true;
  }
  if (value == "false" || value == "off" || value == "no" || value == "0") {
    *out = false;
    return true;
  }
  return false;
}

// "127.0.0.1" or "" (0); host byte order.
bool ParseIpv4(absl::string_view text, uint32_t* out) {
  if (text.empty()) {
    *out = 0;
    return true;
  }
  in_addr a;
  if (inet_pton(AF_INET, std::string(text).c_str(), &a) != 1) return false;
  *out = ntohl(a.s_addr);
  return true;
}

bool ParsePort(absl::string_view text, uint16_t* out) {
  uint32_t v;
  if (!absl::SimpleAtoi(text, &v) || v == 0 || v > 65535) return false;
  *out = v;
  return true;
}

}  // namespace

NetHeader DecodeHeader(const uint8_t b[kHeaderSize]) {
  NetHeader h;
  h.flags = b[0];
  h.gso_type = b[1];
  h.hdr_len = Le16(b + 2);
  h.gso_size = Le16(b + 4);
  h.csum_start = Le16(b + 6);
  h.csum_offset = Le16(b + 8);
  h.num_buffers = Le16(b + 10);
  return h;
}

void EncodeHeader(const NetHeader& h, uint8_t b[kHeaderSize]) {
  b[0] = h.flags;
  b[1] = h.gso_type;
  PutLe16(b + 2, h.hdr_len);
  PutLe16(b + 4, h.gso_size);
  PutLe16(b + 6, h.csum_start);
  PutLe16(b + 8, h.csum_offset);
  PutLe16(b + 10, h.num_buffers);
}

absl::StatusOr<HostForward> ParseHostForward(absl::string_view text) {
  // [tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport
  auto bad = [&](const char* why) {
    return absl::InvalidArgumentError(
        absl::StrCat("hostfwd=", text, ": ", why,
                     " (want tcp|udp:[hostaddr]:hostport-[guestaddr]:guestport)"));
  };
  HostForward f;
  absl::string_view rest = text;
  size_t colon = rest.find(':');
  if (colon == absl::string_view::npos) return bad("no protocol");
  absl::string_view proto = rest.substr(0, colon);
  if (proto == "udp") {
    f.udp = true;
  } else if (proto != "tcp" && !proto.empty()) {
    return bad("the protocol is tcp or udp");
  }
  rest = rest.substr(colon + 1);
  size_t dash = rest.find('-');
  if (dash == absl::string_view::npos) return bad("no '-' between host and guest");
  absl::string_view host = rest.substr(0, dash), guest = rest.substr(dash + 1);
  size_t hc = host.rfind(':'), gc = guest.rfind(':');
  if (hc == absl::string_view::npos || gc == absl::string_view::npos) return bad("missing ':'");
  if (!ParseIpv4(host.substr(0, hc), &f.host_addr)) return bad("bad host address");
  if (!ParsePort(host.substr(hc + 1), &f.host_port)) return bad("bad host port");
  if (!ParseIpv4(guest.substr(0, gc), &f.guest_addr)) return bad("bad guest address");
  if (!ParsePort(guest.substr(gc + 1), &f.guest_port)) return bad("bad guest port");
  return f;
}

absl::StatusOr<MacAddress> ParseMac(absl::string_view text) {
  std::vector<std::string> parts = absl::StrSplit(text, ':');
  MacAddress mac;
  bool ok = parts.size() == 6;
  for (size_t i = 0; ok && i < 6; ++i) {
    uint32_t v;
    ok = parts[i].size() >= 1 && parts[i].size() <= 2 && absl::SimpleHexAtoi(parts[i], &v);
    if (ok) mac[i] = v;
  }
  if (!ok) return absl::InvalidArgumentError(absl::StrCat("mac=", text, ": want xx:xx:xx:xx:xx:xx"));
  if (mac[0] & 1) {
    return absl::InvalidArgumentError(absl::StrCat("mac=", text, ": a multicast address"));
  }
  if (mac == MacAddress{}) return absl::InvalidArgumentError("mac=00:00:00:00:00:00 is not an address");
  return mac;
}

std::string FormatMac(const MacAddress& m) {
  return absl::StrFormat("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
}

MacAddress DefaultMac(absl::string_view vm_name, uint32_t slot, uint32_t function) {
  // FNV-1a: stable across builds and hosts, unlike std::hash.
  uint64_t h = 0xcbf29ce484222325ull;
  std::string key = absl::StrCat(vm_name, "/", slot, ".", function);
  for (unsigned char c : key) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return {0x02, 0x68, 0x76, static_cast<uint8_t>(h >> 16), static_cast<uint8_t>(h >> 8),
          static_cast<uint8_t>(h)};
}

absl::StatusOr<NetOptions> ParseNetOptions(
    absl::string_view backend, const std::vector<std::pair<std::string, std::string>>& options) {
  NetOptions o;
  if (backend.empty() || backend == "user" || backend == "slirp") {
    o.backend = Backend::kUser;
  } else {
    o.backend = Backend::kTap;
    // IFNAMSIZ is 16 with the NUL; no '/' or spaces (the kernel's dev_valid_name).
    if (backend.size() > 15 || backend == "." || backend == ".." ||
        backend.find_first_of("/: \t\n") != absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", backend, "' is neither \"user\" nor a tap interface name"));
    }
    o.tap_name = std::string(backend);
  }
  for (const auto& [key, value] : options) {
    if (key == "mac") {
      auto mac = ParseMac(value);
      if (!mac.ok()) return mac.status();
      o.mac = *mac;
      o.mac_set = true;
    } else if (key == "queues" || key == "num_queues") {
      uint32_t n;
      if (!absl::SimpleAtoi(value, &n) || n < 1 || n > kMaxQueuePairs) {
        return absl::InvalidArgumentError(
            absl::StrCat(key, "=", value, ": want 1 to ", kMaxQueuePairs, " queue pairs"));
      }
      o.queue_pairs = n;
    } else if (key == "hostfwd") {
      auto f = ParseHostForward(value);
      if (!f.ok()) return f.status();
      o.forwards.push_back(*f);
    } else if (key == "open") {
      bool ignored;  // bhyve's slirp "open": user mode is open here anyway
      if (!ParseFlag(value, &ignored)) return absl::InvalidArgumentError("open takes no value");
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown virtio-net option '", key, "'"));
    }
  }
  if (o.backend == Backend::kUser && o.queue_pairs > 1) {
    return absl::InvalidArgumentError("queues > 1 needs a tap backend (user mode has one queue pair)");
  }
  if (o.backend == Backend::kTap && !o.forwards.empty()) {
    return absl::InvalidArgumentError("hostfwd is for the user backend only");
  }
  return o;
}

uint64_t DeviceFeatures(const NetDeviceConfig& c) {
  uint64_t f = kVersion1 | kRingIndirect | kRingEventIdx | Bit(kFeatureMac) |
               Bit(kFeatureStatus) | Bit(kFeatureMrgRxbuf);
  if (c.offloads) {
    f |= Bit(kFeatureCsum) | Bit(kFeatureGuestCsum) | Bit(kFeatureHostTso4) |
         Bit(kFeatureHostTso6) | Bit(kFeatureHostEcn) | Bit(kFeatureGuestTso4) |
         Bit(kFeatureGuestTso6) | Bit(kFeatureGuestEcn);
  }
  if (c.queue_pairs > 1) f |= Bit(kFeatureCtrlVq) | Bit(kFeatureMq);
  return f;
}

std::vector<uint8_t> BuildConfig(const NetDeviceConfig& c) {
  std::vector<uint8_t> cfg(10, 0);
  std::copy(c.mac.begin(), c.mac.end(), cfg.begin());
  PutLe16(&cfg[6], kStatusLinkUp);
  PutLe16(&cfg[8], c.queue_pairs);
  return cfg;
}

uint16_t NumQueues(const NetDeviceConfig& c) {
  return c.queue_pairs > 1 ? 2 * c.queue_pairs + 1 : 2;
}

NetCounters& NetCounters::operator+=(const NetCounters& o) {
  rx_packets += o.rx_packets;
  rx_bytes += o.rx_bytes;
  rx_dropped += o.rx_dropped;
  tx_packets += o.tx_packets;
  tx_bytes += o.tx_bytes;
  tx_dropped += o.tx_dropped;
  return *this;
}

QueuePair::QueuePair(const GuestMemory& memory, virtio::SplitQueue& rx, virtio::SplitQueue& tx,
                     int backend_fd, uint64_t driver_features)
    : memory_(memory),
      rx_(rx),
      tx_(tx),
      fd_(backend_fd),
      mergeable_(driver_features & Bit(kFeatureMrgRxbuf)),
      features_(driver_features),
      rx_frame_(kHeaderSize + kMaxFrame + 1) {}

short QueuePair::wanted_events() const {
  if (backend_closed_) return 0;
  short events = 0;
  if (!rx_starved_) events |= POLLIN;
  if (tx_blocked_) events |= POLLOUT;
  return events;
}

absl::Status QueuePair::OnBackendReady(short revents) {
  if (revents & (POLLOUT | POLLERR)) {
    if (auto s = ProcessTx(); !s.ok()) return s;
  }
  if (revents & (POLLIN | POLLHUP | POLLERR)) return ProcessRx();
  return absl::OkStatus();
}

// --- receive -------------------------------------------------------------------

absl::Status QueuePair::ProcessRx() {
  rx_starved_ = false;
  for (int budget = kBudget; budget > 0; --budget) {
    if (rx_len_ == 0) {
      ssize_t n = read(fd_, rx_frame_.data(), rx_frame_.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        // EAGAIN: empty. Other errors (a tap whose interface went down says EIO
        // on some kernels) leave the frame where it is; poll tells us more.
        break;
      }
      if (n == 0) {
        backend_closed_ = true;
        break;
      }
      if (static_cast<size_t>(n) < kHeaderSize + kMinFrame ||
          static_cast<size_t>(n) > kHeaderSize + kMaxFrame) {
        ++counters_.rx_dropped;  // a runt, or cut short by our buffer
        continue;
      }
      rx_len_ = n;
    }
    auto delivered = DeliverFrame();
    if (!delivered.ok()) return delivered.status();
    if (!*delivered) {
      rx_starved_ = true;  // back-pressure: stop reading until the driver adds buffers
      break;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> QueuePair::DeliverFrame() {
  const size_t frame = rx_len_ - kHeaderSize;
  // A frame with offloads the driver did not take is the backend's mistake:
  // drop it rather than hand the guest something it cannot parse.
  NetHeader h = DecodeHeader(rx_frame_.data());
  uint8_t gso = h.gso_type & ~kGsoEcn;
  bool gso_ok = gso == kGsoNone ||
                (gso == kGsoTcpV4 && (features_ & Bit(kFeatureGuestTso4))) ||
                (gso == kGsoTcpV6 && (features_ & Bit(kFeatureGuestTso6)));
  if ((h.gso_type & kGsoEcn) && !(features_ & Bit(kFeatureGuestEcn))) gso_ok = false;
  bool csum_ok = !(h.flags & (kHeaderNeedsCsum | kHeaderDataValid)) ||
                 (features_ & Bit(kFeatureGuestCsum));
  if (!gso_ok || !csum_ok) {
    ++counters_.rx_dropped;
    rx_len_ = 0;
    return true;
  }

  // Gather chains until the frame fits (one chain without MRG_RXBUF).
  uint64_t room = 0;
  for (const auto& c : rx_chains_) room += c.writable_bytes;
  while (room < rx_len_ && (mergeable_ || rx_chains_.empty())) {
    auto popped = rx_.Pop();
    if (!popped.ok()) return popped.status();
    if (!popped->has_value()) {
      // Out of buffers: ask for a kick, then look once more (a buffer added
      // just before the enable came without one).
      rx_.SetNotificationsEnabled(true);
      popped = rx_.Pop();
      if (!popped.ok()) return popped.status();
      if (!popped->has_value()) {
        if (rx_chains_.size() >= rx_.size()) break;  // the whole ring cannot hold it
        return false;
      }
    }
    virtio::Chain& c = **popped;
    if (c.writable_bytes < kHeaderSize) {
      return absl::InvalidArgumentError(
          absl::StrCat("receive chain ", c.head, " has ", c.writable_bytes,
                       " writable bytes, less than the ", kHeaderSize, "-byte header"));
    }
    room += c.writable_bytes;
    rx_chains_.push_back(std::move(c));
  }
  if (room < rx_len_) {
    // Without MRG_RXBUF the driver's buffer is too small for this frame (or,
    // merged, its whole ring is): drop the frame, keep the buffers.
    ++counters_.rx_dropped;
    rx_len_ = 0;
    return true;
  }

  // How many chains the frame needs, and the header that says so.
  size_t used_chains = 0;
  for (uint64_t need = rx_len_; need > 0; ++used_chains) {
    need -= std::min<uint64_t>(need, rx_chains_[used_chains].writable_bytes);
  }
  h.num_buffers = used_chains;  // 1 without MRG_RXBUF (5.1.6.4)
  EncodeHeader(h, rx_frame_.data());

  size_t offset = 0;
  for (size_t i = 0; i < used_chains; ++i) {
    const virtio::Chain& c = rx_chains_[i];
    size_t n = std::min<uint64_t>(rx_len_ - offset, c.writable_bytes);
    if (auto s = virtio::WriteChain(memory_, c.writable, 0, rx_frame_.data() + offset, n); !s.ok()) {
      return s;
    }
    if (auto s = rx_.Push(c.head, n); !s.ok()) return s;
    offset += n;
  }
  rx_chains_.erase(rx_chains_.begin(), rx_chains_.begin() + used_chains);
  ++counters_.rx_packets;
  counters_.rx_bytes += frame;
  rx_len_ = 0;
  return true;
}

// --- transmit ------------------------------------------------------------------

bool QueuePair::HeaderAllowedOnTx(const NetHeader& h, size_t frame_len) const {
  if (h.flags & kHeaderNeedsCsum) {
    if (!(features_ & Bit(kFeatureCsum))) return false;
    if (size_t{h.csum_start} + h.csum_offset + 2 > frame_len) return false;
  }
  uint8_t gso = h.gso_type & ~kGsoEcn;
  if (gso != kGsoNone) {
    if (gso == kGsoTcpV4 && !(features_ & Bit(kFeatureHostTso4))) return false;
    if (gso == kGsoTcpV6 && !(features_ & Bit(kFeatureHostTso6))) return false;
    if (gso != kGsoTcpV4 && gso != kGsoTcpV6) return false;  // no UFO offered
    if (h.gso_size == 0 || !(h.flags & kHeaderNeedsCsum)) return false;
  } else if (h.gso_type & kGsoEcn) {
    return false;
  }
  if ((h.gso_type & kGsoEcn) && !(features_ & Bit(kFeatureHostEcn))) return false;
  // Without GSO a frame is at most one MTU-sized packet; the backend's MTU
  // decides the rest, but nothing over 64 KiB goes out.
  return frame_len >= kMinFrame && frame_len <= kMaxFrame;
}

absl::StatusOr<bool> QueuePair::SendChain(const virtio::Chain& c) {
  if (c.readable_bytes < kHeaderSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("transmit chain ", c.head, " has ", c.readable_bytes,
                     " readable bytes, less than the ", kHeaderSize, "-byte header"));
  }
  const size_t frame_len = c.readable_bytes - kHeaderSize;
  uint8_t header[kHeaderSize];
  if (auto s = virtio::ReadChain(memory_, c.readable, 0, header, kHeaderSize); !s.ok()) return s;
  NetHeader h = DecodeHeader(header);
  // Only NEEDS_CSUM means something on transmit (DATA_VALID is the device's to
  // set, 5.1.6.2.1): pass nothing else on, so the guest cannot vouch for a
  // checksum to the host's stack.
  h.flags &= kHeaderNeedsCsum;
  if (!HeaderAllowedOnTx(h, frame_len)) {
    ++counters_.tx_dropped;
    return true;
  }
  // Our own copy of the header (the guest can rewrite its copy at any time),
  // then the frame straight from guest memory.
  h.num_buffers = 0;
  EncodeHeader(h, header);
  std::vector<iovec> iov;
  iov.push_back({header, kHeaderSize});
  if (c.readable.size() < 64) {
    uint64_t skip = kHeaderSize;
    for (const auto& b : c.readable) {
      if (skip >= b.len) {
        skip -= b.len;
        continue;
      }
      auto p = memory_.Translate(b.gpa + skip, b.len - skip);
      if (!p.ok()) return p.status();
      iov.push_back({*p, static_cast<size_t>(b.len - skip)});
      skip = 0;
    }
  } else {
    tx_linear_.resize(frame_len);
    if (auto s = virtio::ReadChain(memory_, c.readable, kHeaderSize, tx_linear_.data(), frame_len);
        !s.ok()) {
      return s;
    }
    iov.push_back({tx_linear_.data(), frame_len});
  }
  ssize_t n;
  do {
    n = writev(fd_, iov.data(), iov.size());
  } while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == ENOBUFS)) return false;
  if (n < 0) {
    ++counters_.tx_dropped;  // the host refused it (interface down, header it rejects)
    return true;
  }
  ++counters_.tx_packets;
  counters_.tx_bytes += frame_len;
  return true;
}

absl::Status QueuePair::ProcessTx() {
  tx_blocked_ = false;
  tx_more_ = false;
  tx_.SetNotificationsEnabled(false);
  for (int budget = kBudget; budget > 0; --budget) {
    virtio::Chain chain;
    if (!tx_waiting_.empty()) {
      chain = std::move(tx_waiting_.back());
      tx_waiting_.clear();
    } else {
      auto popped = tx_.Pop();
      if (!popped.ok()) return popped.status();
      if (!popped->has_value()) {
        tx_.SetNotificationsEnabled(true);
        popped = tx_.Pop();
        if (!popped.ok()) return popped.status();
        if (!popped->has_value()) return absl::OkStatus();
        tx_.SetNotificationsEnabled(false);
      }
      chain = std::move(**popped);
    }
    auto sent = SendChain(chain);
    if (!sent.ok()) return sent.status();
    if (!*sent) {
      tx_waiting_.push_back(std::move(chain));
      tx_blocked_ = true;  // back-pressure: resume on POLLOUT
      return absl::OkStatus();
    }
    if (auto s = tx_.Push(chain.head, 0); !s.ok()) return s;
  }
  tx_more_ = true;
  return absl::OkStatus();
}

// --- control -------------------------------------------------------------------

absl::StatusOr<ControlResult> HandleControl(const GuestMemory& memory, const virtio::Chain& c,
                                            uint16_t max_pairs) {
  if (c.readable_bytes < 2 || c.writable_bytes < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("control chain ", c.head, " has no room for the command or the ack"));
  }
  uint8_t command[2];
  if (auto s = virtio::ReadChain(memory, c.readable, 0, command, 2); !s.ok()) return s;
  ControlResult r;
  if (command[0] == kCtrlClassMq && command[1] == kCtrlMqPairsSet && c.readable_bytes >= 4) {
    uint8_t data[2];
    if (auto s = virtio::ReadChain(memory, c.readable, 2, data, 2); !s.ok()) return s;
    uint16_t pairs = Le16(data);
    if (pairs >= 1 && pairs <= max_pairs) {
      r.ack = kCtrlOk;
      r.pairs_set = pairs;
    }
  }
  if (auto s = virtio::WriteChain(memory, c.writable, c.writable_bytes - 1, &r.ack, 1); !s.ok()) {
    return s;
  }
  return r;
}

}  // namespace hv::virtio_net
