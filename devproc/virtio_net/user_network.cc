#include "devproc/virtio_net/user_network.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <slirp/libslirp.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/log.h"

namespace hv::virtio_net {
namespace {

// How long slirp's thread waits for the device to take a frame before it
// starts dropping.
constexpr int kStallMs = 1000;

in_addr Addr(uint32_t host_order) {
  in_addr a;
  a.s_addr = htonl(host_order);
  return a;
}

struct PollSet {
  std::vector<pollfd> fds;
};

int AddPoll(int fd, int events, void* opaque) {
  auto* set = static_cast<PollSet*>(opaque);
  short e = 0;
  if (events & SLIRP_POLL_IN) e |= POLLIN;
  if (events & SLIRP_POLL_OUT) e |= POLLOUT;
  if (events & SLIRP_POLL_PRI) e |= POLLPRI;
  set->fds.push_back({fd, e, 0});
  return static_cast<int>(set->fds.size() - 1);
}

int GetRevents(int idx, void* opaque) {
  auto* set = static_cast<PollSet*>(opaque);
  if (idx < 0 || static_cast<size_t>(idx) >= set->fds.size()) return 0;
  short r = set->fds[idx].revents;
  int e = 0;
  if (r & POLLIN) e |= SLIRP_POLL_IN;
  if (r & POLLOUT) e |= SLIRP_POLL_OUT;
  if (r & POLLPRI) e |= SLIRP_POLL_PRI;
  if (r & POLLERR) e |= SLIRP_POLL_ERR;
  if (r & POLLHUP) e |= SLIRP_POLL_HUP;
  return e;
}

}  // namespace

struct SlirpCallbacks {
  static ssize_t SendPacket(const void* buf, size_t len, void* opaque) {
    return static_cast<UserNetwork*>(opaque)->SendToGuest(buf, len);
  }
  static void GuestError(const char* msg, void*) { HV_WARN("user network: guest error: %s", msg); }
  static int64_t ClockNs(void*) { return MonotonicNs(); }
  static void* TimerNewOpaque(SlirpTimerId id, void* cb_opaque, void* opaque) {
    auto* self = static_cast<UserNetwork*>(opaque);
    auto timer = std::make_unique<UserNetwork::Timer>();
    timer->id = id;
    timer->cb_opaque = cb_opaque;
    self->timers_.push_back(std::move(timer));
    return self->timers_.back().get();
  }
  static void TimerFree(void* timer, void* opaque) {
    auto* self = static_cast<UserNetwork*>(opaque);
    auto& t = self->timers_;
    t.erase(std::remove_if(t.begin(), t.end(), [&](const auto& p) { return p.get() == timer; }),
            t.end());
  }
  static void TimerMod(void* timer, int64_t expire_ms, void*) {
    static_cast<UserNetwork::Timer*>(timer)->expire_ms = expire_ms;
  }
  static void* TimerNew(SlirpTimerCb, void*, void*) {
    return nullptr;  // unused: timer_new_opaque is provided (SlirpConfig version 4)
  }
  static void RegisterPollFd(int, void*) {}    // slirp_pollfds_fill lists them every turn
  static void UnregisterPollFd(int, void*) {}
  static void Notify(void*) {}  // only for guestfwd, which is not used
};

absl::StatusOr<std::unique_ptr<UserNetwork>> UserNetwork::Start(
    const std::vector<HostForward>& forwards) {
  std::unique_ptr<UserNetwork> net(new UserNetwork());
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, pair) != 0) {
    return ErrnoStatus("socketpair");
  }
  net->device_end_.Reset(pair[0]);
  net->slirp_end_.Reset(pair[1]);
  // Room for a few dozen full-size frames each way.
  int bytes = 1 << 20;
  for (int fd : pair) {
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof(bytes));
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes));
  }
  net->stop_.Reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!net->stop_.valid()) return ErrnoStatus("eventfd");

  static const SlirpCb callbacks = {
      .send_packet = &SlirpCallbacks::SendPacket,
      .guest_error = &SlirpCallbacks::GuestError,
      .clock_get_ns = &SlirpCallbacks::ClockNs,
      .timer_new = &SlirpCallbacks::TimerNew,
      .timer_free = &SlirpCallbacks::TimerFree,
      .timer_mod = &SlirpCallbacks::TimerMod,
      .register_poll_fd = &SlirpCallbacks::RegisterPollFd,
      .unregister_poll_fd = &SlirpCallbacks::UnregisterPollFd,
      .notify = &SlirpCallbacks::Notify,
      .init_completed = nullptr,
      .timer_new_opaque = &SlirpCallbacks::TimerNewOpaque,
  };
  SlirpConfig cfg = {};
  cfg.version = 4;
  cfg.restricted = 0;
  cfg.in_enabled = true;
  cfg.vnetwork = Addr(0x0a000200);      // 10.0.2.0
  cfg.vnetmask = Addr(0xffffff00);      // /24
  cfg.vhost = Addr(0x0a000202);         // 10.0.2.2: the host
  cfg.vdhcp_start = Addr(0x0a00020f);   // 10.0.2.15: the guest
  cfg.vnameserver = Addr(0x0a000203);   // 10.0.2.3
  cfg.in6_enabled = false;
  cfg.vhostname = "hv";
  cfg.if_mtu = 1500;
  cfg.if_mru = 1500;
  cfg.disable_host_loopback = false;  // 10.0.2.2 reaches the host's 127.0.0.1
  cfg.enable_emu = false;
  net->slirp_ = slirp_new(&cfg, &callbacks, net.get());
  if (net->slirp_ == nullptr) return absl::InternalError("slirp_new failed");
  for (const HostForward& f : forwards) {
    uint32_t guest = f.guest_addr != 0 ? f.guest_addr : 0x0a00020f;
    if (slirp_add_hostfwd(net->slirp_, f.udp, Addr(f.host_addr), f.host_port, Addr(guest),
                          f.guest_port) != 0) {
      return absl::UnavailableError(absl::StrCat(
          "hostfwd ", f.udp ? "udp" : "tcp", " port ", f.host_port, ": cannot listen: ",
          strerror(errno)));
    }
  }
  net->thread_ = std::thread([n = net.get()] { n->Loop(); });
  return net;
}

UserNetwork::~UserNetwork() {
  if (thread_.joinable()) {
    uint64_t one = 1;
    ssize_t ignored = write(stop_.get(), &one, sizeof(one));
    (void)ignored;
    thread_.join();
  }
  if (slirp_ != nullptr) slirp_cleanup(slirp_);
}

ssize_t UserNetwork::SendToGuest(const void* frame, size_t len) {
  uint8_t header[kHeaderSize] = {};
  EncodeHeader(NetHeader{.num_buffers = 1}, header);
  iovec iov[2] = {{header, kHeaderSize}, {const_cast<void*>(frame), len}};
  msghdr msg = {};
  msg.msg_iov = iov;
  msg.msg_iovlen = 2;
  for (;;) {
    ssize_t n = sendmsg(slirp_end_.get(), &msg, MSG_NOSIGNAL);
    if (n >= 0) {
      stalled_ = false;
      return len;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != ENOBUFS) return -1;
    if (stalled_) break;
    // The device is not taking frames: wait for it (back-pressure), but not forever.
    pollfd fds[2] = {{slirp_end_.get(), POLLOUT, 0}, {stop_.get(), POLLIN, 0}};
    int r = poll(fds, 2, kStallMs);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0 || (fds[1].revents & POLLIN)) {
      stalled_ = true;
      break;
    }
  }
  dropped_to_guest_.fetch_add(1);
  return len;  // dropped: TCP retransmits, as slirp expects
}

void UserNetwork::Loop() {
  std::vector<uint8_t> frame(kHeaderSize + kMaxFrame + 1);
  PollSet set;
  for (;;) {
    set.fds.clear();
    set.fds.push_back({stop_.get(), POLLIN, 0});
    set.fds.push_back({slirp_end_.get(), POLLIN, 0});
    uint32_t timeout_ms = 1000;
    slirp_pollfds_fill(slirp_, &timeout_ms, &AddPoll, &set);
    int64_t now_ms = MonotonicNs() / 1000000;
    for (const auto& t : timers_) {
      if (t->expire_ms < 0) continue;
      int64_t wait = std::max<int64_t>(0, t->expire_ms - now_ms);
      timeout_ms = std::min<int64_t>(timeout_ms, wait);
    }
    int r = poll(set.fds.data(), set.fds.size(), static_cast<int>(timeout_ms));
    if (set.fds[0].revents & POLLIN) return;
    slirp_pollfds_poll(slirp_, r < 0, &GetRevents, &set);
    now_ms = MonotonicNs() / 1000000;
    // Timers may be freed or re-armed from inside slirp_handle_timer: collect first.
    std::vector<std::pair<int, void*>> due;
    for (const auto& t : timers_) {
      if (t->expire_ms >= 0 && t->expire_ms <= now_ms) {
        t->expire_ms = -1;
        due.push_back({t->id, t->cb_opaque});
      }
    }
    for (auto [id, opaque] : due) slirp_handle_timer(slirp_, static_cast<SlirpTimerId>(id), opaque);
    // Frames from the guest (headers without offloads: the device offers none
    // in user mode and drops frames that ask for them).
    if (set.fds[1].revents & (POLLIN | POLLHUP)) {
      for (int budget = 256; budget > 0; --budget) {
        ssize_t n = recv(slirp_end_.get(), frame.data(), frame.size(), MSG_DONTWAIT);
        if (n == 0) return;  // the device end is gone
        if (n < 0) break;
        if (static_cast<size_t>(n) <= kHeaderSize + kMinFrame - 1) continue;
        slirp_input(slirp_, frame.data() + kHeaderSize, static_cast<int>(n - kHeaderSize));
      }
    }
  }
}

}  // namespace hv::virtio_net
