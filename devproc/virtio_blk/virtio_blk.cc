// The virtio-blk device process (bhyve's -s N,virtio-blk,PATH[,options]).
// The broker opens the disk and hands its fd over as "disk"; requests run on a
// worker pool; queue kicks arrive on ioeventfds and completions leave on MSI-X
// irqfds, without a trip through hvcore.
#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/device_state.h"
#include "common/log.h"
#include "devproc/virtio/pci_transport.h"
#include "devproc/virtio_blk/blk_requests.h"
#include "devproc/virtio_blk/seccomp_policy.h"

namespace hv::virtio_blk {
namespace {

constexpr uint16_t kQueueSize = 256;

class VirtioBlk : public virtio::VirtioDevice {
 public:
  absl::Status Configure(devproc::DeviceContext& ctx,
                         msg::ConfigureDevice::Reader config) override {
    auto device = config.getDevice();
    std::vector<std::pair<std::string, std::string>> options;
    for (auto o : device.getOptions()) {
      std::string key = o.getKey(), value = o.getValue();
      if (key == "num_queues" || key == "queues") {
        uint32_t n;
        if (!absl::SimpleAtoi(value, &n) || n < 1 || n > 16) {
          return absl::InvalidArgumentError(absl::StrCat(key, "=", value, ": want 1 to 16"));
        }
        num_queues_ = n;
        continue;
      }
      options.push_back({key, value});
    }
    auto parsed = ParseBlkOptions(options);
    if (!parsed.ok()) return parsed.status();
    options_ = *parsed;
    if (options_.serial.empty()) options_.serial = DefaultSerial(std::string(device.getPath()));
    auto disk = ctx.NamedFd("disk");
    if (!disk.ok()) return disk.status();
    auto backend = BlockBackend::Create(Fd(*disk), BackendOptions(options_));
    if (!backend.ok()) return backend.status();
    backend_ = std::move(*backend);
    auto cfg = MakeDeviceConfig(options_, *backend_, num_queues_, kQueueSize);
    if (!cfg.ok()) return cfg.status();
    config_ = *cfg;
    config_bytes_ = BuildConfig(config_);
    ctx.WatchFd(backend_->event_fd(), POLLIN, [this](short) { Completions(); });
    return absl::OkStatus();
  }

  uint16_t device_id() const override { return 2; }
  uint32_t pci_class() const override { return 0x018000; }  // mass storage, other
  uint64_t features() const override { return DeviceFeatures(config_); }
  uint16_t num_queues() const override { return num_queues_; }
  uint16_t max_queue_size() const override { return kQueueSize; }
  std::vector<uint8_t> config() const override { return config_bytes_; }

  void Activate(virtio::Transport& transport) override {
    transport_ = &transport;
    engines_.clear();
    for (uint16_t q = 0; q < num_queues_; ++q) {
      engines_.push_back(std::make_unique<BlkRequestEngine>(
          transport.memory(), *backend_, config_, [this, q](const Completion& c) {
            if (auto s = transport_->queue(q).Push(c.head, c.used_len); !s.ok()) {
              transport_->DriverError(std::string(s.message()));
            }
            touched_.push_back(q);
          }));
    }
  }

  void QueueNotify(uint16_t q) override {
    if (transport_ == nullptr || q >= engines_.size()) return;
    virtio::SplitQueue& queue = transport_->queue(q);
    for (;;) {
      auto chain = queue.Pop();
      if (!chain.ok()) {
        transport_->DriverError(std::string(chain.status().message()));
        break;
      }
      if (!chain->has_value()) break;
      const virtio::Chain& c = **chain;
      std::vector<Buffer> readable, writable;
      for (const auto& b : c.readable) readable.push_back({b.gpa, b.len});
      for (const auto& b : c.writable) writable.push_back({b.gpa, b.len});
      if (auto s = engines_[q]->Submit(c.head, readable, writable); !s.ok()) {
        transport_->DriverError(std::string(s.message()));
        break;
      }
    }
    // Requests that ran on this thread are done already: complete them now
    // rather than after another trip through poll().
    if (backend_->pending() > 0) engines_[q]->DrainCompletions();
    SignalTouched();
  }

  // Restart: per queue, the heads popped and not yet completed (oldest
  // first). A successor submits them again: every request type is idempotent
  // (a write writes the same bytes, a read reads them again).
  static constexpr uint32_t kStateVersion = 1;
  bool SaveState(std::string* out) const override {
    StateWriter w(out);
    w.Put(kStateVersion);
    w.Put(static_cast<uint16_t>(engines_.size()));
    for (const auto& e : engines_) {
      std::vector<uint16_t> heads = e->InFlight();
      w.Put(static_cast<uint16_t>(heads.size()));
      for (uint16_t h : heads) w.Put(h);
    }
    return true;
  }

  absl::Status RestoreState(std::string_view state) override {
    StateReader r(state);
    uint32_t version = 0;
    uint16_t queues = 0;
    if (!r.Get(&version) || version != kStateVersion || !r.Get(&queues)) {
      return absl::DataLossError("virtio-blk state: bad header");
    }
    if (queues != engines_.size()) {
      return absl::DataLossError("virtio-blk state: queues differ from the driver's");
    }
    redo_.assign(queues, {});
    for (uint16_t q = 0; q < queues; ++q) {
      uint16_t n = 0;
      if (!r.Get(&n) || n > kQueueSize) return absl::DataLossError("virtio-blk state: truncated");
      for (uint16_t i = 0; i < n; ++i) {
        uint16_t head;
        if (!r.Get(&head)) return absl::DataLossError("virtio-blk state: truncated");
        redo_[q].push_back(head);
      }
    }
    return absl::OkStatus();
  }

  void Resume() override {
    if (transport_ == nullptr) return;
    size_t redone = 0;
    for (uint16_t q = 0; q < redo_.size() && q < engines_.size(); ++q) {
      for (uint16_t head : redo_[q]) {
        auto chain = transport_->queue(q).ChainAt(head);
        if (!chain.ok()) {
          transport_->DriverError(std::string(chain.status().message()));
          continue;
        }
        std::vector<Buffer> readable, writable;
        for (const auto& b : chain->readable) readable.push_back({b.gpa, b.len});
        for (const auto& b : chain->writable) writable.push_back({b.gpa, b.len});
        if (auto s = engines_[q]->Submit(head, readable, writable); !s.ok()) {
          transport_->DriverError(std::string(s.message()));
        }
        ++redone;
      }
    }
    redo_.clear();
    if (redone > 0) HV_INFO("redoing %zu request(s) its predecessor had in flight", redone);
    // Anything made available while no process served the queues.
    for (uint16_t q = 0; q < engines_.size(); ++q) QueueNotify(q);
  }

  void Reset() override {
    for (auto& e : engines_) e->WaitIdle();
    engines_.clear();
    touched_.clear();
    transport_ = nullptr;
  }

 private:
  void Completions() {
    if (engines_.empty()) {
      backend_->DrainCompletions();
      return;
    }
    engines_[0]->DrainCompletions();  // runs every engine's completions
    SignalTouched();
  }

  void SignalTouched() {
    if (transport_ == nullptr) return;
    std::vector<uint16_t> queues = std::exchange(touched_, {});
    std::sort(queues.begin(), queues.end());
    queues.erase(std::unique(queues.begin(), queues.end()), queues.end());
    for (uint16_t q : queues) transport_->SignalUsed(q);
  }

  uint16_t num_queues_ = 1;
  BlkOptions options_;
  BlkDeviceConfig config_;
  std::vector<uint8_t> config_bytes_;
  std::unique_ptr<BlockBackend> backend_;
  std::vector<std::unique_ptr<BlkRequestEngine>> engines_;
  std::vector<uint16_t> touched_;
  virtio::Transport* transport_ = nullptr;
  std::vector<std::vector<uint16_t>> redo_;  // a successor's requests to submit again
};

}  // namespace
}  // namespace hv::virtio_blk

int main(int argc, char** argv) {
  return hv::virtio::RunVirtioDevice(argc, argv, "virtio-blk",
                                     std::make_unique<hv::virtio_blk::VirtioBlk>(),
                                     hv::virtio_blk::VirtioBlkSyscallPolicy());
}
