// `hvbroker bhyve [bhyve options] VMNAME`: bhyve(8)'s command line, turned into
// the VM description (schema/vm.capnp) that `hvbroker up` runs.
//
// The translation is faithful or it fails: every option hv cannot honour is an
// error naming that option (never dropped), and every device bhyve knows is
// translated and left to the broker's own validation (broker/config.cc) to accept
// or to report as "not supported by hv yet" -- so a device that lands there is
// accepted here with no change. Errors of the validation name the bhyve option the
// field came from, not the generated file.
#ifndef HV_BROKER_BHYVE_CLI_H_
#define HV_BROKER_BHYVE_CLI_H_

#include <array>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "broker/config.h"
#include "broker/vm_runner.h"

namespace hv::broker {

using BhyveOptionList = std::vector<std::pair<std::string, std::string>>;  // key, value

// One port of `-s N,ahci,hd:PATH[,opts],cd:PATH[,opts]`.
struct BhyveAhciPort {
  std::string type;  // "hd" or "cd"
  std::string path;
  BhyveOptionList options;
};

// One `-s slot[:func],emulation[,conf]`.
struct BhyveDevice {
  std::string option;  // as given, "-s 3:0,virtio-blk,/a.img": what errors name
  int slot = 0;
  int function = 0;
  std::string emulation;  // as vm.capnp names it
  std::string path;
  BhyveOptionList options;
  std::vector<BhyveAhciPort> ports;
  std::string note;  // how hv reads it when that differs from bhyve; said on stderr
};

// One `-l comN,...`.
struct BhyveSerial {
  enum class Kind { kNone, kStdio, kSocket };
  Kind kind = Kind::kNone;
  std::string path;    // kSocket
  std::string option;  // as given
};

// What the command line says, in vm.capnp's terms.
struct BhyveVm {
  std::string command_line;  // the arguments, shell-quoted, for the file's header
  std::string name;
  int cpus = 1;
  std::string cpus_option;  // "-c 4", or empty for bhyve's default of 1
  std::string memory = "256M";  // bhyve's default
  std::string memory_option;
  std::string kernel, initrd, cmdline;  // hv's --kernel/--initrd/--cmdline; paths absolute
  bool rtc_utc = false;     // -u; without it bhyve's RTC keeps local time
  bool acpi_flag = false;   // -A given (hv always builds ACPI tables)
  bool yield_flag = false;  // -H given
  bool pause_flag = false;  // -P given
  bool destroy_flag = false;  // -D given
  bool ioapic_flag = false;   // -I given
  bool no_mptable = false;    // -Y
  bool bootrom_refused = false;  // -l bootrom,... was given (and refused, saying to use --kernel)
  std::array<BhyveSerial, 4> com;
  std::vector<BhyveDevice> devices;
};

struct BhyveInvocation {
  BhyveVm vm;
  bool print_config = false;  // --print-config or -o config.dump=1
  bool help = false;          // -h / --help
  std::string list;           // -s help / -l help: what to print instead of running
  RunOptions run_options;     // --no-sandbox, --seccomp-log, --uid-range (as for `up`)
};

// Reads the arguments after `hvbroker bhyve`. Relative file paths become absolute
// against `cwd`. Every problem is reported, one per line, each naming its option;
// an error also means the command line was not translated completely.
// `partial`, if given, gets what was read even when there are errors (the rest
// of the command line can then be checked too).
absl::StatusOr<BhyveInvocation> ParseBhyveCommandLine(const std::vector<std::string>& args,
                                                      const std::string& cwd,
                                                      BhyveInvocation* partial = nullptr);

// The vm.capnp text for `vm` (what --print-config writes): one field per option,
// each with a comment naming the option it came from.
std::string BhyveVmCapnpText(const BhyveVm& vm);

// Builds the text and loads it with the broker's own parser and validation (what
// `hvbroker up` does with a file). Errors name the bhyve option of each field.
absl::StatusOr<VmConfig> LoadBhyveVm(const BhyveVm& vm, const std::string& cwd);

// `hvbroker bhyve ...`; returns the exit status (see kBhyveHelp).
int BhyveMain(const std::vector<std::string>& args);

// `hvbroker bhyve --help`.
extern const char kBhyveHelp[];

}  // namespace hv::broker

#endif  // HV_BROKER_BHYVE_CLI_H_
