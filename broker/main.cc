// hvbroker: runs VMs described in Cap'n Proto files, one process per device.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "broker/config.h"
#include "broker/vm_runner.h"
#include "common/log.h"

namespace {

constexpr char kUsage[] = R"(usage: hvbroker COMMAND [ARGS]

Commands:
  up FILE.capnp     Start the VM described in FILE and run it in the foreground
                    until it ends. The guest's console (a COM port with the stdio
                    backend) is this terminal; Ctrl-C stops the VM.
  check FILE.capnp  Parse and validate FILE, print what would run, and exit.
  help              This text.

The VM file is a Cap'n Proto constant (see schema/vm.capnp and examples/):
  using import "/hv/vm.capnp".Vm;
  const vm :Vm = (name = "hello", memory = "64M",
                  boot = (kernel = "hello.elf"),
                  devices = [(slot = 31, emulation = "lpc")],
                  lpc = (com1 = (stdio = void)));

Processes: hvbroker starts hvcore (the only holder of /dev/kvm) and one process
per device (today: lpc, which has the COM ports and the debug exit port 0xf4).

Exit status of `up`:
  0  the guest powered off (or wrote 0 to the debug exit port 0xf4)
  1  the VM could not be started (bad file, missing kernel, no KVM, ...)
  2  the guest asked for a reset
  3  a vCPU triple-faulted
  4  hvcore or a device process died while the VM ran (the message names it)
  5  stopped by SIGINT or SIGTERM
  6  the guest wrote a non-zero status to the debug exit port 0xf4
  7  hv failed while running (KVM internal error, unhandled exit)
  8  the guest kernel panicked (pvpanic); the message shows its last console lines

Environment:
  HV_LOG=debug        more messages on stderr
  HV_RUNTIME_DIR=DIR  where VMs keep their control sockets
                      (default $XDG_RUNTIME_DIR/hv, /run/hv for root, else /tmp/hv-UID)
  HV_LIBEXEC_DIR=DIR  where hvcore and the device executables are
)";

int Usage(FILE* out, int code) {
  fputs(kUsage, out);
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  hv::SetLogTag("hvbroker");
  hv::InitLogLevelFromEnv();
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) return Usage(stderr, 2);
  const std::string& command = args[0];
  if (command == "help" || command == "--help" || command == "-h") return Usage(stdout, 0);
  if (command == "up" || command == "check") {
    if (args.size() != 2 || args[1] == "--help") {
      fprintf(stderr, "usage: hvbroker %s FILE.capnp\n", command.c_str());
      return args.size() == 2 ? 0 : 2;
    }
    auto config = hv::broker::LoadVmConfig(args[1]);
    if (!config.ok()) {
      fprintf(stderr, "%s\n", std::string(config.status().message()).c_str());
      return hv::broker::kExitStartFailed;
    }
    if (command == "check") {
      auto vm = config->vm();
      printf("%s: VM '%s', %u vCPU(s), %llu MiB, kernel %s\n", args[1].c_str(),
             vm.getName().cStr(), vm.getCpus(),
             static_cast<unsigned long long>(config->memory_bytes >> 20),
             config->kernel_path.c_str());
      printf("  process hvcore\n");
      for (const auto& p : config->processes) printf("  process %s\n", p.name.c_str());
      return 0;
    }
    return hv::broker::RunVm(std::move(*config), hv::broker::RunOptions{});
  }
  fprintf(stderr, "hvbroker: unknown command '%s'\n\n", command.c_str());
  return Usage(stderr, 2);
}
