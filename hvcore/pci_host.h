// The PCI host bridge at 0:0.0 (bhyve's hostbridge) and PCI configuration
// mechanism #1 (ports 0xCF8/0xCFC): the core decodes the address latch and
// routes each configuration cycle to the process that owns the function.
#ifndef HV_HVCORE_PCI_HOST_H_
#define HV_HVCORE_PCI_HOST_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>

namespace hv {

inline constexpr uint16_t kPciConfigAddressPort = 0xcf8;
inline constexpr uint16_t kPciConfigDataPort = 0xcfc;

// Where a configuration-data access goes.
struct PciConfigTarget {
  bool valid = false;  // false: no function is addressed (enable bit clear or bus != 0)
  uint32_t slot = 0;
  uint32_t function = 0;
  uint32_t reg = 0;    // byte offset in the function's config space
};

class PciHost {
 public:
  PciHost();

  // Port 0xCF8, 4 bytes.
  uint32_t ReadAddress() const { return address_.load(); }
  void WriteAddress(uint32_t value) { address_.store(value & 0x80fffffc); }
  // Decodes the latch for an access at 0xCFC + `port_offset` of `size` bytes.
  PciConfigTarget Decode(uint32_t port_offset, uint32_t size) const;

  // The host bridge's own config space (slot 0, function 0).
  uint32_t ReadBridge(uint32_t reg, uint32_t size);
  void WriteBridge(uint32_t reg, uint32_t size, uint32_t value);

 private:
  std::atomic<uint32_t> address_{0};
  std::mutex mu_;  // vCPUs may touch the bridge concurrently
  std::array<uint8_t, 256> config_;
};

}  // namespace hv

#endif  // HV_HVCORE_PCI_HOST_H_
