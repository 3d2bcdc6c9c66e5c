// virtio-net (virtio 1.2, section 5.1): the device options, the feature bits and
// configuration space the device offers, and the engine that moves frames
// between a queue pair and a backend fd.
//
// A backend is one fd per queue pair that carries whole Ethernet frames, one
// frame per read()/write(), each preceded by the 12-byte virtio_net_hdr
// (5.1.6): a tap opened with IFF_VNET_HDR and TUNSETVNETHDRSZ 12 is exactly
// that, and the user-mode backend (libslirp on a thread) speaks the same
// format over a SOCK_SEQPACKET socketpair. So the engine is the same for both.
//
// Everything the guest puts in a ring or a header is hostile: a chain that
// cannot be a packet at all (a receive buffer too small for the header, a
// transmit chain shorter than the header) is a driver error, for which the
// transport sets DEVICE_NEEDS_RESET; a frame the device will not send (too
// short, too long, offloads the driver did not negotiate, checksum offsets
// outside the frame) is dropped and counted, and its chain given back.
#ifndef HV_DEVPROC_VIRTIO_NET_NET_QUEUES_H_
#define HV_DEVPROC_VIRTIO_NET_NET_QUEUES_H_

#include <array>
#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/guest_memory.h"
#include "devproc/virtio/virtqueue.h"

namespace hv::virtio_net {

// Feature bits (5.1.3).
inline constexpr int kFeatureCsum = 0;        // the driver may send partial checksums
inline constexpr int kFeatureGuestCsum = 1;   // the device may send partial checksums
inline constexpr int kFeatureMac = 5;
inline constexpr int kFeatureGuestTso4 = 7;
inline constexpr int kFeatureGuestTso6 = 8;
inline constexpr int kFeatureGuestEcn = 9;
inline constexpr int kFeatureHostTso4 = 11;
inline constexpr int kFeatureHostTso6 = 12;
inline constexpr int kFeatureHostEcn = 13;
inline constexpr int kFeatureMrgRxbuf = 15;
inline constexpr int kFeatureStatus = 16;
inline constexpr int kFeatureCtrlVq = 17;
inline constexpr int kFeatureMq = 22;

// virtio_net_hdr (5.1.6), as laid out in guest memory and on a backend fd.
inline constexpr size_t kHeaderSize = 12;
inline constexpr uint8_t kHeaderNeedsCsum = 1;
inline constexpr uint8_t kHeaderDataValid = 2;
inline constexpr uint8_t kGsoNone = 0;
inline constexpr uint8_t kGsoTcpV4 = 1;
inline constexpr uint8_t kGsoUdp = 3;
inline constexpr uint8_t kGsoTcpV6 = 4;
inline constexpr uint8_t kGsoEcn = 0x80;

struct NetHeader {
  uint8_t flags = 0;
  uint8_t gso_type = kGsoNone;
  uint16_t hdr_len = 0;
  uint16_t gso_size = 0;
  uint16_t csum_start = 0;
  uint16_t csum_offset = 0;
  uint16_t num_buffers = 0;
};
NetHeader DecodeHeader(const uint8_t bytes[kHeaderSize]);
void EncodeHeader(const NetHeader& h, uint8_t bytes[kHeaderSize]);

// Frame sizes, Ethernet header included, virtio header not: an Ethernet header
// at least, and at most a 64 KiB GSO super-frame with a VLAN tag.
inline constexpr size_t kMinFrame = 14;
inline constexpr size_t kMaxFrame = 65535 + 14 + 4;

using MacAddress = std::array<uint8_t, 6>;

enum class Backend { kTap, kUser };

// A user-mode port forward (`hostfwd=tcp:127.0.0.1:2222-:22`): connections to
// the host address reach the guest address (0: the address DHCP hands out).
struct HostForward {
  bool udp = false;
  uint32_t host_addr = 0;  // IPv4, host byte order; 0: any
  uint16_t host_port = 0;
  uint32_t guest_addr = 0;
  uint16_t guest_port = 0;
};
absl::StatusOr<HostForward> ParseHostForward(absl::string_view text);

// bhyve's `-s N,virtio-net,BACKEND[,mac=xx:xx:xx:xx:xx:xx][,queues=N]`, with
// BACKEND "user" (or bhyve's "slirp") or a tap interface's name, and for user
// mode any number of hostfwd= options.
struct NetOptions {
  Backend backend = Backend::kUser;
  std::string tap_name;
  bool mac_set = false;
  MacAddress mac = {};
  uint16_t queue_pairs = 1;  // queues=N: tap only (IFF_MULTI_QUEUE)
  std::vector<HostForward> forwards;
};
inline constexpr uint16_t kMaxQueuePairs = 8;

// `backend` is the Device's path. Errors name the option.
absl::StatusOr<NetOptions> ParseNetOptions(
    absl::string_view backend, const std::vector<std::pair<std::string, std::string>>& options);
absl::StatusOr<MacAddress> ParseMac(absl::string_view text);
std::string FormatMac(const MacAddress& mac);
// A stable, locally administered unicast address for a NIC without mac=:
// 02:68:76 ("hv") and three bytes of a hash of the VM's name, slot and function.
MacAddress DefaultMac(absl::string_view vm_name, uint32_t slot, uint32_t function);

// What the device offers.
struct NetDeviceConfig {
  MacAddress mac = {};
  uint16_t queue_pairs = 1;
  bool offloads = false;  // checksum and TSO offloads (a tap passes them to the host stack)
};
uint64_t DeviceFeatures(const NetDeviceConfig& config);
// struct virtio_net_config (5.1.4): mac, status (link up), max_virtqueue_pairs.
std::vector<uint8_t> BuildConfig(const NetDeviceConfig& config);
// Queues of the function: rx/tx per pair, and the control queue when there is
// more than one pair (VIRTIO_NET_F_MQ needs VIRTIO_NET_F_CTRL_VQ).
uint16_t NumQueues(const NetDeviceConfig& config);

// Kept for a status command.
struct NetCounters {
  uint64_t rx_packets = 0, rx_bytes = 0, rx_dropped = 0;
  uint64_t tx_packets = 0, tx_bytes = 0, tx_dropped = 0;
  NetCounters& operator+=(const NetCounters& o);
};

// One receive queue and one transmit queue over one backend fd (non-blocking).
// Single-threaded: every call is on the device's event-loop thread.
//
// Back-pressure, not drops: with no receive buffers the pair stops reading the
// fd (wanted_events() loses POLLIN) until the driver adds some; when the fd
// will not take a frame it keeps the transmit chain and waits for POLLOUT.
class QueuePair {
 public:
  // The queues and `memory` must outlive the pair. `driver_features` are the
  // negotiated ones.
  QueuePair(const GuestMemory& memory, virtio::SplitQueue& rx, virtio::SplitQueue& tx,
            int backend_fd, uint64_t driver_features);

  // The driver added receive buffers / transmit chains, or the fd is ready.
  // An error means the driver broke the rules (the caller sets
  // DEVICE_NEEDS_RESET); frames that are merely bad are dropped and counted.
  absl::Status OnRxBuffers() { return ProcessRx(); }
  absl::Status OnTxChains() { return ProcessTx(); }
  absl::Status OnBackendReady(short revents);

  // What to poll the backend fd for now.
  short wanted_events() const;
  // The transmit queue has more chains than one turn handles: call OnTxChains
  // again soon (after other work in the loop).
  bool tx_more() const { return tx_more_; }
  // The backend fd said end-of-file (user mode: its thread is gone).
  bool backend_closed() const { return backend_closed_; }

  const NetCounters& counters() const { return counters_; }

  // Chains handled per turn, so one busy queue cannot starve the loop.
  static constexpr int kBudget = 256;

 private:
  absl::Status ProcessRx();
  absl::Status ProcessTx();
  // Puts the frame in rx_frame_ into receive chains. false: not enough buffers yet.
  absl::StatusOr<bool> DeliverFrame();
  // Sends one chain; false: the backend is full and `chain` must wait.
  absl::StatusOr<bool> SendChain(const virtio::Chain& chain);
  bool HeaderAllowedOnTx(const NetHeader& h, size_t frame_len) const;

  const GuestMemory& memory_;
  virtio::SplitQueue& rx_;
  virtio::SplitQueue& tx_;
  const int fd_;
  const bool mergeable_;
  const uint64_t features_;

  std::vector<uint8_t> rx_frame_;  // header + frame read from the backend
  size_t rx_len_ = 0;              // 0: none pending
  std::vector<virtio::Chain> rx_chains_;  // popped, not yet used
  bool rx_starved_ = false;        // waiting for the driver's buffers
  bool rx_backend_empty_ = false;  // the fd had nothing

  std::vector<virtio::Chain> tx_waiting_;  // at most one: popped, backend full
  std::vector<uint8_t> tx_linear_;         // for chains of very many buffers
  bool tx_blocked_ = false;
  bool tx_more_ = false;
  bool backend_closed_ = false;

  NetCounters counters_;
};

// The control queue (5.1.6.5): VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET is the command a
// driver must send once MQ is negotiated; everything else is answered ERR.
inline constexpr uint8_t kCtrlOk = 0;
inline constexpr uint8_t kCtrlErr = 1;
inline constexpr uint8_t kCtrlClassMq = 4;
inline constexpr uint8_t kCtrlMqPairsSet = 0;
struct ControlResult {
  uint8_t ack = kCtrlErr;
  uint16_t pairs_set = 0;  // VQ_PAIRS_SET accepted with this many pairs; 0: not that
};
// Handles one control chain and writes the ack byte (the last writable byte).
// An error: the chain has no room for the command or the ack (a driver error).
absl::StatusOr<ControlResult> HandleControl(const GuestMemory& memory, const virtio::Chain& chain,
                                            uint16_t max_pairs);

}  // namespace hv::virtio_net

#endif  // HV_DEVPROC_VIRTIO_NET_NET_QUEUES_H_
