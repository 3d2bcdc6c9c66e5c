// An owned file descriptor, and small helpers around raw fds.
#ifndef HV_COMMON_FD_H_
#define HV_COMMON_FD_H_

#include <unistd.h>

#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace hv {

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) Reset(std::exchange(other.fd_, -1));
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { Reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int Release() { return std::exchange(fd_, -1); }
  void Reset(int fd = -1) {
    if (fd_ >= 0) close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

// absl::Status from errno, with what was being done: "open /x: No such file or directory".
absl::Status ErrnoStatus(const std::string& what, int err);
absl::Status ErrnoStatus(const std::string& what);

// Reads/writes all of buf or fails (EINTR retried).
absl::Status ReadFull(int fd, void* buf, size_t len);
absl::Status WriteFull(int fd, const void* buf, size_t len);
absl::Status PreadFull(int fd, void* buf, size_t len, off_t offset);

// Clears or sets FD_CLOEXEC: fds a child must inherit have it cleared.
absl::Status SetCloexec(int fd, bool on);

// Adds 1 to an eventfd's counter: a doorbell, an irqfd, a completion. A full
// counter (EAGAIN) already means "signalled", so errors are ignored.
void SignalEventFd(int fd);

// Parses a decimal fd number handed over on a command line and checks it is open.
absl::StatusOr<int> ParseInheritedFd(const std::string& text, const std::string& what);

}  // namespace hv

#endif  // HV_COMMON_FD_H_
