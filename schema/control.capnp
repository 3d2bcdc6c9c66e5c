# The control socket of a running VM: `hvbroker ls|status|stop|console ...`
# talk to the VM's broker at ipc://<runtime dir>/<vm>/control (owner-only; the
# VM's own processes cannot reach it). A client sends one ControlRequest per
# ZeroMQ message and gets one ControlReply back.
@0xb5e1d7c0a4f3e291;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("hv::ctl");

struct ControlRequest {
  union {
    status @0 :Void;          # what runs: processes, pids, uptime, restarts, counters
    stop @1 :StopRequest;     # the ACPI power button, or destroy
    restart @2 :Text;         # this device: a successor process resumes from its state
    debug @3 :Text;           # this device: a successor WITHOUT its sandbox, stopped
                              # (SIGSTOP) before it serves, for gdb to attach
    trace @4 :Text;           # this device's messages, live: replies follow with
                              # `trace` lines while the client repeats this request
                              # at least every 3 s
  }
}

struct StopRequest {
  force @0 :Bool;   # destroy now (bhyvectl --destroy) instead of asking the guest
}

struct ControlReply {
  error @0 :Text;       # empty: the request was carried out
  message @1 :Text;     # for people: what happened
  status @2 :VmStatus;  # for `status`
  trace @3 :List(Text); # for `trace`: decoded messages to and from the device
}

struct VmStatus {
  name @0 :Text;
  state @1 :Text;             # "starting", "running", "stopping"
  brokerPid @2 :Int32;
  uptimeMs @3 :UInt64;        # since the broker started
  processes @4 :List(ProcessStatus);
  consoles @5 :List(Console);
  vmUid @6 :UInt32;           # the uid the VM's processes run as
}

struct ProcessStatus {
  name @0 :Text;        # "core" or the device's name
  kind @1 :Text;        # "hvcore", "lpc", "virtio-blk", "virtio-net"
  pid @2 :Int32;        # host pid; -1 when not running
  state @3 :Text;       # "starting", "running", "restarting", "exited"
  sandboxed @4 :Bool;
  uptimeMs @5 :UInt64;  # since this process was spawned
  restarts @6 :UInt32;  # successors started after it died
  counters @7 :List(Counter);
}

struct Counter {
  name @0 :Text;
  value @1 :UInt64;
}

# A COM port a client can attach to (`hvbroker console`).
struct Console {
  name @0 :Text;   # "com1"
  path @1 :Text;   # its Unix socket
}
