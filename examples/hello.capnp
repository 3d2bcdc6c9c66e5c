# The smallest VM: hv's test guest program prints a line on COM1 and powers off.
#   bazel build //...            (builds hvbroker, hvcore, the devices and the guest)
#   .bazel/bin/broker/hvbroker up examples/hello.capnp
using import "/hv/vm.capnp".Vm;

const vm :Vm = (
  name = "hello",
  cpus = 1,
  memory = "64M",
  boot = (kernel = "../.bazel/bin/guest/hello.elf"),
  devices = [
    (slot = 0, emulation = "hostbridge"),
    (slot = 31, emulation = "lpc"),
  ],
  lpc = (com1 = (stdio = void)),
);
