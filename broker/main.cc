// hvbroker: runs VMs described in Cap'n Proto files, one process per device.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "broker/bhyve_cli.h"
#include "broker/config.h"
#include "broker/control.h"
#include "broker/vm_runner.h"
#include "common/log.h"

namespace {

constexpr char kUsage[] = R"(usage: hvbroker COMMAND [ARGS]

Commands:
  up [OPTIONS] FILE.capnp
                    Start the VM described in FILE and run it in the foreground
                    until it ends. The guest's console (a COM port with the stdio
                    backend) is this terminal; Ctrl-C stops the VM.
  check FILE.capnp  Parse and validate FILE, print what would run, and exit.
  bhyve [bhyve options] VMNAME
                    Run a VM given bhyve(8)'s command line (-c, -m, -s, -l, ...,
                    with --kernel FILE for what to boot), or write its VM file
                    with --print-config. See `hvbroker bhyve --help`.
  ls                The VMs running under $HV_RUNTIME_DIR and their state.
  status VM         Its processes: pids, sandbox, uptime, restarts, counters.
  stop [--force] [--wait=SECONDS] VM
                    Press the VM's ACPI power button; --force destroys it.
  restart VM DEVICE Restart a device's process; its successor resumes its state.
  debug VM DEVICE   Restart a device unsandboxed and stopped, for gdb to attach.
  trace VM DEVICE   A device's register accesses and messages, decoded, live.
  console VM [comN] Attach this terminal to a COM port (Ctrl-] detaches).
  help              This text.

The VM file is a Cap'n Proto constant (see schema/vm.capnp and examples/):
  using import "/hv/vm.capnp".Vm;
  const vm :Vm = (name = "hello", memory = "64M",
                  boot = (kernel = "hello.elf"),
                  devices = [(slot = 31, emulation = "lpc")],
                  lpc = (com1 = (stdio = void)));

Processes: hvbroker starts hvcore (the only holder of /dev/kvm) and one process
per device (today: lpc, which has the COM ports and the debug exit port 0xf4).

Options of `up`:
  --detach            run the VM in the background; returns once it runs. COM
                      ports on stdio become sockets (`hvbroker console VM`); the
                      log is $HV_RUNTIME_DIR/VM.log
  --no-sandbox        run every process of the VM WITHOUT its sandbox (for gdb);
                      said loudly at start
  --no-sandbox=NAMES  only these processes (comma-separated: core, lpc, a disk's
                      name as `check` lists them)
  --seccomp-log       forbidden system calls are logged by the kernel (audit
                      type 1326) and allowed: for building allowlists, never for use
  --uid-range=FIRST:COUNT
                      each VM's processes run as a uid/gid of their own from this
                      range (default 2100000000:10000; needs root)

Sandbox: hvcore and every device process run in their own user, pid, mount,
ipc, uts and net namespaces, as the VM's uid, with an empty read-only root, no
capabilities, no_new_privs, rlimits and a seccomp allowlist of their kind. A
forbidden system call kills the process; the VM ends with status 4 and the
message names the call.

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
  HV_UID_LOCK_DIR=DIR where brokers record which VM uid each holds
                      (default /run/hv-uids)
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
  if (command == "bhyve") return hv::broker::BhyveMain({args.begin() + 1, args.end()});
  if (hv::broker::IsControlCommand(command)) return hv::broker::RunControlCommand(args);
  if (command == "up" || command == "check") {
    hv::broker::RunOptions options;
    while (command == "up" && args.size() > 2 && args[1].rfind("--", 0) == 0) {
      std::string option = args[1];
      args.erase(args.begin() + 1);
      if (option == "--no-sandbox") {
        options.no_sandbox.insert("*");
      } else if (option.rfind("--no-sandbox=", 0) == 0) {
        for (auto name : absl::StrSplit(option.substr(strlen("--no-sandbox=")), ',')) {
          if (!name.empty()) options.no_sandbox.insert(std::string(name));
        }
      } else if (option == "--detach") {
        options.detached = true;
      } else if (option == "--seccomp-log") {
        options.seccomp_log = true;
      } else if (option.rfind("--uid-range=", 0) == 0) {
        auto range = hv::broker::ParseUidRange(option.substr(strlen("--uid-range=")));
        if (!range.ok()) {
          fprintf(stderr, "hvbroker: %s\n", std::string(range.status().message()).c_str());
          return 2;
        }
        options.uid_range = *range;
      } else {
        fprintf(stderr, "hvbroker: unknown option '%s' (see --help)\n", option.c_str());
        return 2;
      }
    }
    if (args.size() != 2 || args[1] == "--help") {
      fprintf(stderr, "usage: hvbroker %s%s FILE.capnp\n", command.c_str(),
              command == "up" ? " [OPTIONS]" : "");
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
    if (options.detached) return hv::broker::RunVmDetached(std::move(*config), options);
    return hv::broker::RunVm(std::move(*config), options);
  }
  fprintf(stderr, "hvbroker: unknown command '%s'\n\n", command.c_str());
  return Usage(stderr, 2);
}
