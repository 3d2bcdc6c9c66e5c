#include "devproc/lpc/seccomp_policy.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>

#include "common/process_policy.h"

namespace hv::lpc {

sandbox::SyscallPolicy LpcSyscallPolicy() {
  sandbox::SyscallPolicy p = sandbox::BaseProcessPolicy("lpc");
  // COM ports on a socket (bhyve's -l com1,socket,PATH): the broker listens, the
  // device accepts one client at a time on the inherited socket.
  p.Allow(SYS_accept4, "a console client connects to a COM port's socket");
  p.AllowIf(SYS_setsockopt,
            {SCMP_A1(SCMP_CMP_EQ, SOL_SOCKET), SCMP_A2(SCMP_CMP_EQ, SO_SNDTIMEO)},
            "a console client that stops reading delays output at most 100 ms a byte");
  p.AllowIf(SYS_fcntl, {SCMP_A1(SCMP_CMP_EQ, F_GETFL)}, "blocking mode of a console client");
  p.AllowIf(SYS_fcntl, {SCMP_A1(SCMP_CMP_EQ, F_SETFL)}, "blocking mode of a console client");
  // The RTC's update/alarm interrupts and the ACPI PM timer's overflow.
  p.Allow(SYS_timerfd_settime, "the RTC and PM timer deadlines");
  p.Allow(SYS_timerfd_create, "pvpanic waits a moment for the panic message");
  return p;
}

}  // namespace hv::lpc
