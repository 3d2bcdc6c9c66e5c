# The default VM: Debian's 6.1 kernel with a busybox initramfs, its console on
# this terminal, a NIC in user mode (bhyve: -c 2 -m 512M -s 0,hostbridge
# -s 2,virtio-net,slirp -s 31,lpc -l com1,stdio). In the guest, `udhcpc -i eth0`
# gets 10.0.2.15; the host is 10.0.2.2 (its 127.0.0.1 included).
# The images come from tools/guest-images; tools/up links them at .images/.
using import "/hv/vm.capnp".Vm;

const vm :Vm = (
  name = "linux",
  cpus = 2,
  memory = "512M",
  boot = (
    kernel = "../.images/vmlinuz",
    initrd = "../.images/guest-initramfs.cpio.gz",
    cmdline = "console=ttyS0 panic=-1",
  ),
  devices = [
    (slot = 0, emulation = "hostbridge"),
    (slot = 2, emulation = "virtio-net", path = "user"),
    (slot = 31, emulation = "lpc"),
  ],
  lpc = (com1 = (stdio = void)),
);
