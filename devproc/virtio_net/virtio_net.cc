// The virtio-net device process (bhyve's -s N,virtio-net,BACKEND[,options]).
// Backends: a tap the broker opened (fds "tap0".."tapN-1", one per queue pair;
// this process never needs CAP_NET_ADMIN), or user-mode networking (libslirp on
// a thread here). Guest kicks arrive on ioeventfds, frames from the backend on
// its fd, and interrupts leave on MSI-X irqfds: the core is never involved.
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/fd.h"
#include "common/log.h"
#include "devproc/virtio/pci_transport.h"
#include "devproc/virtio_net/seccomp_policy.h"
#include "devproc/virtio_net/net_queues.h"
#include "devproc/virtio_net/user_network.h"

namespace hv::virtio_net {
namespace {

constexpr uint16_t kQueueSize = 256;

class VirtioNet : public virtio::VirtioDevice {
 public:
  ~VirtioNet() override {
    CollectCounters();
    HV_INFO("%s: rx %llu packets %llu bytes %llu dropped; tx %llu packets %llu bytes %llu dropped",
            FormatMac(config_.mac).c_str(), ull(totals_.rx_packets), ull(totals_.rx_bytes),
            ull(totals_.rx_dropped + (user_ ? user_->dropped_to_guest() : 0)),
            ull(totals_.tx_packets), ull(totals_.tx_bytes), ull(totals_.tx_dropped));
  }

  absl::Status Configure(devproc::DeviceContext& ctx,
                         msg::ConfigureDevice::Reader config) override {
    ctx_ = &ctx;
    auto device = config.getDevice();
    std::vector<std::pair<std::string, std::string>> options;
    for (auto o : device.getOptions()) options.push_back({o.getKey(), o.getValue()});
    auto parsed = ParseNetOptions(std::string(device.getPath()), options);
    if (!parsed.ok()) return parsed.status();
    options_ = *parsed;
    config_.mac = options_.mac_set
                      ? options_.mac
                      : DefaultMac(std::string(config.getVmName()), device.getSlot(),
                                   device.getFunction());
    config_.queue_pairs = options_.queue_pairs;
    if (options_.backend == Backend::kTap) {
      config_.offloads = true;
      for (uint16_t i = 0; i < options_.queue_pairs; ++i) {
        auto fd = ctx.NamedFd(absl::StrCat("tap", i));
        if (!fd.ok()) return fd.status();
        int size = kHeaderSize;
        if (ioctl(*fd, TUNSETVNETHDRSZ, &size) != 0) return ErrnoStatus("TUNSETVNETHDRSZ");
        if (ioctl(*fd, TUNSETOFFLOAD, 0) != 0) return ErrnoStatus("TUNSETOFFLOAD");
        fcntl(*fd, F_SETFL, fcntl(*fd, F_GETFL) | O_NONBLOCK);
        backend_fds_.push_back(*fd);
      }
    } else {
      config_.offloads = false;  // slirp checks every checksum and does no GSO
      // libslirp forwards the guest's DNS queries (to 10.0.2.3) to the first
      // nameserver in /etc/resolv.conf, which it reads when a query comes.
      if (auto s = ctx.CarryIntoSandbox("/etc/resolv.conf"); !s.ok()) return s;
      auto user = UserNetwork::Start(options_.forwards);
      if (!user.ok()) return user.status();
      user_ = std::move(*user);
      backend_fds_.push_back(user_->device_fd());
    }
    config_bytes_ = BuildConfig(config_);
    for (size_t i = 0; i < backend_fds_.size(); ++i) {
      ctx.WatchFd(backend_fds_[i], 0, [this, i](short revents) {
        if (i < pairs_.size() && pairs_[i]) Run(i, pairs_[i]->OnBackendReady(revents));
      });
    }
    // More transmit work than one turn: come back after the rest of the loop.
    resume_.Reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!resume_.valid()) return ErrnoStatus("eventfd");
    ctx.WatchFd(resume_.get(), POLLIN, [this](short) {
      uint64_t count;
      ssize_t ignored = read(resume_.get(), &count, sizeof(count));
      (void)ignored;
      for (size_t i = 0; i < pairs_.size(); ++i) {
        if (pairs_[i] && pairs_[i]->tx_more()) Run(i, pairs_[i]->OnTxChains());
      }
    });
    HV_INFO("%s, mac %s, %u queue pair(s)",
            options_.backend == Backend::kTap ? ("tap " + options_.tap_name).c_str() : "user mode",
            FormatMac(config_.mac).c_str(), options_.queue_pairs);
    return absl::OkStatus();
  }

  uint16_t device_id() const override { return 1; }
  uint32_t pci_class() const override { return 0x020000; }  // network, Ethernet
  uint64_t features() const override { return DeviceFeatures(config_); }
  uint16_t num_queues() const override { return NumQueues(config_); }
  uint16_t max_queue_size() const override { return kQueueSize; }
  std::vector<uint8_t> config() const override { return config_bytes_; }

  void Activate(virtio::Transport& transport) override {
    transport_ = &transport;
    features_ = transport.driver_features();
    broken_ = false;
    if (options_.backend == Backend::kTap) {
      // What the tap may hand us is what the driver takes on receive.
      unsigned offload = 0;
      auto has = [&](int bit) { return (features_ >> bit) & 1; };
      if (has(kFeatureGuestCsum)) {
        offload |= TUN_F_CSUM;
        if (has(kFeatureGuestTso4)) offload |= TUN_F_TSO4;
        if (has(kFeatureGuestTso6)) offload |= TUN_F_TSO6;
        if (has(kFeatureGuestEcn) && (offload & (TUN_F_TSO4 | TUN_F_TSO6))) offload |= TUN_F_TSO_ECN;
      }
      for (int fd : backend_fds_) {
        if (ioctl(fd, TUNSETOFFLOAD, offload) != 0) {
          HV_WARN("TUNSETOFFLOAD %#x: %s", offload, strerror(errno));
        }
      }
    }
    CollectCounters();  // a driver may activate again without a reset in between
    pairs_.clear();
    for (size_t i = 0; i < backend_fds_.size(); ++i) {
      virtio::SplitQueue& rx = transport.queue(2 * i);
      virtio::SplitQueue& tx = transport.queue(2 * i + 1);
      if (!rx.configured() || !tx.configured()) {
        pairs_.push_back(nullptr);  // the driver did not enable this pair
        continue;
      }
      pairs_.push_back(
          std::make_unique<QueuePair>(transport.memory(), rx, tx, backend_fds_[i], features_));
    }
    for (size_t i = 0; i < pairs_.size(); ++i) {
      if (pairs_[i]) Run(i, absl::OkStatus());  // start polling the backend
    }
  }

  void QueueNotify(uint16_t q) override {
    if (transport_ == nullptr || broken_) return;
    if (q == ControlQueue()) {
      HandleControlQueue();
      return;
    }
    size_t i = q / 2;
    if (i >= pairs_.size() || !pairs_[i]) return;
    Run(i, q % 2 == 0 ? pairs_[i]->OnRxBuffers() : pairs_[i]->OnTxChains());
  }

  void Reset() override {
    CollectCounters();
    pairs_.clear();
    for (int fd : backend_fds_) ctx_->SetFdEvents(fd, 0);
    transport_ = nullptr;
    broken_ = false;
  }

 private:
  static unsigned long long ull(uint64_t v) { return v; }

  // The control queue's index, or none (0xffff) without CTRL_VQ.
  uint16_t ControlQueue() const {
    if (!(features_ & (1ull << kFeatureCtrlVq))) return 0xffff;
    return (features_ & (1ull << kFeatureMq)) ? 2 * config_.queue_pairs : 2;
  }

  // After any work on pair `i`: interrupts, what to poll for, errors.
  void Run(size_t i, absl::Status status) {
    if (!status.ok()) {
      Broken(std::string(status.message()));
      return;
    }
    QueuePair& pair = *pairs_[i];
    transport_->SignalUsed(2 * i);
    transport_->SignalUsed(2 * i + 1);
    ctx_->SetFdEvents(backend_fds_[i], pair.wanted_events());
    if (pair.tx_more()) SignalEventFd(resume_.get());
  }

  void Broken(const std::string& why) {
    broken_ = true;
    for (int fd : backend_fds_) ctx_->SetFdEvents(fd, 0);
    transport_->DriverError(why);
  }

  void HandleControlQueue() {
    virtio::SplitQueue& queue = transport_->queue(ControlQueue());
    for (;;) {
      auto chain = queue.Pop();
      if (!chain.ok()) return Broken(std::string(chain.status().message()));
      if (!chain->has_value()) break;
      auto result = HandleControl(transport_->memory(), **chain, config_.queue_pairs);
      if (!result.ok()) return Broken(std::string(result.status().message()));
      if (result->pairs_set != 0) SetActivePairs(result->pairs_set);
      if (auto s = queue.Push((*chain)->head, 1); !s.ok()) return Broken(std::string(s.message()));
    }
    transport_->SignalUsed(ControlQueue());
  }

  // The tap steers frames only to attached queues: detach the ones the driver
  // does not use, so nothing waits on a queue nobody reads.
  void SetActivePairs(uint16_t pairs) {
    if (options_.backend != Backend::kTap) return;
    for (size_t i = 0; i < backend_fds_.size(); ++i) {
      ifreq ifr = {};
      ifr.ifr_flags = i < pairs ? IFF_ATTACH_QUEUE : IFF_DETACH_QUEUE;
      if (ioctl(backend_fds_[i], TUNSETQUEUE, &ifr) != 0 && errno != EINVAL) {
        HV_WARN("tap queue %zu: TUNSETQUEUE: %s", i, strerror(errno));
      }
    }
  }

  // Adds the pairs' counters to the totals; the pairs are dropped right after.
  void CollectCounters() {
    for (auto& p : pairs_) {
      if (p) totals_ += p->counters();
    }
    pairs_.clear();
  }

  devproc::DeviceContext* ctx_ = nullptr;
  NetOptions options_;
  NetDeviceConfig config_;
  std::vector<uint8_t> config_bytes_;
  std::unique_ptr<UserNetwork> user_;
  std::vector<int> backend_fds_;
  std::vector<std::unique_ptr<QueuePair>> pairs_;
  Fd resume_;
  virtio::Transport* transport_ = nullptr;
  uint64_t features_ = 0;
  bool broken_ = false;
  NetCounters totals_;
};

}  // namespace
}  // namespace hv::virtio_net

int main(int argc, char** argv) {
  return hv::virtio::RunVirtioDevice(argc, argv, "virtio-net",
                                     std::make_unique<hv::virtio_net::VirtioNet>(),
                                     hv::virtio_net::VirtioNetSyscallPolicy());
}
