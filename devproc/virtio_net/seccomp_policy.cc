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
  // libslirp re-reads /etc/resolv.conf for DNS forwarding; the sandbox has no
  // files: fail the open (it then falls back to its defaults), never trap.
  p.Fail(SYS_openat, ENOENT, "libslirp's /etc/resolv.conf: the sandbox has no files");
  p.Fail(SYS_newfstatat, ENOENT, "libslirp stats /etc/resolv.conf: the sandbox has no files");
  p.Fail(SYS_stat, ENOENT, "libslirp stats /etc/resolv.conf: the sandbox has no files");
  return p;
}

}  // namespace hv::virtio_net
