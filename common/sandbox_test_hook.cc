// Linked only into test builds of the hv processes (the `*_testhooks` binaries):
// after the sandbox is sealed, HV_TEST_FORBIDDEN_SYSCALL=NAME:CALL makes the
// process named NAME ("lpc", "core", "vda"...) make the forbidden call CALL,
// so that a test can watch it die by SIGSYS and the broker name the call.
// CALL: "openat" (of /etc/passwd), "openat-write" (of /etc/resolv.conf, for
// writing) or "execve" (of /bin/sh).
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "common/log.h"
#include "common/sandbox.h"

namespace hv::sandbox {

void AfterSealTestHook(const std::string& name) {
  const char* request = getenv("HV_TEST_FORBIDDEN_SYSCALL");
  if (request == nullptr) return;
  std::string text(request);
  size_t colon = text.find(':');
  if (colon == std::string::npos || text.substr(0, colon) != name) return;
  std::string call = text.substr(colon + 1);
  HV_WARN("test hook: making the forbidden call %s", call.c_str());
  if (call == "openat") {
    syscall(SYS_openat, AT_FDCWD, "/etc/passwd", O_RDONLY);
  } else if (call == "openat-write") {
    syscall(SYS_openat, AT_FDCWD, "/etc/resolv.conf", O_WRONLY | O_TRUNC);
  } else if (call == "execve") {
    char* argv[] = {const_cast<char*>("/bin/sh"), nullptr};
    syscall(SYS_execve, "/bin/sh", argv, environ);
  }
  HV_ERROR("test hook: the forbidden call %s returned", call.c_str());
}

}  // namespace hv::sandbox
