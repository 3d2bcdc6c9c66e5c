#include "hvcore/pci_host.h"

#include <cstring>

namespace hv {
namespace {
// Red Hat's PCIe host bridge id: an id with no quirks attached in guests.
constexpr uint16_t kVendor = 0x1b36;
constexpr uint16_t kDevice = 0x0008;
constexpr uint32_t kClassHostBridge = 0x060000;
constexpr uint16_t kCommandWritable = 0x0006;  // memory space, bus master
}  // namespace

PciHost::PciHost() {
  config_.fill(0);
  auto put16 = [this](int off, uint16_t v) { memcpy(&config_[off], &v, 2); };
  put16(0x00, kVendor);
  put16(0x02, kDevice);
  put16(0x04, 0x0006);
  config_[0x08] = 0;                      // revision
  config_[0x09] = kClassHostBridge & 0xff;
  config_[0x0a] = (kClassHostBridge >> 8) & 0xff;
  config_[0x0b] = kClassHostBridge >> 16;
  config_[0x0e] = 0x00;                   // header type 0, single function
  put16(0x2c, kVendor);                   // subsystem vendor / id
  put16(0x2e, kDevice);
}

PciConfigTarget PciHost::Decode(uint32_t port_offset, uint32_t size) const {
  uint32_t a = address_.load();
  PciConfigTarget t;
  if (!(a & 0x80000000u) || ((a >> 16) & 0xff) != 0) return t;
  t.reg = (a & 0xfc) | (port_offset & 3);
  if ((t.reg & 3) + size > 4) return t;  // an access may not cross the dword
  t.slot = (a >> 11) & 0x1f;
  t.function = (a >> 8) & 0x7;
  t.valid = true;
  return t;
}

uint32_t PciHost::ReadBridge(uint32_t reg, uint32_t size) {
  std::lock_guard<std::mutex> lock(mu_);
  uint32_t v = 0;
  if (reg + size <= config_.size()) memcpy(&v, &config_[reg], size);
  return v;
}

void PciHost::WriteBridge(uint32_t reg, uint32_t size, uint32_t value) {
  std::lock_guard<std::mutex> lock(mu_);
  // Only the command register's enables are writable; the rest is read-only.
  for (uint32_t i = 0; i < size; ++i) {
    uint32_t r = reg + i;
    uint8_t byte = (value >> (8 * i)) & 0xff;
    if (r == 0x04) config_[r] = (config_[r] & ~kCommandWritable) | (byte & kCommandWritable);
  }
}

}  // namespace hv
