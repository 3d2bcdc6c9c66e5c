# Messages between hvbroker, hvcore and the device processes.
#
# Control messages travel over ZeroMQ (a DEALER per process, the broker's ROUTER)
# as one Message each. Register accesses forwarded from a vCPU (the hot path) do
# not: they are IoRequest structs in a per-vCPU shared-memory ring (common/exit_channel.h).
@0xc950c0a93622fd3b;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("hv::msg");

using Vm = import "vm.capnp";

enum AddressSpace {
  pio @0;        # x86 port I/O
  mmio @1;       # memory-mapped I/O
  pciConfig @2;  # PCI configuration space of bus 0: address = slot << 15 | function << 12 | register
}

# A guest-physical or port range a device owns. The core dispatches accesses in it
# to that device's exit channel.
struct Range {
  space @0 :AddressSpace;
  base @1 :UInt64;
  length @2 :UInt64;
  postedWrites @3 :Bool = true;  # a write need not wait for the device
}

# A region of guest RAM: guest-physical address, size, offset in the RAM memfd.
struct RamRegion {
  gpa @0 :UInt64;
  size @1 :UInt64;
  offset @2 :UInt64;
}

# One forwarded register access: the layout of every exit-channel slot.
struct IoRequest {
  seq @0 :UInt32;       # per-channel sequence number; a read's reply carries it back
  space @1 :AddressSpace;
  isWrite @2 :Bool;
  size @3 :UInt8;       # 1, 2, 4 or 8 bytes
  addr @4 :UInt64;
  data @5 :UInt64;      # the written value (writes)
}

enum ExitReason {
  powerOff @0;     # the guest powered off
  reset @1;        # the guest asked for a reset
  tripleFault @2;  # the vCPU shut down (triple fault)
  error @3;        # hv failed (internal error, unhandled exit)
  stopped @4;      # stopped by the user
  panic @5;        # the guest kernel panicked (pvpanic)
}

enum BarKind {
  io @0;
  mem32 @1;
  mem64 @2;
}

struct BarInfo {
  index @0 :UInt8;
  kind @1 :BarKind;
  size @2 :UInt64;
}

# What the core must know of a PCI function to route its BARs, its MSI-X vectors
# and its queue notifications without asking the device.
struct PciFunctionInfo {
  bars @0 :List(BarInfo);
  msixBar @1 :UInt8;
  msixTableOffset @2 :UInt32;
  msixVectors @3 :UInt16;       # 0: no MSI-X
  notifyBar @4 :UInt8;
  notifyOffset @5 :UInt32;
  notifyStride @6 :UInt32;
  notifyQueues @7 :UInt16;      # 0: no notification doorbells
  msiCap @8 :UInt8;             # config-space offset of a 64-bit MSI capability (0: none)
}

struct DeviceReady {
  ranges @0 :List(Range);       # fixed ranges (ISA ports, its config space)
  hasPci @1 :Bool;
  pci @2 :PciFunctionInfo;
}

struct DeviceInfo {
  name @0 :Text;
  ranges @1 :List(Range);
  channelFd @2 :Int32;    # the device's exit-channel memfd, as inherited by the core
  doorbellFd @3 :Int32;   # its doorbell eventfd
  hasPci @4 :Bool;
  slot @5 :UInt8;
  function @6 :UInt8;
  pci @7 :PciFunctionInfo;
  msixFds @8 :List(Int32);    # one eventfd per MSI-X vector: the device writes, KVM injects
  notifyFds @9 :List(Int32);  # one eventfd per queue: KVM writes on the guest's notify
  msiFd @10 :Int32 = -1;      # MSI (single message): the device writes, KVM injects
}

struct Message {
  union {
    # process -> broker
    hello @0 :Hello;              # first message of every child
    deviceReady @1 :DeviceReady;  # a device has configured itself
    coreReady @2 :Void;           # the core has built the VM and loaded the guest
    guestExit @3 :GuestExit;      # the guest (or a vCPU) ended the VM
    # broker -> process
    configureDevice @4 :ConfigureDevice;
    configureCore @5 :ConfigureCore;
    start @6 :Void;               # run the vCPUs
    shutdown @7 :Void;            # stop and exit
    deviceControl @8 :DeviceControl;  # a request from the VM's control socket
    # device -> broker
    trace @9 :List(Text);         # accesses it handled while traced, decoded
  }
}

# What the broker asks of a running device on behalf of `hvbroker` commands.
struct DeviceControl {
  action @0 :Action;
  enum Action {
    powerButton @0;   # lpc: press the ACPI power button (`hvbroker stop`)
    traceOn @1;       # report each access it handles (`hvbroker trace`)
    traceOff @2;
  }
}

struct Hello {
  role @0 :Text;   # "core" or the device's name
  pid @1 :Int32;
}

struct GuestExit {
  reason @0 :ExitReason;
  status @1 :UInt32;   # the guest's power-off status (debug-exit value)
  detail @2 :Text;     # for people: which vCPU, which exit, registers
}

# A file descriptor the receiver inherited at spawn, and what it is for.
struct NamedFd {
  name @0 :Text;    # e.g. "com1.in", "com1.out", "disk"
  fd @1 :Int32;
}

struct ConfigureDevice {
  device @0 :Vm.Device;
  lpc @1 :Vm.Lpc;           # for the lpc device
  ram @2 :List(RamRegion);
  ramSize @3 :UInt64;       # the memfd's size
  vcpus @4 :UInt16;
  ramFd @5 :Int32;          # guest RAM memfd (inherited)
  channelFd @6 :Int32;      # this device's exit-channel memfd (inherited)
  doorbellFd @7 :Int32;     # its doorbell eventfd (inherited)
  fds @8 :List(NamedFd);    # backend fds (inherited)
  rtcUtc @9 :Bool = true;   # the VM's RTC keeps UTC (bhyve -u); else local time
  multifunction @10 :Bool;  # other functions share this device's slot (header type bit 7)
  vmName @11 :Text;         # the VM's name (virtio-net derives its default MAC from it)
  stateFd @12 :Int32 = -1;  # its state region (common/device_state.h), kept by the broker
  incarnation @13 :UInt32;  # 0: the first process of this device; n: the n-th successor
}

# An interrupt line a device raises by writing an eventfd (KVM irqfd).
struct IrqLine {
  gsi @0 :UInt32;
  fd @1 :Int32;             # inherited eventfd
  resampleFd @2 :Int32 = -1; # level-triggered: KVM signals it at EOI
}

struct ConfigureCore {
  vm @0 :Vm.Vm;
  ram @1 :List(RamRegion);
  ramSize @2 :UInt64;
  kernelFd @3 :Int32;       # inherited, opened by the broker
  initrdFd @4 :Int32 = -1;
  devices @5 :List(DeviceInfo);
  ramFd @6 :Int32;          # guest RAM memfd (inherited)
  irqLines @7 :List(IrqLine);
}
