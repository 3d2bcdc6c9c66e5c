#include "devproc/runtime/pci_config.h"

#include <cstring>

namespace hv::devproc {
namespace {
constexpr uint32_t kCommand = 0x04;
constexpr uint32_t kStatus = 0x06;
constexpr uint32_t kBar0 = 0x10;
constexpr uint32_t kCacheLine = 0x0c;
constexpr uint32_t kLatency = 0x0d;
constexpr uint32_t kInterruptLine = 0x3c;
constexpr uint32_t kInterruptPin = 0x3d;
// I/O space, memory space, bus master, SERR, parity, INTx disable.
constexpr uint16_t kCommandWritable = 0x0547;
}  // namespace

PciConfigSpace::PciConfigSpace(const PciIdentity& id) {
  auto put16 = [this](uint32_t off, uint16_t v) { memcpy(&bytes_[off], &v, 2); };
  put16(0x00, id.vendor);
  put16(0x02, id.device);
  bytes_[0x08] = id.revision;
  bytes_[0x09] = id.class_code & 0xff;
  bytes_[0x0a] = (id.class_code >> 8) & 0xff;
  bytes_[0x0b] = (id.class_code >> 16) & 0xff;
  bytes_[0x0e] = id.multifunction ? 0x80 : 0x00;
  put16(0x2c, id.subsystem_vendor);
  put16(0x2e, id.subsystem);
  bytes_[kInterruptPin] = id.interrupt_pin;
  bytes_[kInterruptLine] = 0xff;
  writable_[kCommand] = kCommandWritable & 0xff;
  writable_[kCommand + 1] = kCommandWritable >> 8;
  writable_[kCacheLine] = 0xff;
  writable_[kLatency] = 0xff;
  writable_[kInterruptLine] = 0xff;
}

uint8_t PciConfigSpace::AddCapability(const std::vector<uint8_t>& bytes,
                                      const std::vector<uint8_t>& writable) {
  uint32_t at = (next_capability_at_ + 3) & ~3u;
  if (bytes.size() < 2 || at + bytes.size() > kSize) return 0;
  for (size_t i = 0; i < bytes.size(); ++i) {
    bytes_[at + i] = bytes[i];
    writable_[at + i] = i < writable.size() ? writable[i] : 0;
  }
  bytes_[at + 1] = 0;  // end of the list
  if (last_capability_ == 0) {
    bytes_[0x34] = at;
    bytes_[kStatus] |= 0x10;  // capabilities list present
  } else {
    bytes_[last_capability_ + 1] = at;
  }
  last_capability_ = at;
  next_capability_at_ = at + bytes.size();
  return at;
}

void PciConfigSpace::AddBar(int index, BarKind kind, uint64_t size, bool prefetchable) {
  if (index < 0 || index > 5 || size == 0 || (size & (size - 1)) != 0) return;
  if (kind == BarKind::kMem64 && index == 5) return;
  if (kind != BarKind::kIo && size < 16) size = 16;
  if (kind == BarKind::kIo && size < 4) size = 4;
  bars_[index] = {kind, size, prefetchable, false};
  uint32_t low = kind == BarKind::kIo ? 0x1 : (kind == BarKind::kMem64 ? 0x4 : 0x0) | (prefetchable ? 0x8 : 0);
  SetDword(kBar0 + 4 * index, low);
  if (kind == BarKind::kMem64) {
    bars_[index + 1] = {kind, size, prefetchable, true};
    SetDword(kBar0 + 4 * (index + 1), 0);
  }
}

uint32_t PciConfigSpace::Dword(uint32_t reg) const {
  uint32_t v;
  memcpy(&v, &bytes_[reg & ~3u], 4);
  return v;
}

void PciConfigSpace::SetDword(uint32_t reg, uint32_t v) { memcpy(&bytes_[reg & ~3u], &v, 4); }

uint16_t PciConfigSpace::command() const {
  uint16_t v;
  memcpy(&v, &bytes_[kCommand], 2);
  return v;
}

uint64_t PciConfigSpace::BarAddress(int index) const {
  if (index < 0 || index > 5 || bars_[index].size == 0 || bars_[index].high_half) return 0;
  const Bar& b = bars_[index];
  uint32_t low = Dword(kBar0 + 4 * index);
  if (b.kind == BarKind::kIo) return low & ~0x3u;
  uint64_t addr = low & ~0xfu;
  if (b.kind == BarKind::kMem64) addr |= uint64_t{Dword(kBar0 + 4 * (index + 1))} << 32;
  return addr;
}

uint32_t PciConfigSpace::Read(uint32_t reg, uint32_t size) const {
  if (size == 0 || size > 4 || reg >= kSize || reg + size > kSize) return 0xffffffff;
  uint32_t v = 0;
  memcpy(&v, &bytes_[reg], size);
  return v;
}

void PciConfigSpace::WriteBarDword(int index, uint32_t value) {
  const Bar& b = bars_[index];
  uint32_t reg = kBar0 + 4 * index;
  if (b.size == 0) return;  // unimplemented BARs read 0 and ignore writes
  int owner = b.high_half ? index - 1 : index;
  uint64_t before = BarAddress(owner);
  if (b.high_half) {
    SetDword(reg, value & static_cast<uint32_t>(~(b.size - 1) >> 32));
  } else {
    uint32_t flags = Dword(reg) & (b.kind == BarKind::kIo ? 0x3u : 0xfu);
    uint32_t mask = static_cast<uint32_t>(~(b.size - 1));
    SetDword(reg, (value & mask & (b.kind == BarKind::kIo ? ~0x3u : ~0xfu)) | flags);
  }
  uint64_t after = BarAddress(owner);
  if (after != before && bar_moved_) bar_moved_(owner, after);
}

void PciConfigSpace::WriteByte(uint32_t reg, uint8_t value) {
  if (reg == kStatus + 1) {
    bytes_[reg] &= ~(value & 0xf9);  // error bits: write 1 to clear
    return;
  }
  bytes_[reg] = (bytes_[reg] & ~writable_[reg]) | (value & writable_[reg]);
}

void PciConfigSpace::Restore(const std::array<uint8_t, kSize>& saved) {
  for (uint32_t reg = 0; reg < kSize; ++reg) {
    if (reg >= kBar0 && reg < kBar0 + 24) continue;
    if (reg == kStatus || reg == kStatus + 1) continue;
    bytes_[reg] = (bytes_[reg] & ~writable_[reg]) | (saved[reg] & writable_[reg]);
  }
  for (int i = 0; i < 6; ++i) {
    uint32_t dword;
    memcpy(&dword, &saved[kBar0 + 4 * i], 4);
    WriteBarDword(i, dword);
  }
}

void PciConfigSpace::Write(uint32_t reg, uint32_t size, uint32_t value) {
  if (size == 0 || size > 4 || reg >= kSize || reg + size > kSize) return;
  if (reg >= kBar0 && reg < kBar0 + 24) {
    // BARs change as whole dwords: merge a partial write into the current value.
    uint32_t aligned = reg & ~3u;
    uint32_t current = Dword(aligned);
    uint32_t shift = 8 * (reg - aligned);
    uint32_t mask = (size == 4 ? 0xffffffffu : ((1u << (8 * size)) - 1)) << shift;
    WriteBarDword((aligned - kBar0) / 4, (current & ~mask) | ((value << shift) & mask));
    return;
  }
  for (uint32_t i = 0; i < size; ++i) WriteByte(reg + i, (value >> (8 * i)) & 0xff);
}

}  // namespace hv::devproc
