# The VM description. A VM is a constant of type Vm in a text file that imports
# this schema:
#
#   using import "/hv/vm.capnp".Vm;
#   const vm :Vm = ( name = "demo", cpus = 2, memory = "1G", ... );
#
# `hvbroker up FILE` parses it with capnp::SchemaParser. Each field names the bhyve
# option it stands for; bhyve's `-s slot[:func],emulation[,conf]` becomes a Device.
@0xe9d5a60865a1a1be;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("hv::schema");

struct Vm {
  name @0 :Text;                 # the VM's name (bhyve's vmname); [A-Za-z0-9._-]{1,64}
  cpus @1 :UInt16 = 1;           # -c N
  sockets @2 :UInt16 = 0;        # -c sockets=S,cores=C,threads=T (0: derived from cpus)
  cores @3 :UInt16 = 0;
  threads @4 :UInt16 = 0;
  memory @5 :Text = "256M";      # -m size[K|k|M|m|G|g|T|t]; a plain number is MiB, as in bhyve
  boot @6 :Boot;                 # what to load (bhyveload / -l bootrom)
  devices @7 :List(Device);      # -s slot[:func],emulation[,conf]
  lpc @8 :Lpc;                   # -l com1,... : the lpc device's ISA devices
  acpi @9 :Bool = true;          # -A: generate ACPI tables
  yieldOnHlt @10 :Bool = true;   # -H
  ignoreUnknownMsrs @11 :Bool = false;  # -w
  rtcUtc @12 :Bool = true;       # -u: RTC keeps UTC
  forceMsi @13 :Bool = false;    # -W
  x2apic @14 :Bool = false;      # -x
  exitOnPause @15 :Bool = false; # -P
  wireMemory @16 :Bool = false;  # -S
  mptable @17 :Bool = true;      # -Y turns it off
  uuid @18 :Text;                # -U
  cpuPins @19 :List(CpuPin);     # -p vcpu:hostcpu
  destroyOnPowerOff @20 :Bool = true;  # -D
}

struct Boot {
  kernel @0 :Text;     # a PVH ELF or a Linux bzImage; relative to the VM file's directory
  initrd @1 :Text;
  cmdline @2 :Text;
  bootrom @3 :Text;    # -l bootrom,FILE (firmware); not yet supported
}

struct Device {
  slot @0 :UInt8;       # PCI slot 0..31
  function @1 :UInt8;   # PCI function 0..7
  emulation @2 :Text;   # bhyve's emulation name: hostbridge, lpc, virtio-blk, ...
  path @3 :Text;        # the backend: disk image, tap device, ...; relative to the VM file
  options @4 :List(Option);  # the rest of bhyve's conf: "ro", "sectorsize=512", ...
  name @5 :Text;        # how status/restart/debug name it; default "<emulation>@<slot>.<func>"
  sandbox @6 :Bool = true;   # false: --no-sandbox for this device (debugging only)
  ports @7 :List(AhciPort);  # ahci: one entry per port, port i = entry i
                             # (-s 4,ahci,hd:/a.img,cd:/b.iso); ahci-hd / ahci-cd
                             # use `path` and `options` for their single port 0
  restart @8 :RestartPolicy;  # when its process dies (hv's own; bhyve has none)
}

# What the broker does when a device's process dies while the VM runs: start a
# successor that resumes from the device's saved state, or end the VM.
struct RestartPolicy {
  mode @0 :RestartMode = never;
  limit @1 :UInt32 = 5;          # at most this many restarts ...
  windowSeconds @2 :UInt32 = 60; # ... within this many seconds; one more ends the VM
  backoffMs @3 :UInt32 = 0;      # wait before a successor, doubled per restart in the window
}

enum RestartMode {
  never @0;      # a death ends the VM (exit status 4)
  onFailure @1;  # restart after a signal (crash, SIGKILL, seccomp) or a non-zero exit
  always @2;     # restart after any unexpected end, even exit status 0
}

# One port of an AHCI controller (bhyve's pci.B.S.F.port.N.type/path).
struct AhciPort {
  type @0 :AhciPortType;
  path @1 :Text;             # disk image / ISO; relative to the VM file
  options @2 :List(Option);  # nocache, direct, ro, sectorsize=, ser=, nmrr=, ...
}

enum AhciPortType {
  hd @0;
  cd @1;
}

struct Option {
  key @0 :Text;
  value @1 :Text;       # empty for flags such as "ro"
}

struct Lpc {
  com1 @0 :Serial;
  com2 @1 :Serial;
  com3 @2 :Serial;
  com4 @3 :Serial;
}

struct Serial {
  union {
    none @0 :Void;      # not present
    stdio @1 :Void;     # -l com1,stdio: the broker's stdin and stdout
    socket @2 :Text;    # -l com1,socket,PATH: a Unix socket a client connects to
  }
}

struct CpuPin {
  vcpu @0 :UInt16;
  hostCpu @1 :UInt16;
}
