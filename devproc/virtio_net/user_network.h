// User-mode networking for virtio-net: libslirp on a thread of the device
// process. The guest sits behind NAT on 10.0.2.0/24 (the host is 10.0.2.2 and
// its loopback, DNS at 10.0.2.3, DHCP hands out 10.0.2.15 first), with port
// forwards from the host. No privileges are needed.
//
// The device thread and slirp's thread meet at a SOCK_SEQPACKET socketpair
// carrying one frame per message behind a 12-byte virtio_net_hdr, the format a
// tap with IFF_VNET_HDR uses, so the device's queue code is the same for both
// backends. slirp's thread is the only one that touches slirp.
//
// Back-pressure: when the device does not take frames (the guest has no
// receive buffers), slirp's thread waits for the socket rather than dropping,
// which stops it reading host sockets, so TCP slows the host side down. If the
// device takes nothing for a second (a guest that stopped its driver), frames
// are dropped and counted until it takes one again.
#ifndef HV_DEVPROC_VIRTIO_NET_USER_NETWORK_H_
#define HV_DEVPROC_VIRTIO_NET_USER_NETWORK_H_

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "common/fd.h"
#include "devproc/virtio_net/net_queues.h"

struct Slirp;

namespace hv::virtio_net {

class UserNetwork {
 public:
  // Creates the stack and its port forwards (errors: a port in use, ...), then
  // starts its thread.
  static absl::StatusOr<std::unique_ptr<UserNetwork>> Start(const std::vector<HostForward>& forwards);
  ~UserNetwork();  // stops and joins the thread
  UserNetwork(const UserNetwork&) = delete;
  UserNetwork& operator=(const UserNetwork&) = delete;

  // The device's end of the socketpair (non-blocking).
  int device_fd() const { return device_end_.get(); }
  // Frames slirp dropped because the device took nothing for too long.
  uint64_t dropped_to_guest() const { return dropped_to_guest_.load(); }

 private:
  UserNetwork() = default;
  void Loop();
  // slirp's callbacks (static trampolines in the .cc).
  friend struct SlirpCallbacks;
  ssize_t SendToGuest(const void* frame, size_t len);

  struct Timer {
    int id;
    void* cb_opaque;
    int64_t expire_ms = -1;  // -1: not armed
  };

  Slirp* slirp_ = nullptr;
  Fd device_end_, slirp_end_, stop_;
  std::vector<std::unique_ptr<Timer>> timers_;
  bool stalled_ = false;
  std::atomic<uint64_t> dropped_to_guest_{0};
  std::thread thread_;
};

}  // namespace hv::virtio_net

#endif  // HV_DEVPROC_VIRTIO_NET_USER_NETWORK_H_
