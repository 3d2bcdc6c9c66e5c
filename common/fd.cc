#include "common/fd.h"

#include <fcntl.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace hv {

absl::Status ErrnoStatus(const std::string& what, int err) {
  std::string message = absl::StrCat(what, ": ", strerror(err));
  switch (err) {
    case ENOENT:
      return absl::NotFoundError(message);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(message);
    case EINVAL:
      return absl::InvalidArgumentError(message);
    case EEXIST:
      return absl::AlreadyExistsError(message);
    case ENOMEM:
    case ENOSPC:
    case EMFILE:
      return absl::ResourceExhaustedError(message);
    default:
      return absl::InternalError(message);
  }
}

absl::Status ErrnoStatus(const std::string& what) { return ErrnoStatus(what, errno); }

absl::Status ReadFull(int fd, void* buf, size_t len) {
  auto* p = static_cast<char*>(buf);
  while (len > 0) {
    ssize_t n = read(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus("read");
    if (n == 0) return absl::OutOfRangeError("read: unexpected end of file");
    p += n;
    len -= n;
  }
  return absl::OkStatus();
}

absl::Status WriteFull(int fd, const void* buf, size_t len) {
  const auto* p = static_cast<const char*>(buf);
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus("write");
    p += n;
    len -= n;
  }
  return absl::OkStatus();
}

absl::Status PreadFull(int fd, void* buf, size_t len, off_t offset) {
  auto* p = static_cast<char*>(buf);
  while (len > 0) {
    ssize_t n = pread(fd, p, len, offset);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus("pread");
    if (n == 0) return absl::OutOfRangeError("pread: unexpected end of file");
    p += n;
    len -= n;
    offset += n;
  }
  return absl::OkStatus();
}

absl::Status SetCloexec(int fd, bool on) {
  int flags = fcntl(fd, F_GETFD);
  if (flags < 0) return ErrnoStatus("fcntl(F_GETFD)");
  flags = on ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC);
  if (fcntl(fd, F_SETFD, flags) < 0) return ErrnoStatus("fcntl(F_SETFD)");
  return absl::OkStatus();
}

void SignalEventFd(int fd) {
  uint64_t one = 1;
  ssize_t ignored = write(fd, &one, sizeof(one));
  (void)ignored;
}

absl::StatusOr<int> ParseInheritedFd(const std::string& text, const std::string& what) {
  int fd;
  if (!absl::SimpleAtoi(text, &fd) || fd < 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": not a file descriptor: '", text, "'"));
  }
  if (fcntl(fd, F_GETFD) < 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": fd ", fd, " is not open"));
  }
  return fd;
}

}  // namespace hv
