#include "devproc/virtio_net/seccomp_policy.h"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>

#include <cerrno>

#include "common/process_policy.h"

namespace hv::virtio_net {

sandbox::SyscallPolicy VirtioNetSyscallPolicy() {
  sandbox::SyscallPolicy p = sandbox::BaseProcessPolicy("virtio-net");
  // The tap: frames in and out of the fds the broker opened.
  p.Allow(SYS_writev, "a frame to the tap: virtio-net header and payload from guest RAM");
  p.AllowIoctl(TUNSETOFFLOAD, "offloads the guest driver negotiated (checksum, TSO)");
  p.AllowIoctl(TUNSETVNETHDRSZ, "the tap's vnet header is virtio 1.x's 12 bytes");
  p.AllowIoctl(TUNSETQUEUE, "queue pairs the driver turns on or off (the tap is the VM's uid)");
  p.AllowIf(SYS_fcntl, {SCMP_A1(SCMP_CMP_EQ, F_GETFL)}, "O_NONBLOCK on backend fds and sockets");
  p.AllowIf(SYS_fcntl, {SCMP_A1(SCMP_CMP_EQ, F_SETFL)}, "O_NONBLOCK on backend fds and sockets");
  // User-mode networking: libslirp makes the guest's TCP/UDP/ICMP traffic with
  // ordinary sockets of this process, in the host's network namespace.
  p.AllowIf(SYS_socket, {SCMP_A0(SCMP_CMP_EQ, AF_INET)}, "libslirp: the guest's IPv4 flows");
  p.AllowIf(SYS_socket, {SCMP_A0(SCMP_CMP_EQ, AF_INET6)}, "libslirp: the guest's IPv6 flows");
  p.Allow(SYS_connect, "libslirp: a guest's outgoing TCP connection or UDP flow");
  p.Allow(SYS_bind, "libslirp: UDP flows and port forwards");
  p.Allow(SYS_listen, "libslirp: port forwards (hostfwd)");
  p.Allow(SYS_accept, "libslirp: a host connection to a forwarded port");
  p.Allow(SYS_accept4, "libslirp: a host connection to a forwarded port");
  p.Allow(SYS_getsockname, "libslirp: local addresses of its sockets");
  p.Allow(SYS_getpeername, "libslirp: the peer of an accepted connection");
  p.Allow(SYS_setsockopt, "libslirp: SO_REUSEADDR, TCP_NODELAY, buffer sizes");
  p.Allow(SYS_getsockopt, "libslirp: SO_ERROR of a connecting socket");
  p.Allow(SYS_shutdown, "libslirp: half-closes a guest's TCP connection");
  p.Allow(SYS_sendmsg, "frames between the slirp thread and the device thread; libslirp");
  p.Allow(SYS_recvmsg, "libslirp");
  p.AllowIoctl(FIONREAD, "libslirp: the size of a waiting UDP datagram");
  p.AllowIoctl(FIONBIO, "libslirp: non-blocking sockets");
  // libslirp reads /etc/resolv.conf (and stats it to see it change) to forward
  // the guest's DNS queries. The sandbox root is a read-only tmpfs holding only
  // a copy of that file (Sandbox::CarryFile); opens for reading only.
  p.AllowIf(SYS_openat,
            {SCMP_A2(SCMP_CMP_MASKED_EQ, O_ACCMODE | O_CREAT | O_TRUNC | O_APPEND, O_RDONLY)},
            "libslirp reads /etc/resolv.conf (a read-only copy in the sandbox root)");
  p.Allow(SYS_newfstatat, "libslirp stats /etc/resolv.conf to see whether it changed");
  p.Allow(SYS_stat, "libslirp stats /etc/resolv.conf to see whether it changed");
  return p;
}

}  // namespace hv::virtio_net
