#include "broker/bhyve_cli.h"

#include <unistd.h>

#include <cctype>
#include <climits>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "broker/vm_identity.h"

namespace hv::broker {

const char kBhyveHelp[] = R"(usage: hvbroker bhyve [bhyve options] [hv options] VMNAME

Runs a VM given bhyve(8)'s command line, or with --print-config writes the
equivalent VM file (schema/vm.capnp) for `hvbroker up` and exits. Options hv
cannot honour are errors that name the option; nothing is dropped silently.
Every error is reported, not only the first.

bhyve options:
  -c [cpus=]N[,sockets=S,cores=C,threads=T]
                 vCPUs (default 1). hv presents one socket of N single-thread
                 cores: other topologies are refused
  -m SIZE        guest memory: a number with K, M, G or T; a plain number is
                 MiB (default 256M)
  -s SLOT[:FUNC],EMULATION[,CONF]
                 a PCI device at bus 0, SLOT 0-31, FUNC 0-7 (BUS:SLOT:FUNC
                 with bus 0 too). EMULATION and CONF as bhyve has them:
                   hostbridge, amd_hostbridge   (slot 0) no CONF
                   lpc                          no CONF
                   virtio-blk,PATH[,ro,nocache,direct,sectorsize=N,ser=ID,...]
                   virtio-net,BACKEND[,mac=MAC]  BACKEND: a tap's name, or
                                 slirp (user-mode NAT; hostfwd=... as for hv)
                   virtio-net-viona,LINK  illumos's in-kernel virtio-net: hv
                                 runs virtio-net on the tap LINK (said at start)
                   ahci-hd,PATH[,opts]  ahci-cd,PATH[,opts]
                   ahci,hd:PATH[,opts],cd:PATH[,opts]...  one entry per port
                   fbuf,[tcp=|rfb=]IP:PORT[,w=W][,h=H][,vga=on|off|io][,wait]
                                 [,password=PW]
                   xhci,tablet  nvme  e1000  passthru  uart  virtio-rnd
                   virtio-console  virtio-scsi  virtio-input  virtio-9p
                 A device hv does not run yet is refused by name:
                 "'ahci-cd' is not supported by hv yet". `-s help` lists
                 every emulation and whether hv runs it.
  -l comN,stdio  COM1-4 on this terminal (needs -s N,lpc)
  -l comN,socket,PATH
                 COM1-4 on a Unix socket at PATH that one client at a time
                 connects to (`socat -,raw,echo=0 UNIX-CONNECT:PATH`)
  -l bootrom,... refused: hv has no firmware (UEFI/CSM); boot a kernel with
                 --kernel instead. `-l help` lists the lpc devices
  -u             the RTC keeps UTC (without -u it keeps local time, as bhyve's)
  -A -H -P -D -I accepted; what they ask for is what hv always does: ACPI
                 tables (-A), a halted vCPU yields its host CPU (-H), KVM's
                 pause-loop exits (-P), the VM ends at power-off (-D), an
                 I/O APIC (-I)
  -Y             no MP table (hv never writes one)
  -o config.dump=1
                 the same as --print-config
  -h             this text
  Refused with a reason: -a -x (APIC mode), -B -U (SMBIOS: hv has none),
  -C, -e, -f, -G, -k, -K, -o KEY=VALUE (other keys), -p (vCPU pinning),
  -r, -S, -w (unknown MSRs), -W.

hv options (hv's own; bhyve loads a guest with bhyveload or a bootrom):
  --kernel FILE  the guest kernel: a Linux bzImage or a PVH ELF (required)
  --initrd FILE  an initramfs for a Linux kernel
  --cmdline TEXT the kernel's command line (e.g. "console=ttyS0" to see a
                 Linux guest on -l com1,stdio)
  --print-config write the VM file to stdout and exit; it is written whenever
                 the command line was read completely, and the exit status
                 says whether it is valid (it is checked exactly as
                 `hvbroker up` checks a file)
  --no-sandbox[=NAMES], --seccomp-log, --uid-range=FIRST:COUNT
                 as for `hvbroker up`
  --help         this text
  Options may come before or after VMNAME; `--` ends them.

Example (the OmniOS guide's VM with a Linux kernel instead of the bootrom):
  hvbroker bhyve -H -c 4 -m 1G -s 0,amd_hostbridge -s 1,lpc -l com1,stdio \
      -s 3:0,virtio-blk,disk.img -s 5:0,virtio-net,tap0 \
      --kernel vmlinuz --initrd initrd.gz --cmdline console=ttyS0 testvm

Exit status:
  0  the guest powered off; with --print-config: the file is valid; a help or
     list (-h, -s help, -l help) was printed
  1  the VM could not be started: the command line has an error or an option
     hv does not support, the VM it describes is invalid, or a file is missing
     (every reason is printed); with --print-config: the file is invalid
  2-8 as for `hvbroker up` (reset, triple fault, a process died, stopped,
     guest failure, hv error, guest panic)
bhyve's own statuses differ (0 reboot, 1 power-off, 2 halt, 3 triple fault,
4 error): see docs/bhyve-users.md.
)";

namespace {

// bhyve's emulations (bhyve(8) -s) and how their CONF reads.
enum class ConfKind {
  kNone,     // no CONF: hostbridge, lpc
  kDisk,     // PATH[,key[=value]...], PATH made absolute
  kBackend,  // BACKEND[,key[=value]...]: a NIC's tap, a passthru's b/s/f, a uart's tty
  kAhci,     // hd:PATH[,opts],cd:PATH[,opts]...
  kOptions,  // key[=value]... only: fbuf, xhci, virtio-9p, virtio-rnd, ...
};

const std::map<std::string, ConfKind>& Emulations() {
  static const auto* table = new std::map<std::string, ConfKind>{
      {"hostbridge", ConfKind::kNone},      {"amd_hostbridge", ConfKind::kNone},
      {"lpc", ConfKind::kNone},             {"virtio-blk", ConfKind::kDisk},
      {"virtio-net", ConfKind::kBackend},   {"virtio-net-viona", ConfKind::kBackend},
      {"ahci", ConfKind::kAhci},            {"ahci-hd", ConfKind::kDisk},
      {"ahci-cd", ConfKind::kDisk},         {"nvme", ConfKind::kDisk},
      {"e1000", ConfKind::kBackend},        {"passthru", ConfKind::kBackend},
      {"uart", ConfKind::kBackend},         {"fbuf", ConfKind::kOptions},
      {"xhci", ConfKind::kOptions},         {"virtio-rnd", ConfKind::kOptions},
      {"virtio-console", ConfKind::kOptions}, {"virtio-9p", ConfKind::kOptions},
      {"virtio-scsi", ConfKind::kOptions},  {"virtio-input", ConfKind::kOptions},
  };
  return *table;
}

// bhyve's fbuf CONF keys (bhyve(8), "Frame Buffer device backend").
const std::set<std::string>& FbufKeys() {
  static const auto* keys =
      new std::set<std::string>{"rfb", "tcp", "w", "h", "vga", "wait", "password"};
  return *keys;
}

// bhyve's getopt: letters that take an argument, and flags.
constexpr char kArgumentLetters[] = "BcfGkKlmoprsU";
constexpr char kFlagLetters[] = "aACDehHIPSuwWxY";

std::string ShellQuote(const std::string& arg) {
  if (!arg.empty() && arg.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                            "0123456789_-+=:,./@%") == std::string::npos) {
    return arg;
  }
  std::string quoted = "'";
  for (char c : arg) {
    if (c == '\'') {
      quoted += "'\\''";
    } else if (c == '\n') {
      quoted += ' ';  // the header comment stays one line
    } else {
      quoted += c;
    }
  }
  return quoted + "'";
}

std::string Absolute(const std::string& cwd, const std::string& path) {
  if (path.empty() || path[0] == '/') return path;
  if (absl::StartsWith(path, "./")) return absl::StrCat(cwd, "/", path.substr(2));
  return absl::StrCat(cwd, "/", path);
}

std::pair<std::string, std::string> KeyValue(const std::string& token) {
  size_t eq = token.find('=');
  if (eq == std::string::npos) return {token, ""};
  return {token.substr(0, eq), token.substr(eq + 1)};
}

bool ParseSmallNumber(const std::string& text, int* out) {
  if (text.empty() || text.size() > 6) return false;
  for (char c : text) {
    if (!isdigit(static_cast<unsigned char>(c))) return false;
  }
  return absl::SimpleAtoi(text, out);
}

class Parser {
 public:
  Parser(std::string cwd, BhyveInvocation* out) : cwd_(std::move(cwd)), out_(out) {}

  void Error(const std::string& option, const std::string& message) {
    errors_.push_back(absl::StrCat(option, ": ", message));
  }
  const std::vector<std::string>& errors() const { return errors_; }

  void Flag(char letter) {
    std::string option = absl::StrCat("-", std::string(1, letter));
    BhyveVm& vm = out_->vm;
    switch (letter) {
      case 'A': vm.acpi_flag = true; return;
      case 'H': vm.yield_flag = true; return;
      case 'P': vm.pause_flag = true; return;
      case 'D': vm.destroy_flag = true; return;
      case 'I': vm.ioapic_flag = true; return;
      case 'u': vm.rtc_utc = true; return;
      case 'Y': vm.no_mptable = true; return;
      case 'h': out_->help = true; return;
      case 'a':
      case 'x':
        Error(option, "choosing the guest's APIC mode is not supported by hv: the guest gets "
                      "the local APIC KVM emulates and chooses xAPIC or x2APIC itself");
        return;
      case 'C':
        Error(option, "hv does not put guest memory in its core dumps (not supported)");
        return;
      case 'e':
        Error(option, "not supported by hv: an access to a port nobody decodes reads as "
                      "all-ones and the VM goes on");
        return;
      case 'S':
        Error(option, "wiring guest memory is not supported by hv yet");
        return;
      case 'w':
        Error(option, "ignoring unknown MSRs is not supported by hv yet: KVM gives the guest "
                      "#GP for an MSR it does not implement (the host's kvm.ignore_msrs=1 "
                      "module parameter does what -w does, for every VM)");
        return;
      case 'W':
        Error(option, "forcing MSI instead of MSI-X is not supported by hv");
        return;
    }
    Error(option, "not a bhyve option (see hvbroker bhyve --help)");
  }

  void WithArgument(char letter, const std::string& value) {
    std::string option = absl::StrCat("-", std::string(1, letter), " ", value);
    switch (letter) {
      case 'c': Cpus(option, value); return;
      case 'm': Memory(option, value); return;
      case 's': Slot(option, value); return;
      case 'l': Lpc(option, value); return;
      case 'o':
        if (value == "config.dump=1" || value == "config.dump=true") {
          out_->print_config = true;
        } else {
          Error(option, "bhyve's configuration variables are not supported by hv, but for "
                        "config.dump=1 (what --print-config does)");
        }
        return;
      case 'B':
        Error(option, "SMBIOS tables are not supported by hv: it gives the guest none");
        return;
      case 'U':
        Error(option, "the UUID goes into SMBIOS tables, which hv does not have (not supported)");
        return;
      case 'p':
        Error(option, "pinning vCPUs to host CPUs is not supported by hv yet (taskset(1) on "
                      "hvbroker pins the whole VM)");
        return;
      case 'k':
        Error(option, "bhyve's configuration files are not read by hv; its VM file is "
                      "vm.capnp (`hvbroker up FILE`; --print-config writes one)");
        return;
      case 'K':
        Error(option, "keyboard layouts are not supported by hv (no framebuffer yet)");
        return;
      case 'f':
        Error(option, "fw_cfg items are not supported by hv (it has no firmware)");
        return;
      case 'G':
        Error(option, "the gdb stub is not supported by hv yet");
        return;
      case 'r':
        Error(option, "restoring a saved VM is not supported by hv yet");
        return;
    }
    Error(option, "not a bhyve option (see hvbroker bhyve --help)");
  }

  void Name(const std::string& name) {
    if (!out_->vm.name.empty()) {
      Error(name, absl::StrCat("a second VM name (the first is '", out_->vm.name,
                               "'); bhyve takes one VMNAME, after the options"));
      return;
    }
    out_->vm.name = name;
  }

  // -c [[cpus=]N][,sockets=S][,cores=C][,threads=T]
  void Cpus(const std::string& option, const std::string& value) {
    BhyveVm& vm = out_->vm;
    vm.cpus_option = option;
    int cpus = 0, sockets = 0, cores = 0, threads = 0;
    bool ok = true;
    std::vector<std::string> tokens = absl::StrSplit(value, ',');
    for (size_t i = 0; i < tokens.size(); ++i) {
      auto [key, number] = KeyValue(tokens[i]);
      if (i == 0 && tokens[i].find('=') == std::string::npos) {
        number = tokens[i];
        key = "cpus";
      }
      int* field = key == "cpus" ? &cpus
                   : key == "sockets" ? &sockets
                   : key == "cores" ? &cores
                   : key == "threads" ? &threads
                   : nullptr;
      if (key == "maxcpus") {
        Error(option, "maxcpus (CPU hot-plug) is not supported by hv");
        ok = false;
        continue;
      }
      if (field == nullptr) {
        Error(option, absl::StrCat("unknown key '", key,
                                   "' (want -c [cpus=]N[,sockets=S][,cores=C][,threads=T])"));
        ok = false;
        continue;
      }
      if (!ParseSmallNumber(number, field) || *field == 0) {
        Error(option, absl::StrCat("'", tokens[i], "': ", key, " must be a number from 1"));
        ok = false;
      }
    }
    if (!ok) return;
    if (sockets || cores || threads) {
      int s = sockets ? sockets : 1, c = cores ? cores : 1, t = threads ? threads : 1;
      if (cpus == 0) cpus = s * c * t;
      if (s * c * t != cpus) {
        Error(option, absl::StrCat("sockets*cores*threads = ", s * c * t,
                                   " does not match cpus = ", cpus));
        return;
      }
      if (s != 1 || t != 1) {
        Error(option, absl::StrCat("hv presents one socket of ", cpus,
                                   " single-thread cores; sockets=", s, ", threads=", t,
                                   " are not supported yet"));
        return;
      }
    }
    vm.cpus = cpus;  // the range (1-64) is the broker's check, named as this option
  }

  void Memory(const std::string& option, const std::string& value) {
    out_->vm.memory_option = option;
    auto bytes = ParseMemorySize(value);
    if (!bytes.ok()) {
      Error(option, std::string(bytes.status().message()));
      return;
    }
    out_->vm.memory = value;  // the broker checks its range, named as this option
  }

  // -s [BUS:]SLOT[:FUNC],EMULATION[,CONF]
  void Slot(const std::string& option, const std::string& value) {
    if (value == "help") {
      std::string list = "PCI device emulations (-s SLOT[:FUNC],EMULATION[,CONF]):\n";
      for (const auto& [name, kind] : Emulations()) {
        std::string state = name == "virtio-net-viona" ? "  (hv runs it as virtio-net on a tap)"
                            : IsSupportedEmulation(name) ? ""
                                                         : "  (not supported by hv yet)";
        absl::StrAppend(&list, "  ", name, state, "\n");
      }
      out_->list += list;
      return;
    }
    size_t comma = value.find(',');
    if (comma == std::string::npos) {
      Error(option, "no emulation after the slot (want -s SLOT[:FUNC],EMULATION[,CONF])");
      return;
    }
    std::string where = value.substr(0, comma), rest = value.substr(comma + 1);
    std::vector<std::string> numbers = absl::StrSplit(where, ':');
    if (numbers.size() > 3) {
      Error(option, absl::StrCat("'", where, "' is not SLOT, SLOT:FUNC or BUS:SLOT:FUNC"));
      return;
    }
    int parsed[3] = {0, 0, 0};
    const char* what[3] = {"bus", "slot", "function"};
    int first = numbers.size() == 3 ? 0 : 1;  // which of bus/slot/function numbers[0] is
    bool ok = true;
    for (size_t i = 0; i < numbers.size(); ++i) {
      int n = 0;
      if (!ParseSmallNumber(numbers[i], &n)) {
        Error(option, absl::StrCat("the ", what[first + i], " '", numbers[i], "' is not a number"));
        ok = false;
        continue;
      }
      parsed[first + i] = n;
    }
    if (ok && parsed[0] != 0) {
      Error(option, absl::StrCat("bus ", parsed[0], ": hv has one PCI bus, bus 0"));
      ok = false;
    }
    if (ok && parsed[1] > 31) {
      Error(option, absl::StrCat("slot ", parsed[1], " is outside 0-31"));
      ok = false;
    }
    if (ok && parsed[2] > 7) {
      Error(option, absl::StrCat("function ", parsed[2], " is outside 0-7"));
      ok = false;
    }
    comma = rest.find(',');
    std::string emulation = rest.substr(0, comma);
    std::string conf = comma == std::string::npos ? "" : rest.substr(comma + 1);
    bool has_conf = comma != std::string::npos;
    auto known = Emulations().find(emulation);
    if (emulation.empty()) {
      Error(option, "no emulation after the slot (want -s SLOT[:FUNC],EMULATION[,CONF])");
      return;
    }
    if (known == Emulations().end()) {
      std::vector<std::string> names;
      for (const auto& [name, kind] : Emulations()) names.push_back(name);
      Error(option, absl::StrCat("unknown emulation '", emulation,
                                 "' (bhyve's: ", absl::StrJoin(names, ", "), ")"));
      return;
    }
    if (!ok) return;
    BhyveDevice d;
    d.option = option;
    d.slot = parsed[1];
    d.function = parsed[2];
    d.emulation = emulation;
    std::vector<std::string> tokens;
    if (has_conf) tokens = absl::StrSplit(conf, ',');
    switch (known->second) {
      case ConfKind::kNone:
        if (has_conf) {
          Error(option, absl::StrCat("hv's ", emulation, " takes no configuration ('", conf,
                                     "')"));
          return;
        }
        break;
      case ConfKind::kDisk:
      case ConfKind::kBackend: {
        size_t first_option = 0;
        if (!tokens.empty()) {
          auto [key, v] = KeyValue(tokens[0]);
          if (tokens[0].find('=') == std::string::npos) {
            d.path = tokens[0];
            first_option = 1;
          } else if (key == "path" || key == "backend") {  // bhyve's newer spelling
            d.path = v;
            first_option = 1;
          }
        }
        for (size_t i = first_option; i < tokens.size(); ++i) {
          if (tokens[i].empty()) continue;
          d.options.push_back(KeyValue(tokens[i]));
        }
        if (known->second == ConfKind::kDisk) {
          if (d.path.empty() && emulation != "ahci-cd") {
            Error(option, absl::StrCat("no disk image (want -s ", where, ",", emulation,
                                       ",PATH[,options])"));
            return;
          }
          d.path = Absolute(cwd_, d.path);
        }
        if (emulation == "virtio-net-viona") {
          d.emulation = "virtio-net";
          d.note = absl::StrCat(
              "illumos's in-kernel viona becomes hv's virtio-net on the tap '", d.path,
              "' (the guest sees the same virtio-net device)");
        } else if (emulation == "virtio-net" && d.path.empty()) {
          d.note = "no backend: hv gives this NIC user-mode networking (NAT); bhyve's "
                   "would be unconnected";
        }
        break;
      }
      case ConfKind::kAhci:
        for (const auto& token : tokens) {
          if (absl::StartsWith(token, "hd:") || absl::StartsWith(token, "cd:")) {
            BhyveAhciPort port;
            port.type = token.substr(0, 2);
            port.path = Absolute(cwd_, token.substr(3));
            d.ports.push_back(port);
          } else if (d.ports.empty()) {
            Error(option, absl::StrCat("'", token, "' comes before the first hd:PATH or cd:PATH"));
            return;
          } else if (!token.empty()) {
            d.ports.back().options.push_back(KeyValue(token));
          }
        }
        if (d.ports.empty()) {
          Error(option, absl::StrCat("no ports (want -s ", where,
                                     ",ahci,hd:PATH[,options][,cd:PATH[,options]]...)"));
          return;
        }
        if (d.ports.size() > 32) {
          Error(option, absl::StrCat(d.ports.size(), " ports: an AHCI controller has 32"));
          return;
        }
        break;
      case ConfKind::kOptions:
        for (size_t i = 0; i < tokens.size(); ++i) {
          if (tokens[i].empty()) continue;
          auto kv = KeyValue(tokens[i]);
          if (emulation == "fbuf") {
            // bhyve also takes a bare IP:PORT as the first item
            if (i == 0 && tokens[i].find('=') == std::string::npos &&
                tokens[i].find(':') != std::string::npos) {
              kv = {"tcp", tokens[i]};
            }
            if (FbufKeys().count(kv.first) == 0) {
              Error(option, absl::StrCat("unknown fbuf option '", kv.first,
                                         "' (bhyve's: ", absl::StrJoin(FbufKeys(), ", "), ")"));
              return;
            }
          }
          d.options.push_back(kv);
        }
        break;
    }
    for (const auto& other : out_->vm.devices) {
      if (other.slot == d.slot && other.function == d.function) {
        Error(option, absl::StrCat("slot ", d.slot, " function ", d.function,
                                   " is already used by ", other.option));
        return;
      }
    }
    out_->vm.devices.push_back(std::move(d));
  }

  // -l comN,stdio | comN,socket,PATH | bootrom,... | help
  void Lpc(const std::string& option, const std::string& value) {
    if (value == "help") {
      out_->list +=
          "lpc devices (-l DEVICE,CONF):\n"
          "  com1 com2 com3 com4  (stdio or socket,PATH)\n"
          "  bootrom  (not supported by hv: it has no firmware; use --kernel)\n"
          "  fwcfg  (not supported by hv)\n"
          "  pc-testdev  (not supported by hv)\n"
          "  tpm  (not supported by hv)\n";
      return;
    }
    std::vector<std::string> tokens = absl::StrSplit(value, ',');
    const std::string& device = tokens[0];
    if (device == "bootrom") {
      out_->vm.bootrom_refused = true;
      Error(option, "hv has no firmware (UEFI/CSM bootrom) support; it loads a Linux bzImage "
                    "or PVH ELF kernel itself: give --kernel FILE [--initrd FILE] "
                    "[--cmdline TEXT] instead");
      return;
    }
    if (device == "fwcfg" || device == "pc-testdev" || device == "tpm") {
      Error(option, absl::StrCat("the lpc device '", device, "' is not supported by hv"));
      return;
    }
    if (device.size() != 4 || !absl::StartsWith(device, "com") || device[3] < '1' ||
        device[3] > '4') {
      Error(option, absl::StrCat("unknown lpc device '", device,
                                 "' (bhyve's: com1, com2, com3, com4, bootrom, fwcfg, "
                                 "pc-testdev, tpm)"));
      return;
    }
    BhyveSerial& port = out_->vm.com[device[3] - '1'];
    if (port.kind != BhyveSerial::Kind::kNone) {
      Error(option, absl::StrCat(device, " is already given by ", port.option));
      return;
    }
    BhyveSerial serial;
    serial.option = option;
    if (tokens.size() == 2 && tokens[1] == "stdio") {
      serial.kind = BhyveSerial::Kind::kStdio;
    } else if (tokens.size() >= 2 && tokens[1] == "socket") {
      if (tokens.size() < 3 || tokens[2].empty()) {
        Error(option, absl::StrCat("no socket path (want -l ", device, ",socket,PATH)"));
        return;
      }
      for (size_t i = 3; i < tokens.size(); ++i) {
        if (tokens[i] == "wait") {
          Error(option, "'wait' (start the guest only once a client connects) is not "
                        "supported by hv yet: the guest starts at once and the port takes "
                        "a client whenever one connects");
        } else {
          Error(option, absl::StrCat("unknown socket option '", tokens[i], "'"));
        }
        return;
      }
      serial.kind = BhyveSerial::Kind::kSocket;
      serial.path = Absolute(cwd_, tokens[2]);
    } else if (tokens.size() == 1) {
      Error(option, absl::StrCat("no backend (want -l ", device, ",stdio or -l ", device,
                                 ",socket,PATH)"));
      return;
    } else {
      Error(option, absl::StrCat(
                        "'", value.substr(device.size() + 1),
                        "': hv's COM ports use stdio or a Unix socket (socket,PATH); nmdm and "
                        "tty devices are not supported (socat can join the socket to a pty: "
                        "socat PTY,link=/tmp/vm.tty UNIX-CONNECT:PATH)"));
      return;
    }
    port = serial;
  }

  // hv's own options: --name=value or --name value. Advances *i past a value it takes.
  void LongOption(const std::vector<std::string>& args, size_t* i) {
    std::string arg = args[*i];
    size_t eq = arg.find('=');
    std::string name = arg.substr(0, eq);
    bool inline_value = eq != std::string::npos;
    std::string value = inline_value ? arg.substr(eq + 1) : "";
    auto take_value = [&]() -> bool {
      if (inline_value) return true;
      if (*i + 1 >= args.size()) {
        Error(name, "needs a value");
        return false;
      }
      value = args[++*i];
      return true;
    };
    BhyveVm& vm = out_->vm;
    if (name == "--kernel") {
      if (take_value()) vm.kernel = Absolute(cwd_, value);
    } else if (name == "--initrd") {
      if (take_value()) vm.initrd = Absolute(cwd_, value);
    } else if (name == "--cmdline") {
      if (take_value()) vm.cmdline = value;
    } else if (name == "--print-config" && !inline_value) {
      out_->print_config = true;
    } else if (name == "--help" && !inline_value) {
      out_->help = true;
    } else if (name == "--no-sandbox") {
      if (!inline_value) {
        out_->run_options.no_sandbox.insert("*");
      } else {
        for (auto n : absl::StrSplit(value, ',')) {
          if (!n.empty()) out_->run_options.no_sandbox.insert(std::string(n));
        }
      }
    } else if (name == "--seccomp-log" && !inline_value) {
      out_->run_options.seccomp_log = true;
    } else if (name == "--uid-range") {
      if (!take_value()) return;
      auto range = ParseUidRange(value);
      if (!range.ok()) {
        Error(arg, std::string(range.status().message()));
      } else {
        out_->run_options.uid_range = *range;
      }
    } else {
      Error(arg, "not an option of hvbroker bhyve (see hvbroker bhyve --help)");
    }
  }

 private:
  std::string cwd_;
  BhyveInvocation* out_;
  std::vector<std::string> errors_;
};

std::string CapnpString(const std::string& text) {
  std::string out = "\"";
  for (unsigned char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f) {
      static const char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

std::string OptionsText(const BhyveOptionList& options) {
  std::vector<std::string> items;
  for (const auto& [key, value] : options) {
    items.push_back(value.empty() ? absl::StrCat("(key = ", CapnpString(key), ")")
                                  : absl::StrCat("(key = ", CapnpString(key),
                                                 ", value = ", CapnpString(value), ")"));
  }
  return absl::StrCat("[", absl::StrJoin(items, ", "), "]");
}

// A comment holds no newline (the rest of the line would become capnp text).
std::string Comment(const std::string& text) {
  std::string out = text;
  for (char& c : out) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return out;
}

// Which option each field of the generated file came from, for error messages.
std::vector<std::pair<std::string, std::string>> FieldOptions(const BhyveVm& vm) {
  std::vector<std::pair<std::string, std::string>> fields = {
      {"name", absl::StrCat("VMNAME '", vm.name, "'")},
      {"cpus", vm.cpus_option.empty() ? "-c (default 1)" : vm.cpus_option},
      {"memory", vm.memory_option.empty() ? "-m (default 256M)" : vm.memory_option},
      {"boot.kernel", vm.kernel.empty() ? "--kernel" : absl::StrCat("--kernel ", vm.kernel)},
      {"boot.initrd", absl::StrCat("--initrd ", vm.initrd)},
      {"boot.cmdline", "--cmdline"},
  };
  for (size_t i = 0; i < vm.devices.size(); ++i) {
    fields.push_back({absl::StrCat("devices[", i, "]"), vm.devices[i].option});
  }
  for (int i = 0; i < 4; ++i) {
    if (vm.com[i].kind != BhyveSerial::Kind::kNone) {
      fields.push_back({absl::StrCat("lpc.com", i + 1), vm.com[i].option});
    }
  }
  return fields;
}

// "FILE:L:C: FIELD: MESSAGE" from the broker's validation becomes "OPTION: MESSAGE".
std::string NameTheOption(const std::string& line, const std::string& file,
                          const std::vector<std::pair<std::string, std::string>>& fields) {
  if (!absl::StartsWith(line, file + ":")) return line;
  size_t at = file.size() + 1;
  for (int number = 0; number < 2; ++number) {  // line and column
    size_t digits = at;
    while (digits < line.size() && isdigit(static_cast<unsigned char>(line[digits]))) ++digits;
    if (digits == at || digits >= line.size() || line[digits] != ':') break;
    at = digits + 1;
  }
  if (at < line.size() && line[at] == ' ') ++at;
  std::string rest = line.substr(at);
  size_t colon = rest.find(": ");
  if (colon == std::string::npos) return line;
  std::string field = rest.substr(0, colon), message = rest.substr(colon + 2);
  const std::pair<std::string, std::string>* best = nullptr;
  for (const auto& entry : fields) {
    const std::string& prefix = entry.first;
    bool matches = field == prefix ||
                   (absl::StartsWith(field, prefix) &&
                    (field[prefix.size()] == '.' || field[prefix.size()] == '['));
    if (matches && (best == nullptr || prefix.size() > best->first.size())) best = &entry;
  }
  if (best == nullptr) return absl::StrCat("vm.capnp ", field, ": ", message);
  return absl::StrCat(best->second, ": ", message);
}

constexpr char kGeneratedName[] = "(hvbroker bhyve)";

}  // namespace

absl::StatusOr<BhyveInvocation> ParseBhyveCommandLine(const std::vector<std::string>& args,
                                                      const std::string& cwd,
                                                      BhyveInvocation* partial) {
  BhyveInvocation out;
  Parser parser(cwd, &out);
  std::vector<std::string> quoted = {"hvbroker", "bhyve"};
  for (const auto& a : args) quoted.push_back(ShellQuote(a));
  out.vm.command_line = absl::StrJoin(quoted, " ");
  bool options_ended = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (options_ended || arg.size() < 2 || arg[0] != '-') {
      parser.Name(arg);
      continue;
    }
    if (arg == "--") {
      options_ended = true;
      continue;
    }
    if (arg[1] == '-') {
      parser.LongOption(args, &i);
      continue;
    }
    // A cluster of bhyve's one-letter options, as getopt reads them: "-AHP", "-c4".
    for (size_t j = 1; j < arg.size(); ++j) {
      char letter = arg[j];
      if (strchr(kArgumentLetters, letter) != nullptr) {
        std::string value = arg.substr(j + 1);
        if (value.empty()) {
          if (i + 1 >= args.size()) {
            parser.Error(absl::StrCat("-", std::string(1, letter)), "needs an argument");
            break;
          }
          value = args[++i];
        }
        parser.WithArgument(letter, value);
        break;
      }
      if (strchr(kFlagLetters, letter) == nullptr) {
        parser.Error(absl::StrCat("-", std::string(1, letter)),
                     "not a bhyve option (see hvbroker bhyve --help)");
        continue;
      }
      parser.Flag(letter);
    }
  }
  if (out.help || !out.list.empty()) return out;
  if (out.vm.name.empty()) parser.Error("VMNAME", "no VM name (the last argument, as for bhyve)");
  if (partial != nullptr) *partial = out;
  if (!parser.errors().empty()) {
    return absl::InvalidArgumentError(absl::StrJoin(parser.errors(), "\n"));
  }
  return out;
}

std::string BhyveVmCapnpText(const BhyveVm& vm) {
  std::string t;
  absl::StrAppend(&t, "# Written by `hvbroker bhyve --print-config` from:\n#   ",
                  Comment(vm.command_line), "\n# Run it with `hvbroker up FILE`.\n",
                  "using import \"/hv/vm.capnp\".Vm;\n\nconst vm :Vm = (\n");
  absl::StrAppend(&t, "  name = ", CapnpString(vm.name), ",\n");
  absl::StrAppend(&t, "  cpus = ", vm.cpus, ",",
                  vm.cpus_option.empty() ? "  # bhyve's default" : "  # " + Comment(vm.cpus_option),
                  "\n");
  absl::StrAppend(&t, "  memory = ", CapnpString(vm.memory), ",",
                  vm.memory_option.empty() ? "  # bhyve's default"
                                           : "  # " + Comment(vm.memory_option),
                  "\n");
  absl::StrAppend(&t, "  boot = (  # hv's --kernel, --initrd, --cmdline\n");
  if (!vm.kernel.empty()) absl::StrAppend(&t, "    kernel = ", CapnpString(vm.kernel), ",\n");
  if (!vm.initrd.empty()) absl::StrAppend(&t, "    initrd = ", CapnpString(vm.initrd), ",\n");
  if (!vm.cmdline.empty()) absl::StrAppend(&t, "    cmdline = ", CapnpString(vm.cmdline), ",\n");
  absl::StrAppend(&t, "  ),\n");
  if (vm.acpi_flag) absl::StrAppend(&t, "  acpi = true,  # -A (hv always builds ACPI tables)\n");
  if (vm.yield_flag) {
    absl::StrAppend(&t, "  yieldOnHlt = true,  # -H (under KVM a halted vCPU always yields)\n");
  }
  if (vm.pause_flag) {
    absl::StrAppend(&t, "  exitOnPause = true,  # -P (KVM's pause-loop exits)\n");
  }
  if (vm.destroy_flag) {
    absl::StrAppend(&t, "  destroyOnPowerOff = true,  # -D (an hv VM always ends at power-off)\n");
  }
  if (vm.ioapic_flag) absl::StrAppend(&t, "  # -I: hv always has an I/O APIC\n");
  if (vm.no_mptable) absl::StrAppend(&t, "  mptable = false,  # -Y\n");
  absl::StrAppend(&t, "  rtcUtc = ", vm.rtc_utc ? "true,  # -u\n" : "false,  # no -u: local time\n");
  absl::StrAppend(&t, "  devices = [\n");
  for (const auto& d : vm.devices) {
    absl::StrAppend(&t, "    # ", Comment(d.option), "\n");
    if (!d.note.empty()) absl::StrAppend(&t, "    # ", Comment(d.note), "\n");
    absl::StrAppend(&t, "    (slot = ", d.slot, ", function = ", d.function,
                    ", emulation = ", CapnpString(d.emulation));
    if (!d.path.empty()) absl::StrAppend(&t, ",\n     path = ", CapnpString(d.path));
    if (!d.options.empty()) absl::StrAppend(&t, ",\n     options = ", OptionsText(d.options));
    if (!d.ports.empty()) {
      absl::StrAppend(&t, ",\n     ports = [");
      for (size_t p = 0; p < d.ports.size(); ++p) {
        const auto& port = d.ports[p];
        absl::StrAppend(&t, p ? ",\n              " : "", "(type = ", port.type,
                        ", path = ", CapnpString(port.path));
        if (!port.options.empty()) absl::StrAppend(&t, ", options = ", OptionsText(port.options));
        absl::StrAppend(&t, ")");
      }
      absl::StrAppend(&t, "]");
    }
    absl::StrAppend(&t, "),\n");
  }
  absl::StrAppend(&t, "  ],\n");
  std::vector<std::string> ports;
  for (int i = 0; i < 4; ++i) {
    const auto& com = vm.com[i];
    if (com.kind == BhyveSerial::Kind::kNone) continue;
    ports.push_back(absl::StrCat(
        "com", i + 1, " = ",
        com.kind == BhyveSerial::Kind::kStdio ? "(stdio = void)"
                                              : absl::StrCat("(socket = ", CapnpString(com.path), ")")));
  }
  if (!ports.empty()) {
    std::vector<std::string> options;
    for (const auto& com : vm.com) {
      if (com.kind != BhyveSerial::Kind::kNone) options.push_back(Comment(com.option));
    }
    absl::StrAppend(&t, "  lpc = (", absl::StrJoin(ports, ", "), "),  # ",
                    absl::StrJoin(options, ", "), "\n");
  }
  absl::StrAppend(&t, ");\n");
  return t;
}

absl::StatusOr<VmConfig> LoadBhyveVm(const BhyveVm& vm, const std::string& cwd) {
  std::vector<std::string> errors;
  // After a refused -l bootrom (whose error tells about --kernel) the broker's own
  // "--kernel: no kernel to boot" is enough.
  bool explain_kernel = vm.kernel.empty() && !vm.bootrom_refused;
  if (explain_kernel) {
    errors.push_back(
        "--kernel: no kernel to boot: hv loads a Linux bzImage or a PVH ELF kernel itself "
        "(it has no firmware for bhyve's -l bootrom); give --kernel FILE");
  }
  auto config = LoadVmConfigText(kGeneratedName, BhyveVmCapnpText(vm), cwd);
  if (!config.ok()) {
    auto fields = FieldOptions(vm);
    for (absl::string_view line : absl::StrSplit(config.status().message(), '\n')) {
      std::string named = NameTheOption(std::string(line), kGeneratedName, fields);
      if (explain_kernel && absl::StartsWith(named, "--kernel: ")) continue;  // said above
      errors.push_back(named);
    }
  }
  if (!errors.empty()) return absl::InvalidArgumentError(absl::StrJoin(errors, "\n"));
  return config;
}

int BhyveMain(const std::vector<std::string>& args) {
  auto say_errors = [](const absl::Status& status) {
    for (absl::string_view line : absl::StrSplit(status.message(), '\n')) {
      fprintf(stderr, "hvbroker bhyve: %s\n", std::string(line).c_str());
    }
  };
  if (args.empty()) {
    fputs(kBhyveHelp, stderr);
    return kExitStartFailed;
  }
  char cwd_buffer[PATH_MAX];
  std::string cwd = getcwd(cwd_buffer, sizeof(cwd_buffer)) != nullptr ? cwd_buffer : ".";
  BhyveInvocation partial;
  auto invocation = ParseBhyveCommandLine(args, cwd, &partial);
  if (!partial.help && partial.list.empty()) {
    for (const auto& d : partial.vm.devices) {
      if (!d.note.empty()) {
        fprintf(stderr, "hvbroker bhyve: note: %s: %s\n", d.option.c_str(), d.note.c_str());
      }
    }
  }
  if (!invocation.ok()) {
    say_errors(invocation.status());
    // What was read is checked too, so one run names every problem.
    if (!partial.vm.name.empty()) {
      if (auto rest = LoadBhyveVm(partial.vm, cwd); !rest.ok()) say_errors(rest.status());
    }
    return kExitStartFailed;
  }
  if (invocation->help) {
    fputs(kBhyveHelp, stdout);
    return 0;
  }
  if (!invocation->list.empty()) {
    fputs(invocation->list.c_str(), stdout);
    return 0;
  }
  const BhyveVm& vm = invocation->vm;
  auto config = LoadBhyveVm(vm, cwd);
  if (invocation->print_config) {
    fputs(BhyveVmCapnpText(vm).c_str(), stdout);
    fflush(stdout);
    if (!config.ok()) {
      say_errors(config.status());
      return kExitStartFailed;
    }
    return 0;
  }
  if (!config.ok()) {
    say_errors(config.status());
    return kExitStartFailed;
  }
  return RunVm(std::move(*config), invocation->run_options);
}

}  // namespace hv::broker
