#include "common/process_policy.h"

#include <errno.h>
#include <linux/futex.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace hv::sandbox {

SyscallPolicy BaseProcessPolicy(std::string kind) {
  SyscallPolicy p(std::move(kind));
  // I/O on the fds the broker handed over: eventfds (doorbells, irqfds, ZeroMQ's
  // mailboxes), the console, the log on stderr, the SIGSYS report pipe.
  p.Allow(SYS_read, "eventfd counters, the console, ZeroMQ's mailbox");
  p.Allow(SYS_write, "eventfd doorbells and interrupts, the console, the log");
  p.Allow(SYS_close, "fds this process created itself (timers, accepted clients)");
  // Event loops.
  p.Allow(SYS_poll, "zmq::poll in the main loops");
  p.Allow(SYS_epoll_wait, "ZeroMQ's I/O thread");
  p.Allow(SYS_epoll_ctl, "ZeroMQ's I/O thread watches its sockets");
  // The control socket, already connected to the broker before sealing.
  p.Allow(SYS_recvfrom, "ZeroMQ reads the connected control socket");
  p.Allow(SYS_sendto, "ZeroMQ writes the connected control socket");
  // Threads and their synchronisation.
  p.Allow(SYS_futex, "mutexes, condition variables, exit-channel waits");
  p.AllowIf(SYS_clone, {SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD)},
            "threads only (worker pools, vCPUs): never a new process");
  p.Fail(SYS_clone3, ENOSYS,
         "glibc tries clone3 first; its flags are in memory a filter cannot read, so "
         "make glibc fall back to clone");
  p.Allow(SYS_set_robust_list, "glibc, at the start of every thread");
  p.Allow(SYS_rseq, "glibc, at the start of every thread");
  p.Allow(SYS_exit, "a thread ends");
  p.Allow(SYS_exit_group, "the process ends");
  p.Allow(SYS_rt_sigprocmask, "glibc blocks signals around thread creation");
  p.Allow(SYS_rt_sigreturn, "return from a signal handler (the vCPU kick)");
  p.Allow(SYS_sched_yield, "spin-then-sleep waits");
  p.Allow(SYS_nanosleep, "short sleeps in waits");
  p.Allow(SYS_clock_nanosleep, "usleep in the exit channel's waits");
  p.AllowIf(SYS_madvise, {SCMP_A2(SCMP_CMP_EQ, MADV_DONTNEED)},
            "glibc returns freed heap and dead threads' stacks; no other advice");
  // Memory: never executable, so no code can be brought in.
  p.AllowIf(SYS_mmap, {SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0)},
            "malloc, thread stacks; PROT_EXEC refused");
  p.AllowIf(SYS_mprotect, {SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0)},
            "thread stack guard pages; PROT_EXEC refused");
  p.Allow(SYS_munmap, "free, thread exit");
  p.Allow(SYS_mremap, "realloc of large blocks");
  p.Allow(SYS_brk, "malloc's heap");
  // Time and identity.
  p.Allow(SYS_clock_gettime,
          "timestamps (RTC, PM timer, log): the vDSO falls back to it on an unstable TSC");
  p.Allow(SYS_getpid, "glibc's raise/abort");
  p.Allow(SYS_gettid, "glibc's raise/abort, thread ids");
  p.AllowIf(SYS_tgkill, {SCMP_A0(SCMP_CMP_EQ, static_cast<uint64_t>(getpid()))},
            "signals to this process's own threads only (vCPU kicks, abort)");
  p.AllowIf(SYS_prctl, {SCMP_A0(SCMP_CMP_EQ, PR_SET_NAME)},
            "threads name themselves (vcpu0, ...); no other prctl");
  p.Allow(SYS_restart_syscall, "a call interrupted by a signal resumes");
  // ZeroMQ's threads read their scheduling parameters when they start, which
  // can be after the seal; the threads block every signal, so a trap there
  // would kill the process without a report.
  p.Allow(SYS_sched_getparam, "ZeroMQ's threads start (pthread_getschedparam)");
  p.Allow(SYS_sched_getscheduler, "ZeroMQ's threads start (pthread_getschedparam)");
  p.AllowIf(SYS_sched_setscheduler, {SCMP_A1(SCMP_CMP_EQ, SCHED_OTHER)},
            "ZeroMQ's threads start: pthread_setschedparam back to the default policy");
  return p;
}

}  // namespace hv::sandbox
