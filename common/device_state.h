// A device's state region: what a successor process needs to resume where a
// device process stopped (registers, queue positions, the exit channel's
// progress). The broker creates it (a memfd), keeps it across the device's
// deaths and hands the same region to each successor, like its other fds.
//
// Layout: a header, then two copies of the state. The device writes a new
// state into the copy that is not active and then flips `active`, so a process
// that dies in the middle of a save leaves the previous complete state behind.
// Each copy: the runtime's part (per vCPU ring: how far the device got and its
// last reply), then the device model's own bytes, versioned by the model.
//
// The successor trusts the region no more than it trusted its predecessor:
// lengths are checked, and the model validates (clamps) what it restores.
#ifndef HV_COMMON_DEVICE_STATE_H_
#define HV_COMMON_DEVICE_STATE_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <cstring>
#include <type_traits>

#include "absl/status/statusor.h"

namespace hv {

inline constexpr uint32_t kDeviceStateMagic = 0x68766473;  // "hvds"
inline constexpr uint32_t kDeviceStateLayout = 1;
inline constexpr size_t kDeviceStateBytes = 256 * 1024;

struct alignas(64) DeviceStateHeader {
  uint32_t magic;
  uint32_t layout;
  std::atomic<uint32_t> active;     // the complete copy: 0 or 1
  std::atomic<uint32_t> has_state;  // 0 until the first save
  std::atomic<uint64_t> saves;      // how many saves so far (all processes)
  uint32_t copy_bytes;              // capacity of each copy
  uint32_t pad[9];
};

// Initialises a freshly created region of `bytes` (the broker).
absl::Status InitDeviceStateRegion(int fd, size_t bytes);

// A mapped region (a device process, or the broker reading its counters).
class DeviceStateRegion {
 public:
  static absl::StatusOr<std::unique_ptr<DeviceStateRegion>> Map(int fd);
  ~DeviceStateRegion();

  // The last complete state, or empty when none was saved yet.
  std::string_view Load() const;
  // Saves `state` (at most capacity() bytes) as the new complete state.
  absl::Status Store(std::string_view state);
  size_t capacity() const { return header_->copy_bytes; }
  uint64_t saves() const { return header_->saves.load(std::memory_order_relaxed); }

 private:
  DeviceStateRegion(void* base, size_t bytes);
  struct Copy {
    uint32_t length;
    uint32_t checksum;  // of the bytes: a torn copy is never loaded as complete
  };
  Copy* CopyAt(uint32_t index) const;

  void* base_;
  size_t bytes_;
  DeviceStateHeader* header_;
};

// Appending and reading plain values in a state blob.
class StateWriter {
 public:
  explicit StateWriter(std::string* out) : out_(out) {}
  template <typename T>
  void Put(const T& value) {
    static_assert(std::is_trivially_copyable<T>::value, "state holds plain values");
    out_->append(reinterpret_cast<const char*>(&value), sizeof(T));
  }

 private:
  std::string* out_;
};

class StateReader {
 public:
  explicit StateReader(std::string_view in) : in_(in) {}
  // False (and `value` untouched) when the blob is too short.
  template <typename T>
  bool Get(T* value) {
    static_assert(std::is_trivially_copyable<T>::value, "state holds plain values");
    if (in_.size() < sizeof(T)) return false;
    memcpy(value, in_.data(), sizeof(T));
    in_.remove_prefix(sizeof(T));
    return true;
  }
  std::string_view rest() const { return in_; }

 private:
  std::string_view in_;
};

}  // namespace hv

#endif  // HV_COMMON_DEVICE_STATE_H_
