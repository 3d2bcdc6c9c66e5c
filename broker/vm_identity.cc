#include "broker/vm_identity.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace hv::broker {

absl::StatusOr<UidRange> ParseUidRange(const std::string& text) {
  std::vector<std::string> parts = absl::StrSplit(text, ':');
  UidRange range;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &range.first) ||
      !absl::SimpleAtoi(parts[1], &range.count) || range.first == 0 || range.count == 0 ||
      uint64_t{range.first} + range.count > 0xfffffffeu) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--uid-range ", text, ": want FIRST:COUNT, uids 1 to 4294967294 (e.g. 2100000000:10000)"));
  }
  return range;
}

std::string UidLockDir() {
  if (const char* dir = getenv("HV_UID_LOCK_DIR"); dir != nullptr && dir[0] != '\0') return dir;
  return "/run/hv-uids";
}

absl::StatusOr<VmIdentity> ClaimVmIdentity(const UidRange& range) {
  VmIdentity identity;
  if (getuid() != 0) {
    identity.uid = getuid();
    identity.gid = getgid();
    return identity;
  }
  std::string dir = UidLockDir();
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return ErrnoStatus("mkdir " + dir);
  struct stat st;
  if (lstat(dir.c_str(), &st) != 0) return ErrnoStatus("stat " + dir);
  if (!S_ISDIR(st.st_mode) || st.st_uid != 0 || (st.st_mode & 022) != 0) {
    return absl::PermissionDeniedError(
        absl::StrCat(dir, " must be a directory owned by root that only root can write"));
  }
  for (uint32_t i = 0; i < range.count; ++i) {
    uint32_t uid = range.first + i;
    std::string path = absl::StrCat(dir, "/", uid, ".lock");
    Fd fd(open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!fd.valid()) return ErrnoStatus("open " + path);
    if (flock(fd.get(), LOCK_EX | LOCK_NB) != 0) continue;  // another VM's
    identity.uid = uid;
    identity.gid = uid;
    identity.lock = std::move(fd);
    return identity;
  }
  return absl::ResourceExhaustedError(absl::StrCat(
      "every uid of ", range.first, ":", range.count, " is in use by a running VM (--uid-range)"));
}

}  // namespace hv::broker
