#include "common/device_state.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/fd.h"

namespace hv {
namespace {

// FNV-1a over 8-byte words: enough to tell a torn copy, and cheap enough to
// run on every save (a virtio device saves on every completion).
uint32_t Checksum(const char* data, size_t n) {
  uint64_t h = 14695981039346656037ull;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t word;
    memcpy(&word, data + i, 8);
    h = (h ^ word) * 1099511628211ull;
  }
  for (; i < n; ++i) h = (h ^ static_cast<uint8_t>(data[i])) * 1099511628211ull;
  h ^= n;
  return static_cast<uint32_t>(h ^ (h >> 32));
}

size_t CopyCapacity(size_t bytes) {
  return (bytes - sizeof(DeviceStateHeader)) / 2 - 8;  // minus each copy's length and checksum
}

}  // namespace

absl::Status InitDeviceStateRegion(int fd, size_t bytes) {
  if (ftruncate(fd, bytes) != 0) return ErrnoStatus("size the device state region");
  DeviceStateHeader header = {};
  header.magic = kDeviceStateMagic;
  header.layout = kDeviceStateLayout;
  header.copy_bytes = CopyCapacity(bytes);
  if (pwrite(fd, &header, sizeof(header), 0) != sizeof(header)) {
    return ErrnoStatus("write the device state header");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<DeviceStateRegion>> DeviceStateRegion::Map(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) return ErrnoStatus("fstat device state region");
  size_t bytes = st.st_size;
  if (bytes < sizeof(DeviceStateHeader) + 64) {
    return absl::InvalidArgumentError("device state region too small");
  }
  void* base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) return ErrnoStatus("mmap device state region");
  auto* header = static_cast<DeviceStateHeader*>(base);
  if (header->magic != kDeviceStateMagic || header->layout != kDeviceStateLayout ||
      header->copy_bytes != CopyCapacity(bytes)) {
    munmap(base, bytes);
    return absl::InvalidArgumentError("device state region: bad header");
  }
  return std::unique_ptr<DeviceStateRegion>(new DeviceStateRegion(base, bytes));
}

DeviceStateRegion::DeviceStateRegion(void* base, size_t bytes)
    : base_(base), bytes_(bytes), header_(static_cast<DeviceStateHeader*>(base)) {}

DeviceStateRegion::~DeviceStateRegion() { munmap(base_, bytes_); }

DeviceStateRegion::Copy* DeviceStateRegion::CopyAt(uint32_t index) const {
  size_t stride = sizeof(Copy) + header_->copy_bytes;
  return reinterpret_cast<Copy*>(static_cast<char*>(base_) + sizeof(DeviceStateHeader) +
                                 (index & 1) * stride);
}

std::string_view DeviceStateRegion::Load() const {
  if (header_->has_state.load(std::memory_order_acquire) == 0) return {};
  Copy* copy = CopyAt(header_->active.load(std::memory_order_acquire));
  uint32_t length = copy->length;
  if (length > header_->copy_bytes) return {};
  const char* data = reinterpret_cast<const char*>(copy + 1);
  if (Checksum(data, length) != copy->checksum) return {};
  return std::string_view(data, length);
}

absl::Status DeviceStateRegion::Store(std::string_view state) {
  if (state.size() > header_->copy_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("device state of ", state.size(),
                                                     " bytes exceeds the region's ",
                                                     header_->copy_bytes));
  }
  uint32_t next = header_->has_state.load(std::memory_order_relaxed) == 0
                      ? 0
                      : (header_->active.load(std::memory_order_relaxed) ^ 1);
  Copy* copy = CopyAt(next);
  memcpy(copy + 1, state.data(), state.size());
  copy->length = state.size();
  copy->checksum = Checksum(state.data(), state.size());
  header_->active.store(next, std::memory_order_release);
  header_->has_state.store(1, std::memory_order_release);
  header_->saves.fetch_add(1, std::memory_order_relaxed);
  return absl::OkStatus();
}

}  // namespace hv
