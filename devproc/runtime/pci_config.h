// A PCI function's configuration space (type 0 header), as a device process
// holds it: identity, command register, BARs with sizing, interrupt line/pin.
// Guests read and write it through the core's configuration-cycle routing.
#ifndef HV_DEVPROC_RUNTIME_PCI_CONFIG_H_
#define HV_DEVPROC_RUNTIME_PCI_CONFIG_H_

#include <array>
#include <cstdint>
#include <functional>
#include <vector>

namespace hv::devproc {

struct PciIdentity {
  uint16_t vendor = 0;
  uint16_t device = 0;
  uint16_t subsystem_vendor = 0;
  uint16_t subsystem = 0;
  uint8_t revision = 0;
  uint32_t class_code = 0;  // class << 16 | subclass << 8 | prog-if
  bool multifunction = false;
  uint8_t interrupt_pin = 0;  // 0 none, 1 INTA .. 4 INTD
};

enum class BarKind { kIo, kMem32, kMem64 };

class PciConfigSpace {
 public:
  // Called when the guest places a BAR (or moves it); base is the new address.
  using BarMovedFn = std::function<void(int bar, uint64_t base)>;

  explicit PciConfigSpace(const PciIdentity& id);

  // Declares BAR `index` (a 64-bit BAR takes index and index + 1). `size` is a power of two.
  void AddBar(int index, BarKind kind, uint64_t size, bool prefetchable = false);
  void OnBarMoved(BarMovedFn fn) { bar_moved_ = std::move(fn); }

  // Appends a capability (its bytes from the ID on; the next pointer is filled in)
  // and returns its offset. `writable` marks the bytes the guest may change (same
  // length as `bytes`, or empty for a read-only capability).
  uint8_t AddCapability(const std::vector<uint8_t>& bytes, const std::vector<uint8_t>& writable = {});
  // Direct access for the device's own bookkeeping (e.g. MSI-X control bits).
  uint8_t RawByte(uint32_t reg) const { return reg < kSize ? bytes_[reg] : 0; }
  void SetRawByte(uint32_t reg, uint8_t v) {
    if (reg < kSize) bytes_[reg] = v;
  }

  uint32_t Read(uint32_t reg, uint32_t size) const;
  void Write(uint32_t reg, uint32_t size, uint32_t value);

  uint16_t command() const;
  uint64_t BarAddress(int index) const;
  bool io_enabled() const { return command() & 0x1; }
  bool memory_enabled() const { return command() & 0x2; }

  static constexpr uint32_t kSize = 256;

  // Restart: the header as the guest left it, and back into a successor's
  // freshly built space. Restore follows the guest's write rules (read-only
  // bits stay, BARs keep their size alignment, the status register is left
  // alone); a BAR that moves is reported as usual.
  std::array<uint8_t, kSize> Save() const { return bytes_; }
  void Restore(const std::array<uint8_t, kSize>& saved);

 private:
  struct Bar {
    BarKind kind = BarKind::kMem32;
    uint64_t size = 0;  // 0: unused
    bool prefetchable = false;
    bool high_half = false;  // the upper dword of a 64-bit BAR
  };
  void WriteByte(uint32_t reg, uint8_t value);
  void WriteBarDword(int index, uint32_t value);
  uint32_t Dword(uint32_t reg) const;
  void SetDword(uint32_t reg, uint32_t v);

  std::array<uint8_t, kSize> bytes_{};
  std::array<uint8_t, kSize> writable_{};  // per byte: bits the guest may change
  uint8_t last_capability_ = 0;
  uint8_t next_capability_at_ = 0x40;
  std::array<Bar, 6> bars_{};
  BarMovedFn bar_moved_;
};

}  // namespace hv::devproc

#endif  // HV_DEVPROC_RUNTIME_PCI_CONFIG_H_
