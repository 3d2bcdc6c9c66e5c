// The virtio 1.x PCI transport (virtio 1.2, 4.1), shared by every virtio device
// process: the modern capabilities, the common configuration registers, MSI-X
// (or INTx with the ISR), and queue notifications from ioeventfds. A device type
// implements VirtioDevice and gets its queues through Transport.
#ifndef HV_DEVPROC_VIRTIO_PCI_TRANSPORT_H_
#define HV_DEVPROC_VIRTIO_PCI_TRANSPORT_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "devproc/runtime/device_runtime.h"
#include "devproc/runtime/pci_config.h"
#include "devproc/virtio/virtqueue.h"

namespace hv::virtio {

inline constexpr uint64_t kFeatureRingIndirect = 1ull << 28;
inline constexpr uint64_t kFeatureRingEventIdx = 1ull << 29;
inline constexpr uint64_t kFeatureVersion1 = 1ull << 32;

// What the transport offers a device type.
class Transport {
 public:
  virtual ~Transport() = default;
  virtual SplitQueue& queue(uint16_t index) = 0;
  // Interrupts the driver for used buffers on `index`, if it wants one.
  virtual void SignalUsed(uint16_t index) = 0;
  // The driver broke the rules: DEVICE_NEEDS_RESET and a config interrupt.
  virtual void DriverError(const std::string& why) = 0;
  virtual uint64_t driver_features() const = 0;
  virtual const GuestMemory& memory() const = 0;
  virtual devproc::DeviceContext& context() = 0;
};

class VirtioDevice {
 public:
  virtual ~VirtioDevice() = default;
  // Called once the broker's configuration is known (backend fds by name).
  virtual absl::Status Configure(devproc::DeviceContext& ctx,
                                 msg::ConfigureDevice::Reader config) = 0;
  virtual uint16_t device_id() const = 0;     // 2: block, 1: network
  virtual uint32_t pci_class() const = 0;     // class << 16 | subclass << 8
  virtual uint64_t features() const = 0;      // offered, VERSION_1 included
  virtual uint16_t num_queues() const = 0;
  virtual uint16_t max_queue_size() const { return 256; }
  virtual std::vector<uint8_t> config() const = 0;  // the device configuration space
  virtual void Activate(Transport& transport) = 0;   // DRIVER_OK
  virtual void QueueNotify(uint16_t index) = 0;      // the driver kicked the queue
  virtual void Reset() = 0;                          // the driver wrote status 0
  // Restart (devproc::DeviceModel has the contract): the device type's part
  // of the state, after the transport's. false: it keeps none.
  virtual bool SaveState(std::string* out) const {
    (void)out;
    return false;
  }
  // Called after the transport restored itself (and Activate, if the driver
  // had set DRIVER_OK); Resume once sealed.
  virtual absl::Status RestoreState(std::string_view state) {
    (void)state;
    return absl::UnimplementedError("this virtio device keeps no state for a successor");
  }
  virtual void Resume() {}
};

class VirtioPciDevice : public devproc::DeviceModel, public Transport {
 public:
  explicit VirtioPciDevice(std::unique_ptr<VirtioDevice> device);

  // devproc::DeviceModel
  absl::StatusOr<std::vector<devproc::RangeSpec>> Configure(
      devproc::DeviceContext& ctx, msg::ConfigureDevice::Reader config) override;
  uint64_t Read(msg::AddressSpace space, uint64_t addr, uint8_t size) override;
  void Write(msg::AddressSpace space, uint64_t addr, uint8_t size, uint64_t value) override;
  std::optional<devproc::PciFunctionSpec> PciFunction() const override;
  bool SaveState(std::string* out) const override;
  absl::Status RestoreState(std::string_view state) override;
  void Resume() override;

  // Transport
  SplitQueue& queue(uint16_t index) override { return *queues_[index].ring; }
  void SignalUsed(uint16_t index) override;
  void DriverError(const std::string& why) override;
  uint64_t driver_features() const override { return driver_features_; }
  const GuestMemory& memory() const override { return ctx_->memory(); }
  devproc::DeviceContext& context() override { return *ctx_; }

  // BAR 0 layout.
  static constexpr uint32_t kCommonOffset = 0x0000;
  static constexpr uint32_t kIsrOffset = 0x1000;
  static constexpr uint32_t kDeviceOffset = 0x2000;
  static constexpr uint32_t kNotifyOffset = 0x3000;
  static constexpr uint32_t kNotifyStride = 4;
  static constexpr uint32_t kMsixTableOffset = 0x4000;
  static constexpr uint32_t kMsixPbaOffset = 0x6000;
  static constexpr uint64_t kBarSize = 0x8000;

 private:
  struct Queue {
    uint16_t size = 0;
    uint16_t msix_vector = 0xffff;
    bool enabled = false;
    uint64_t desc = 0, driver = 0, device = 0;
    std::unique_ptr<SplitQueue> ring;
  };

  uint64_t ReadBar(uint32_t offset, uint8_t size);
  void WriteBar(uint32_t offset, uint8_t size, uint64_t value);
  uint64_t ReadCommon(uint32_t offset, uint8_t size);
  void WriteCommon(uint32_t offset, uint8_t size, uint64_t value);
  void WriteStatus(uint8_t status);
  void ResetDevice();
  void Notify(uint16_t index);
  // Interrupt on MSI-X `vector`, or INTx with `isr_bit` when MSI-X is off.
  void Raise(uint16_t vector, uint8_t isr_bit);
  bool MsixEnabled() const;
  bool VectorMasked(uint16_t vector) const;
  void DeliverPending();
  void WriteIntx();
  std::unique_ptr<SplitQueue> MakeRing(bool event_idx, bool indirect);

  std::unique_ptr<VirtioDevice> device_;
  devproc::DeviceContext* ctx_ = nullptr;
  std::unique_ptr<devproc::PciConfigSpace> config_;
  uint64_t config_base_ = 0;
  uint8_t msix_cap_ = 0;
  uint16_t msix_vectors_ = 0;
  std::vector<std::array<uint8_t, 16>> msix_table_;
  std::vector<bool> msix_pending_;
  std::vector<int> msix_fds_;
  int intx_fd_ = -1;

  uint64_t device_features_ = 0;
  uint64_t driver_features_ = 0;
  uint32_t device_feature_select_ = 0;
  uint32_t driver_feature_select_ = 0;
  uint16_t config_msix_vector_ = 0xffff;
  uint8_t status_ = 0;
  uint8_t isr_ = 0;
  uint16_t queue_select_ = 0;
  std::vector<Queue> queues_;
  bool active_ = false;
};

// The main() of a virtio device process.
int RunVirtioDevice(int argc, char** argv, const char* kind, std::unique_ptr<VirtioDevice> device,
                    sandbox::SyscallPolicy policy);

}  // namespace hv::virtio

#endif  // HV_DEVPROC_VIRTIO_PCI_TRANSPORT_H_
