#include "devproc/virtio/pci_transport.h"

#include <unistd.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/device_state.h"
#include "common/fd.h"
#include "common/log.h"

namespace hv::virtio {
namespace {

constexpr uint16_t kVirtioVendor = 0x1af4;
constexpr uint16_t kNoVector = 0xffff;

// Device status bits (2.1) the device acts on.
constexpr uint8_t kStatusDriverOk = 4;
constexpr uint8_t kStatusFeaturesOk = 8;
constexpr uint8_t kStatusNeedsReset = 0x40;

// virtio_pci_cap cfg_type (4.1.4).
constexpr uint8_t kCapCommon = 1;
constexpr uint8_t kCapNotify = 2;
constexpr uint8_t kCapIsr = 3;
constexpr uint8_t kCapDevice = 4;

constexpr uint8_t kIsrQueue = 1;
constexpr uint8_t kIsrConfig = 2;

// The common configuration structure (4.1.4.3), offsets.
enum CommonReg : uint32_t {
  kDeviceFeatureSelect = 0,
  kDeviceFeature = 4,
  kDriverFeatureSelect = 8,
  kDriverFeature = 12,
  kConfigMsixVector = 16,
  kNumQueues = 18,
  kDeviceStatus = 20,
  kConfigGeneration = 21,
  kQueueSelect = 22,
  kQueueSize = 24,
  kQueueMsixVector = 26,
  kQueueEnable = 28,
  kQueueNotifyOff = 30,
  kQueueDesc = 32,
  kQueueDriver = 40,
  kQueueDevice = 48,
  kCommonLength = 56,
};

std::vector<uint8_t> VirtioCap(uint8_t type, uint32_t offset, uint32_t length, bool notify) {
  std::vector<uint8_t> cap(notify ? 20 : 16, 0);
  cap[0] = 0x09;  // vendor-specific
  cap[2] = cap.size();
  cap[3] = type;
  cap[4] = 0;  // BAR 0
  memcpy(&cap[8], &offset, 4);
  memcpy(&cap[12], &length, 4);
  if (notify) {
    uint32_t multiplier = VirtioPciDevice::kNotifyStride;
    memcpy(&cap[16], &multiplier, 4);
  }
  return cap;
}

uint64_t Bytes(const uint8_t* p, uint8_t size) {
  uint64_t v = 0;
  memcpy(&v, p, size);
  return v;
}

}  // namespace

VirtioPciDevice::VirtioPciDevice(std::unique_ptr<VirtioDevice> device)
    : device_(std::move(device)) {}

absl::StatusOr<std::vector<devproc::RangeSpec>> VirtioPciDevice::Configure(
    devproc::DeviceContext& ctx, msg::ConfigureDevice::Reader config) {
  ctx_ = &ctx;
  if (auto s = device_->Configure(ctx, config); !s.ok()) return s;
  devproc::PciIdentity id;
  id.vendor = kVirtioVendor;
  id.device = 0x1040 + device_->device_id();  // modern-only device ids (4.1.2)
  id.revision = 1;
  id.subsystem_vendor = kVirtioVendor;
  id.subsystem = 0x40;
  id.class_code = device_->pci_class();
  id.multifunction = config.getMultifunction();
  id.interrupt_pin = 1;  // INTA
  config_ = std::make_unique<devproc::PciConfigSpace>(id);
  config_->AddBar(0, devproc::BarKind::kMem64, kBarSize);
  uint32_t device_config_length = std::max<size_t>(device_->config().size(), 4);
  config_->AddCapability(VirtioCap(kCapCommon, kCommonOffset, kCommonLength, false));
  config_->AddCapability(VirtioCap(kCapNotify, kNotifyOffset,
                                   kNotifyStride * device_->num_queues(), true));
  config_->AddCapability(VirtioCap(kCapIsr, kIsrOffset, 1, false));
  config_->AddCapability(VirtioCap(kCapDevice, kDeviceOffset, device_config_length, false));

  // MSI-X: one vector per queue and one for configuration changes.
  msix_vectors_ = device_->num_queues() + 1;
  std::vector<uint8_t> msix(12, 0);
  msix[0] = 0x11;
  uint16_t control = msix_vectors_ - 1;
  memcpy(&msix[2], &control, 2);
  uint32_t table = kMsixTableOffset | 0, pba = kMsixPbaOffset | 0;  // BIR 0
  memcpy(&msix[4], &table, 4);
  memcpy(&msix[8], &pba, 4);
  msix_cap_ = config_->AddCapability(msix, {0, 0, 0, 0xc0});  // enable, function mask
  msix_table_.assign(msix_vectors_, {});
  for (auto& entry : msix_table_) entry[12] = 1;  // vectors start masked
  msix_pending_.assign(msix_vectors_, false);
  for (uint16_t v = 0; v < msix_vectors_; ++v) {
    auto fd = ctx.NamedFd(absl::StrCat("msix", v));
    if (!fd.ok()) return fd.status();
    msix_fds_.push_back(*fd);
  }
  if (auto fd = ctx.NamedFd("intx"); fd.ok()) intx_fd_ = *fd;
  if (auto resample = ctx.NamedFd("intx.resample"); resample.ok()) {
    int rfd = *resample;
    // Level-triggered INTx: after the guest's EOI, raise it again while the ISR is set.
    ctx.WatchFd(rfd, POLLIN, [this, rfd](short) {
      uint64_t count;
      ssize_t ignored = read(rfd, &count, sizeof(count));
      (void)ignored;
      if (isr_ != 0 && !MsixEnabled()) WriteIntx();
    });
  }
  queues_.resize(device_->num_queues());
  for (uint16_t q = 0; q < device_->num_queues(); ++q) {
    queues_[q].size = device_->max_queue_size();
    auto fd = ctx.NamedFd(absl::StrCat("notify", q));
    if (!fd.ok()) return fd.status();
    int nfd = *fd;
    ctx.WatchFd(nfd, POLLIN, [this, nfd, q](short) {
      uint64_t count;
      ssize_t ignored = read(nfd, &count, sizeof(count));
      (void)ignored;
      Notify(q);
    });
  }
  device_features_ = device_->features() | kFeatureVersion1;

  auto d = config.getDevice();
  config_base_ = (uint64_t{d.getSlot()} << 15) | (uint64_t{d.getFunction()} << 12);
  return std::vector<devproc::RangeSpec>{
      {msg::AddressSpace::PCI_CONFIG, config_base_, 4096, true}};
}

std::optional<devproc::PciFunctionSpec> VirtioPciDevice::PciFunction() const {
  devproc::PciFunctionSpec spec;
  spec.bars.push_back({0, msg::BarKind::MEM64, kBarSize});
  spec.msix_bar = 0;
  spec.msix_table_offset = kMsixTableOffset;
  spec.msix_vectors = msix_vectors_;
  spec.notify_bar = 0;
  spec.notify_offset = kNotifyOffset;
  spec.notify_stride = kNotifyStride;
  spec.notify_queues = queues_.size();
  return spec;
}

uint64_t VirtioPciDevice::Read(msg::AddressSpace space, uint64_t addr, uint8_t size) {
  if (space == msg::AddressSpace::PCI_CONFIG) return config_->Read(addr - config_base_, size);
  uint64_t base = config_->BarAddress(0);
  if (space != msg::AddressSpace::MMIO || base == 0 || addr < base || addr - base >= kBarSize) {
    return ~0ull;
  }
  return ReadBar(addr - base, size);
}

void VirtioPciDevice::Write(msg::AddressSpace space, uint64_t addr, uint8_t size, uint64_t value) {
  if (space == msg::AddressSpace::PCI_CONFIG) {
    bool was_enabled = MsixEnabled();
    config_->Write(addr - config_base_, size, value);
    if (MsixEnabled() != was_enabled || !MsixEnabled()) DeliverPending();
    return;
  }
  uint64_t base = config_->BarAddress(0);
  if (space != msg::AddressSpace::MMIO || base == 0 || addr < base || addr - base >= kBarSize) {
    return;
  }
  WriteBar(addr - base, size, value);
}

bool VirtioPciDevice::MsixEnabled() const {
  return (config_->RawByte(msix_cap_ + 3) & 0x80) != 0;
}

bool VirtioPciDevice::VectorMasked(uint16_t vector) const {
  return (config_->RawByte(msix_cap_ + 3) & 0x40) || (msix_table_[vector][12] & 1);
}

void VirtioPciDevice::WriteIntx() {
  if (intx_fd_ < 0) return;
  SignalEventFd(intx_fd_);
}

void VirtioPciDevice::Raise(uint16_t vector, uint8_t isr_bit) {
  if (!MsixEnabled()) {
    isr_ |= isr_bit;
    WriteIntx();
    return;
  }
  if (vector == kNoVector || vector >= msix_vectors_) return;
  if (VectorMasked(vector)) {
    msix_pending_[vector] = true;  // delivered when the guest unmasks it
    return;
  }
  SignalEventFd(msix_fds_[vector]);
}

void VirtioPciDevice::DeliverPending() {
  if (!MsixEnabled()) return;
  for (uint16_t v = 0; v < msix_vectors_; ++v) {
    if (msix_pending_[v] && !VectorMasked(v)) {
      msix_pending_[v] = false;
      Raise(v, 0);
    }
  }
}

void VirtioPciDevice::SignalUsed(uint16_t index) {
  if (index >= queues_.size() || !queues_[index].ring) return;
  if (queues_[index].ring->NeedsInterrupt()) Raise(queues_[index].msix_vector, kIsrQueue);
}

void VirtioPciDevice::DriverError(const std::string& why) {
  HV_WARN("driver error, device needs reset: %s", why.c_str());
  status_ |= kStatusNeedsReset;
  Raise(config_msix_vector_, kIsrConfig);
}

void VirtioPciDevice::Notify(uint16_t index) {
  if (!active_ || index >= queues_.size() || !queues_[index].enabled) return;
  if (status_ & kStatusNeedsReset) return;
  device_->QueueNotify(index);
}

uint64_t VirtioPciDevice::ReadBar(uint32_t offset, uint8_t size) {
  if (offset < kCommonOffset + kCommonLength) return ReadCommon(offset - kCommonOffset, size);
  if (offset == kIsrOffset) {
    uint8_t v = isr_;
    isr_ = 0;  // reading the ISR acknowledges it (and lowers INTx at the next EOI)
    return v;
  }
  if (offset >= kDeviceOffset && offset < kNotifyOffset) {
    std::vector<uint8_t> cfg = device_->config();
    uint32_t at = offset - kDeviceOffset;
    if (at + size > cfg.size()) return 0;
    return Bytes(&cfg[at], size);
  }
  if (offset >= kMsixTableOffset && offset < kMsixTableOffset + 16u * msix_vectors_) {
    uint32_t at = offset - kMsixTableOffset;
    if (at % 16 + size > 16) return 0;
    return Bytes(&msix_table_[at / 16][at % 16], size);
  }
  if (offset >= kMsixPbaOffset && offset < kMsixPbaOffset + 8u * ((msix_vectors_ + 63) / 64)) {
    uint64_t bits = 0;
    uint32_t first = (offset - kMsixPbaOffset) * 8;
    for (uint32_t b = 0; b < 8u * size && first + b < msix_vectors_; ++b) {
      if (msix_pending_[first + b]) bits |= 1ull << b;
    }
    return bits;
  }
  return 0;
}

void VirtioPciDevice::WriteBar(uint32_t offset, uint8_t size, uint64_t value) {
  if (offset < kCommonOffset + kCommonLength) {
    WriteCommon(offset - kCommonOffset, size, value);
    return;
  }
  if (offset >= kNotifyOffset && offset < kNotifyOffset + kNotifyStride * queues_.size()) {
    // Only when no ioeventfd took the write (e.g. before the core mapped it).
    Notify((offset - kNotifyOffset) / kNotifyStride);
    return;
  }
  if (offset >= kMsixTableOffset && offset < kMsixTableOffset + 16u * msix_vectors_) {
    uint32_t at = offset - kMsixTableOffset;
    if (at % 16 + size > 16) return;
    memcpy(&msix_table_[at / 16][at % 16], &value, size);
    DeliverPending();
    return;
  }
}

uint64_t VirtioPciDevice::ReadCommon(uint32_t offset, uint8_t size) {
  Queue* q = queue_select_ < queues_.size() ? &queues_[queue_select_] : nullptr;
  uint64_t v = 0;
  switch (offset) {
    case kDeviceFeatureSelect: v = device_feature_select_; break;
    case kDeviceFeature:
      v = device_feature_select_ == 0 ? (device_features_ & 0xffffffff)
          : device_feature_select_ == 1 ? (device_features_ >> 32) : 0;
      break;
    case kDriverFeatureSelect: v = driver_feature_select_; break;
    case kDriverFeature:
      v = driver_feature_select_ == 0 ? (driver_features_ & 0xffffffff)
          : driver_feature_select_ == 1 ? (driver_features_ >> 32) : 0;
      break;
    case kConfigMsixVector: v = config_msix_vector_; break;
    case kNumQueues: v = queues_.size(); break;
    case kDeviceStatus: v = status_; break;
    case kConfigGeneration: v = 0; break;
    case kQueueSelect: v = queue_select_; break;
    case kQueueSize: v = q ? q->size : 0; break;
    case kQueueMsixVector: v = q ? q->msix_vector : kNoVector; break;
    case kQueueEnable: v = q ? q->enabled : 0; break;
    case kQueueNotifyOff: v = q ? queue_select_ : 0; break;
    case kQueueDesc: v = q ? q->desc : 0; break;
    case kQueueDesc + 4: v = q ? q->desc >> 32 : 0; break;
    case kQueueDriver: v = q ? q->driver : 0; break;
    case kQueueDriver + 4: v = q ? q->driver >> 32 : 0; break;
    case kQueueDevice: v = q ? q->device : 0; break;
    case kQueueDevice + 4: v = q ? q->device >> 32 : 0; break;
    default: v = 0;
  }
  return size >= 8 ? v : v & ((1ull << (8 * size)) - 1);
}

void VirtioPciDevice::WriteCommon(uint32_t offset, uint8_t size, uint64_t value) {
  Queue* q = queue_select_ < queues_.size() ? &queues_[queue_select_] : nullptr;
  // Queue registers change only while the queue is disabled (4.1.4.3.2).
  bool queue_writable = q != nullptr && !q->enabled;
  auto set_half = [&](uint64_t& field, bool high) {
    uint64_t mask = 0xffffffffull << (high ? 32 : 0);
    uint64_t v = size == 8 ? value : (value & 0xffffffff) << (high ? 32 : 0);
    field = size == 8 ? v : ((field & ~mask) | v);
  };
  switch (offset) {
    case kDeviceFeatureSelect: device_feature_select_ = value; break;
    case kDriverFeatureSelect: driver_feature_select_ = value; break;
    case kDriverFeature:
      if (status_ & kStatusFeaturesOk) break;  // fixed once accepted
      if (driver_feature_select_ == 0) {
        driver_features_ = (driver_features_ & ~0xffffffffull) | (value & 0xffffffff);
      } else if (driver_feature_select_ == 1) {
        driver_features_ = (driver_features_ & 0xffffffff) | ((value & 0xffffffff) << 32);
      }
      break;
    case kConfigMsixVector:
      config_msix_vector_ = value < msix_vectors_ ? value : kNoVector;
      break;
    case kDeviceStatus: WriteStatus(value); break;
    case kQueueSelect: queue_select_ = value; break;
    case kQueueSize:
      if (queue_writable) {
        uint16_t want = value;
        // A power of two no larger than the maximum; else the queue stays unusable.
        q->size = (want != 0 && (want & (want - 1)) == 0 && want <= device_->max_queue_size())
                      ? want : 0;
      }
      break;
    case kQueueMsixVector:
      if (q) q->msix_vector = value < msix_vectors_ ? value : kNoVector;
      break;
    case kQueueEnable:
      if (queue_writable && (value & 1) && (status_ & kStatusFeaturesOk)) {
        auto s = q->ring->Configure({q->size, q->desc, q->driver, q->device});
        if (!s.ok()) {
          DriverError(absl::StrCat("queue ", queue_select_, ": ", s.message()));
          break;
        }
        q->enabled = true;
      }
      break;
    case kQueueDesc: if (queue_writable) set_half(q->desc, false); break;
    case kQueueDesc + 4: if (queue_writable) set_half(q->desc, true); break;
    case kQueueDriver: if (queue_writable) set_half(q->driver, false); break;
    case kQueueDriver + 4: if (queue_writable) set_half(q->driver, true); break;
    case kQueueDevice: if (queue_writable) set_half(q->device, false); break;
    case kQueueDevice + 4: if (queue_writable) set_half(q->device, true); break;
    default: break;
  }
}

void VirtioPciDevice::WriteStatus(uint8_t status) {
  if (status == 0) {
    ResetDevice();
    return;
  }
  if ((status & kStatusFeaturesOk) && !(status_ & kStatusFeaturesOk)) {
    // Accept only a subset of what we offer, with VERSION_1 (no legacy interface).
    if ((driver_features_ & ~device_features_) != 0 || !(driver_features_ & kFeatureVersion1)) {
      status &= ~kStatusFeaturesOk;
    } else {
      bool event_idx = driver_features_ & kFeatureRingEventIdx;
      bool indirect = driver_features_ & kFeatureRingIndirect;
      for (auto& q : queues_) q.ring = MakeRing(event_idx, indirect);
    }
  }
  bool activate = (status & kStatusDriverOk) && !(status_ & kStatusDriverOk);
  status_ = (status & ~kStatusNeedsReset) | (status_ & kStatusNeedsReset);
  if (activate && (status_ & kStatusFeaturesOk)) {
    active_ = true;
    device_->Activate(*this);
    for (uint16_t q = 0; q < queues_.size(); ++q) Notify(q);  // buffers added before DRIVER_OK
  }
}

void VirtioPciDevice::ResetDevice() {
  device_->Reset();
  active_ = false;
  status_ = 0;
  isr_ = 0;
  driver_features_ = 0;
  device_feature_select_ = driver_feature_select_ = 0;
  config_msix_vector_ = kNoVector;
  queue_select_ = 0;
  for (auto& q : queues_) {
    q = Queue();
    q.size = device_->max_queue_size();
  }
}

std::unique_ptr<SplitQueue> VirtioPciDevice::MakeRing(bool event_idx, bool indirect) {
  auto ring = std::make_unique<SplitQueue>(ctx_->memory(), event_idx, indirect);
  // A completion is in the saved state before the driver can see it.
  ring->SetCommitHook([this] { ctx_->CommitState(); });
  return ring;
}

namespace {

// The transport's registers, as saved for a successor.
struct TransportState {
  uint64_t driver_features;
  uint32_t device_feature_select;
  uint32_t driver_feature_select;
  uint16_t config_msix_vector;
  uint16_t queue_select;
  uint16_t msix_vectors;
  uint16_t queues;
  uint8_t status;
  uint8_t isr;
  uint8_t active;
  uint8_t pad[5];
};

struct QueueState {
  uint64_t desc, driver, device;
  uint16_t size;
  uint16_t msix_vector;
  uint8_t enabled;
  uint8_t has_ring;
  uint16_t next_avail, next_used, signalled_used;
  uint8_t pad[4];
};

constexpr uint32_t kTransportStateVersion = 1;

}  // namespace

bool VirtioPciDevice::SaveState(std::string* out) const {
  // Only a device type that keeps its own part can be restarted.
  std::string device_part;
  if (!device_->SaveState(&device_part)) return false;
  StateWriter w(out);
  w.Put(kTransportStateVersion);
  w.Put(config_->Save());
  TransportState t = {};
  t.driver_features = driver_features_;
  t.device_feature_select = device_feature_select_;
  t.driver_feature_select = driver_feature_select_;
  t.config_msix_vector = config_msix_vector_;
  t.queue_select = queue_select_;
  t.msix_vectors = msix_vectors_;
  t.queues = queues_.size();
  t.status = status_;
  t.isr = isr_;
  t.active = active_;
  w.Put(t);
  for (uint16_t v = 0; v < msix_vectors_; ++v) {
    w.Put(msix_table_[v]);
    w.Put(static_cast<uint8_t>(msix_pending_[v]));
  }
  for (const auto& q : queues_) {
    QueueState s = {};
    s.desc = q.desc;
    s.driver = q.driver;
    s.device = q.device;
    s.size = q.size;
    s.msix_vector = q.msix_vector;
    s.enabled = q.enabled;
    s.has_ring = q.ring != nullptr;
    if (q.ring) {
      auto p = q.ring->position();
      s.next_avail = p.next_avail;
      s.next_used = p.next_used;
      s.signalled_used = p.signalled_used;
    }
    w.Put(s);
  }
  out->append(device_part);
  return true;
}

absl::Status VirtioPciDevice::RestoreState(std::string_view state) {
  StateReader r(state);
  uint32_t version = 0;
  std::array<uint8_t, devproc::PciConfigSpace::kSize> config;
  TransportState t;
  if (!r.Get(&version) || version != kTransportStateVersion || !r.Get(&config) || !r.Get(&t)) {
    return absl::DataLossError("virtio state: bad transport header");
  }
  if (t.msix_vectors != msix_vectors_ || t.queues != queues_.size()) {
    return absl::DataLossError("virtio state: vectors or queues differ from the configuration");
  }
  config_->Restore(config);
  for (uint16_t v = 0; v < msix_vectors_; ++v) {
    uint8_t pending;
    if (!r.Get(&msix_table_[v]) || !r.Get(&pending)) return absl::DataLossError("virtio state: truncated");
    msix_pending_[v] = pending != 0;
  }
  if ((t.driver_features & ~device_features_) != 0) {
    return absl::DataLossError("virtio state: features the device never offered");
  }
  driver_features_ = t.driver_features;
  device_feature_select_ = t.device_feature_select;
  driver_feature_select_ = t.driver_feature_select;
  config_msix_vector_ = t.config_msix_vector < msix_vectors_ ? t.config_msix_vector : kNoVector;
  queue_select_ = t.queue_select;
  status_ = t.status;
  isr_ = t.isr;
  bool event_idx = driver_features_ & kFeatureRingEventIdx;
  bool indirect = driver_features_ & kFeatureRingIndirect;
  for (uint16_t i = 0; i < queues_.size(); ++i) {
    QueueState s;
    if (!r.Get(&s)) return absl::DataLossError("virtio state: truncated queues");
    Queue& q = queues_[i];
    uint16_t size = s.size;
    q.size = (size != 0 && (size & (size - 1)) == 0 && size <= device_->max_queue_size()) ? size : 0;
    q.msix_vector = s.msix_vector < msix_vectors_ ? s.msix_vector : kNoVector;
    q.desc = s.desc;
    q.driver = s.driver;
    q.device = s.device;
    q.enabled = false;
    q.ring.reset();
    if (!s.has_ring) continue;
    q.ring = MakeRing(event_idx, indirect);
    if (s.enabled) {
      if (auto st = q.ring->Configure({q.size, q.desc, q.driver, q.device}); !st.ok()) {
        return absl::DataLossError(absl::StrCat("virtio state: queue ", i, ": ", st.message()));
      }
      q.enabled = true;
      q.ring->Restore({s.next_avail, s.next_used, s.signalled_used});
    }
  }
  active_ = t.active != 0;
  if (active_) device_->Activate(*this);
  return device_->RestoreState(r.rest());
}

void VirtioPciDevice::Resume() {
  if (!active_) return;
  device_->Resume();
  // A completion published just before the predecessor died may not have been
  // signalled: one interrupt per queue more is harmless, one less hangs the driver.
  for (uint16_t q = 0; q < queues_.size(); ++q) {
    if (queues_[q].enabled) Raise(queues_[q].msix_vector, kIsrQueue);
  }
  DeliverPending();
}

int RunVirtioDevice(int argc, char** argv, const char* kind, std::unique_ptr<VirtioDevice> device,
                    sandbox::SyscallPolicy policy) {
  return devproc::RunDevice(argc, argv, kind, std::make_unique<VirtioPciDevice>(std::move(device)),
                            std::move(policy));
}

}  // namespace hv::virtio
