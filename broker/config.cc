#include "broker/config.h"

#include <unistd.h>

#include <cctype>
#include <fstream>
#include <sstream>
#include <map>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "capnp/dynamic.h"
#include "capnp/schema-parser.h"
#include "common/capnp_text_locator.h"
#include "kj/filesystem.h"
#include "devproc/ahci/ahci_options.h"
#include "devproc/virtio_blk/blk_requests.h"
#include "devproc/virtio_net/net_queues.h"
#include "schema/vm_schema_text.h"

namespace hv::broker {
namespace {

constexpr uint64_t kMinMemory = 2ull << 20;
constexpr uint64_t kMaxMemory = 1ull << 40;
constexpr uint32_t kMaxCpus = 64;
constexpr size_t kMaxCmdline = 65535;

// bhyve's emulation names (bhyve(8) -s), and hv's state for each.
const std::map<std::string, bool>& Emulations() {
  static const auto* table = new std::map<std::string, bool>{
      {"hostbridge", true}, {"amd_hostbridge", true}, {"lpc", true},
      {"virtio-blk", true}, {"virtio-net", true},   {"virtio-net-viona", false},
      {"virtio-rnd", false}, {"virtio-console", false}, {"virtio-9p", false},
      {"virtio-scsi", false}, {"virtio-input", false}, {"ahci", true},
      {"ahci-hd", true},     {"ahci-cd", true},      {"nvme", false},
      {"e1000", false},      {"fbuf", false},         {"xhci", false},
      {"passthru", false},   {"uart", false},
  };
  return *table;
}

std::string Resolve(const std::string& base_dir, const std::string& path) {
  if (path.empty() || path[0] == '/') return path;
  return base_dir + "/" + path;
}

// Collects errors, each placed in the text by the locator.
class Checker {
 public:
  Checker(const std::string& file, const CapnpTextLocator& locator)
      : file_(file), locator_(locator) {}
  void Error(const std::string& field, const std::string& message) {
    TextLocation at = locator_.Find(field);
    errors_.push_back(absl::StrCat(file_, ":", at.line, ":", at.column, ": ", field, ": ", message));
  }
  int LineOf(const std::string& field) const { return locator_.Find(field).line; }
  bool ok() const { return errors_.empty(); }
  absl::Status ToStatus() const {
    return absl::InvalidArgumentError(absl::StrJoin(errors_, "\n"));
  }

 private:
  std::string file_;
  const CapnpTextLocator& locator_;
  std::vector<std::string> errors_;
};

// VM and device names end up in paths and socket names: a small alphabet.
// Device names may also hold '@' ("virtio-blk@3.0").
bool ValidName(const std::string& name, bool device = false) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    if (!isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-' &&
        !(device && c == '@')) {
      return false;
    }
  }
  return name[0] != '.' && name[0] != '-';
}

void CheckReadable(Checker& check, const std::string& field, const std::string& path) {
  if (access(path.c_str(), R_OK) != 0) {
    check.Error(field, absl::StrCat("cannot read '", path, "': ", strerror(errno)));
  }
}

// An AHCI controller's ports: `ports` for "ahci" (bhyve's hd:/cd: list), or the
// device's own path and options as port 0 for "ahci-hd" / "ahci-cd".
void CheckAhciPorts(Checker& check, const std::string& base_dir, const std::string& at,
                    schema::Device::Reader d, DeviceProcess* p) {
  std::string emulation = d.getEmulation();
  struct Port {
    bool cdrom;
    bool has_path;
    std::string path;
    capnp::List<schema::Option>::Reader options;
    std::string field;  // where it is in the VM file
  };
  std::vector<Port> ports;
  if (emulation == "ahci") {
    if (d.hasPath() || d.getOptions().size() > 0) {
      check.Error(at + (d.hasPath() ? ".path" : ".options"),
                  "ahci takes its disks in `ports` (type, path, options per port); path and "
                  "options are for ahci-hd and ahci-cd");
    }
    if (d.getPorts().size() == 0) {
      check.Error(at + ".emulation",
                  "ahci needs at least one entry in `ports` (e.g. ports = [(type = hd, path = "
                  "\"disk.img\")])");
      return;
    }
    if (d.getPorts().size() > ahci::kMaxPorts) {
      check.Error(at + ".ports", absl::StrCat(d.getPorts().size(), " ports; an AHCI controller has at most ",
                                               ahci::kMaxPorts));
      return;
    }
    for (size_t k = 0; k < d.getPorts().size(); ++k) {
      auto port = d.getPorts()[k];
      ports.push_back({port.getType() == schema::AhciPortType::CD, port.hasPath(), port.getPath(),
                       port.getOptions(), absl::StrCat(at, ".ports[", k, "]")});
    }
  } else {
    if (d.getPorts().size() > 0) {
      check.Error(at + ".ports", absl::StrCat(emulation, " has one port, given by path and options; "
                                              "use emulation \"ahci\" for several"));
      return;
    }
    ports.push_back({emulation == "ahci-cd", d.hasPath(), d.getPath(), d.getOptions(), at});
  }
  for (const Port& port : ports) {
    std::vector<std::pair<std::string, std::string>> options;
    for (auto o : port.options) options.push_back({o.getKey(), o.getValue()});
    auto parsed = ahci::ParseAhciPortOptions(port.cdrom, options);
    BackendFile file;
    if (!parsed.ok()) {
      check.Error(port.field + ".options", std::string(parsed.status().message()));
    } else {
      file.read_only = parsed->read_only;
      file.no_cache = parsed->no_cache;
      file.sync = parsed->sync_writes;
    }
    if (!port.has_path || port.path.empty()) {
      check.Error(port.field + ".path", port.cdrom ? "an AHCI CD-ROM port needs an ISO image"
                                                   : "an AHCI disk port needs a disk image or block device");
    } else {
      file.path = Resolve(base_dir, port.path);
      if (access(file.path.c_str(), file.read_only ? R_OK : (R_OK | W_OK)) != 0) {
        check.Error(port.field + ".path",
                    absl::StrCat("cannot open '", file.path, "' for ",
                                 file.read_only ? "reading" : "reading and writing", ": ",
                                 strerror(errno)));
      }
    }
    p->ports.push_back(file);
  }
}

// Collects every error the schema parser reports (it reports them one by one as
// recoverable exceptions carrying the file and line) instead of stopping at the first.
class ParseErrorCollector : public kj::ExceptionCallback {
 public:
  explicit ParseErrorCollector(const std::string& shown_path) : shown_path_(shown_path) {}
  void onRecoverableException(kj::Exception&& e) override { Add(e); }
  void Add(const kj::Exception& e) {
    std::string where = e.getFile() != nullptr && e.getFile()[0] != '\0'
                            ? absl::StrCat(shown_path_, ":", e.getLine() + 1)  // capnp counts lines from 0
                            : shown_path_;
    errors_.push_back(absl::StrCat(where, ": ", e.getDescription().cStr()));
  }
  bool empty() const { return errors_.empty(); }
  absl::Status ToStatus() const { return absl::InvalidArgumentError(absl::StrJoin(errors_, "\n")); }

 private:
  std::string shown_path_;
  std::vector<std::string> errors_;
};

// Runs SchemaParser on `text` (the VM file's contents). The schema texts come from
// memory, so nothing needs installing. A VM file needs no file ID of its own: one
// is appended (after the last line, so line numbers stay).
absl::StatusOr<capnp::ConstSchema> ParseVmConstant(const std::string& path,
                                                   const std::string& text,
                                                   capnp::SchemaParser& parser,
                                                   std::string* const_name) {
  auto files = kj::newInMemoryDirectory(kj::nullClock());
  auto write = [&](kj::PathPtr at, kj::StringPtr contents) {
    files->openFile(at, kj::WriteMode::CREATE | kj::WriteMode::CREATE_PARENT)->writeAll(contents);
  };
  write(kj::Path({"hv", "vm.capnp"}), schema::kVmSchemaText);
  write(kj::Path({"capnp", "c++.capnp"}), schema::kCxxSchemaText);
  std::string source = text;
  bool has_id = false;
  for (size_t at = 0; at < source.size();) {
    size_t eol = source.find('\n', at);
    if (eol == std::string::npos) eol = source.size();
    size_t first = source.find_first_not_of(" \t", at);
    if (first < eol && source.compare(first, 3, "@0x") == 0) has_id = true;
    at = eol + 1;
  }
  if (!has_id) {
    uint64_t id = (std::hash<std::string>()(path) | (1ull << 63));
    source += absl::StrFormat("\n@%#x;\n", id);
  }
  kj::Path file_path({"vm", "file.capnp"});
  write(file_path, kj::StringPtr(source.c_str()));
  const kj::ReadableDirectory* import_path[] = {files.get()};
  ParseErrorCollector errors(path);
  capnp::ParsedSchema parsed;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
                parsed = parser.parseFromDirectory(*files, file_path.clone(), import_path);
              })) {
    if (errors.empty()) errors.Add(*e);
  }
  if (!errors.empty()) return errors.ToStatus();
  const uint64_t vm_type = capnp::typeId<schema::Vm>();
  std::vector<std::pair<std::string, capnp::ConstSchema>> candidates;
  for (auto nested : parsed.getProto().getNestedNodes()) {
    auto child = parsed.getNested(nested.getName());
    if (!child.getProto().isConst()) continue;
    auto c = child.asConst();
    if (c.getType().isStruct() && c.getType().asStruct().getProto().getId() == vm_type) {
      candidates.push_back({nested.getName(), c});
    }
  }
  for (auto& [name, c] : candidates) {
    if (name == "vm") {
      *const_name = name;
      return c;
    }
  }
  if (candidates.size() == 1) {
    *const_name = candidates[0].first;
    return candidates[0].second;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      path, ":1:1: ",
      candidates.empty() ? "no constant of type Vm (write `const vm :Vm = (...);`)"
                         : "several Vm constants and none is named `vm`"));
}

}  // namespace

bool CanRestart(DeviceProcessKind kind) {
  return kind == DeviceProcessKind::kLpc || kind == DeviceProcessKind::kVirtioBlk;
}

absl::StatusOr<uint64_t> ParseMemorySize(const std::string& text) {
  size_t i = 0;
  uint64_t value = 0;
  while (i < text.size() && isdigit(static_cast<unsigned char>(text[i]))) {
    if (value > (UINT64_MAX - 9) / 10) return absl::InvalidArgumentError("too large");
    value = value * 10 + (text[i] - '0');
    ++i;
  }
  if (i == 0) return absl::InvalidArgumentError("expected a number with an optional K, M, G or T");
  uint64_t unit = 1ull << 20;  // no suffix: MiB
  if (i < text.size()) {
    switch (tolower(text[i])) {
      case 'k': unit = 1ull << 10; break;
      case 'm': unit = 1ull << 20; break;
      case 'g': unit = 1ull << 30; break;
      case 't': unit = 1ull << 40; break;
      default:
        return absl::InvalidArgumentError(absl::StrCat("unknown size suffix '", text.substr(i), "'"));
    }
    ++i;
  }
  if (i != text.size()) {
    return absl::InvalidArgumentError(absl::StrCat("unexpected '", text.substr(i), "' after the size"));
  }
  if (value > UINT64_MAX / unit) return absl::InvalidArgumentError("too large");
  return value * unit;
}

bool IsKnownEmulation(const std::string& emulation) { return Emulations().count(emulation) > 0; }
bool IsSupportedEmulation(const std::string& emulation) {
  auto it = Emulations().find(emulation);
  return it != Emulations().end() && it->second;
}

absl::StatusOr<VmConfig> LoadVmConfig(const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError("no VM file given");
  if (access(path.c_str(), R_OK) != 0) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot read: ", strerror(errno)));
  }
  std::string text;
  {
    std::ifstream in(path);
    std::stringstream contents;
    contents << in.rdbuf();
    text = contents.str();
  }
  size_t slash = path.rfind('/');
  std::string base_dir = slash == std::string::npos ? "." : path.substr(0, slash == 0 ? 1 : slash);
  return LoadVmConfigText(path, std::move(text), base_dir);
}

absl::StatusOr<VmConfig> LoadVmConfigText(const std::string& path, std::string text,
                                          const std::string& base_dir) {
  capnp::SchemaParser parser;
  std::string const_name;
  auto constant = ParseVmConstant(path, text, parser, &const_name);
  if (!constant.ok()) return constant.status();

  VmConfig config;
  config.path = path;
  config.base_dir = base_dir;
  config.message = std::make_unique<capnp::MallocMessageBuilder>();
  try {
    config.message->setRoot(constant->as<capnp::DynamicStruct>());
  } catch (const kj::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", e.getDescription().cStr()));
  }

  CapnpTextLocator locator(std::move(text), const_name);
  Checker check(path, locator);
  auto vm = config.vm();

  if (!vm.hasName()) {
    check.Error("name", "the VM needs a name");
  } else if (!ValidName(vm.getName())) {
    check.Error("name", absl::StrCat("'", vm.getName().cStr(),
                                     "' is not a valid VM name (1-64 of A-Z a-z 0-9 . _ -)"));
  }
  if (vm.getCpus() == 0 || vm.getCpus() > kMaxCpus) {
    check.Error("cpus", absl::StrCat(vm.getCpus(), " vCPUs: must be 1 to ", kMaxCpus));
  }
  if (vm.getSockets() != 0 || vm.getCores() != 0 || vm.getThreads() != 0) {
    uint32_t s = vm.getSockets() ? vm.getSockets() : 1, c = vm.getCores() ? vm.getCores() : 1,
             t = vm.getThreads() ? vm.getThreads() : 1;
    if (s * c * t != vm.getCpus()) {
      check.Error("sockets", absl::StrCat("sockets*cores*threads = ", s * c * t,
                                          " does not match cpus = ", vm.getCpus()));
    }
  }
  auto memory = ParseMemorySize(vm.getMemory());
  if (!memory.ok()) {
    check.Error("memory", absl::StrCat("'", vm.getMemory().cStr(), "': ", memory.status().message()));
  } else if (*memory < kMinMemory || *memory > kMaxMemory) {
    check.Error("memory", absl::StrCat("'", vm.getMemory().cStr(), "' is outside 2M to 1T"));
  } else if (*memory % 4096 != 0) {
    check.Error("memory", absl::StrCat("'", vm.getMemory().cStr(), "' is not a multiple of 4K"));
  } else {
    config.memory_bytes = *memory;
  }

  auto boot = vm.getBoot();
  if (boot.hasBootrom()) {
    check.Error("boot.bootrom", "firmware boot is not supported yet; give boot.kernel");
  }
  if (!boot.hasKernel()) {
    check.Error("boot.kernel", "no kernel to boot");
  } else {
    config.kernel_path = Resolve(config.base_dir, boot.getKernel());
    CheckReadable(check, "boot.kernel", config.kernel_path);
  }
  if (boot.hasInitrd()) {
    config.initrd_path = Resolve(config.base_dir, boot.getInitrd());
    CheckReadable(check, "boot.initrd", config.initrd_path);
  }
  if (boot.getCmdline().size() > kMaxCmdline) {
    check.Error("boot.cmdline", absl::StrCat("longer than ", kMaxCmdline, " bytes"));
  }

  std::map<std::pair<int, int>, size_t> used;  // (slot, function) -> device index
  std::set<std::string> names;
  int lpc_index = -1;
  auto devices = vm.getDevices();
  for (size_t i = 0; i < devices.size(); ++i) {
    auto d = devices[i];
    std::string at = absl::StrCat("devices[", i, "]");
    std::string emulation = d.getEmulation();
    bool placed = true;
    if (d.getSlot() > 31) {
      check.Error(at + ".slot", absl::StrCat("slot ", d.getSlot(), " is outside 0-31"));
      placed = false;
    }
    if (d.getFunction() > 7) {
      check.Error(at + ".function", absl::StrCat("function ", d.getFunction(), " is outside 0-7"));
      placed = false;
    }
    if (placed) {
      auto key = std::make_pair(d.getSlot(), d.getFunction());
      auto it = used.find(key);
      if (it != used.end()) {
        check.Error(at + ".slot",
                    absl::StrCat("slot ", d.getSlot(), " function ", d.getFunction(),
                                 " is already used by devices[", it->second, "] (line ",
                                 check.LineOf(absl::StrCat("devices[", it->second, "]")), ")"));
      } else {
        used[key] = i;
      }
    }
    if (emulation.empty()) {
      check.Error(at + ".emulation", "no emulation given (e.g. \"lpc\", \"virtio-blk\")");
      continue;
    }
    if (!IsKnownEmulation(emulation)) {
      std::vector<std::string> known;
      for (const auto& [k, v] : Emulations()) known.push_back(k);
      check.Error(at + ".emulation", absl::StrCat("unknown device emulation '", emulation,
                                                  "'; bhyve's are: ", absl::StrJoin(known, ", ")));
      continue;
    }
    if (!IsSupportedEmulation(emulation)) {
      check.Error(at + ".emulation", absl::StrCat("'", emulation, "' is not supported by hv yet"));
      continue;
    }
    std::string name = d.hasName() ? std::string(d.getName())
                                    : absl::StrCat(emulation, "@", d.getSlot(), ".", d.getFunction());
    bool at_host_bridge = d.getSlot() == 0 && d.getFunction() == 0;
    if ((emulation == "hostbridge" || emulation == "amd_hostbridge") != at_host_bridge) {
      check.Error(at + ".slot", at_host_bridge
                                    ? "slot 0 function 0 is the host bridge"
                                    : "the host bridge can only be at slot 0 function 0");
      continue;
    }
    if (emulation == "lpc") {
      if (lpc_index >= 0) {
        check.Error(at + ".emulation", absl::StrCat("a second lpc device (the first is devices[",
                                                    lpc_index, "])"));
        continue;
      }
      lpc_index = i;
      if (!d.hasName()) name = "lpc";
      DeviceProcess p;
      p.kind = DeviceProcessKind::kLpc;
      p.name = name;
      p.device_index = i;
      config.processes.push_back(p);
    }
    if (emulation == "virtio-blk") {
      DeviceProcess p;
      p.kind = DeviceProcessKind::kVirtioBlk;
      p.name = name;
      p.device_index = i;
      std::vector<std::pair<std::string, std::string>> options;
      for (size_t k = 0; k < d.getOptions().size(); ++k) {
        auto o = d.getOptions()[k];
        std::string key = o.getKey(), value = o.getValue();
        if (key == "num_queues" || key == "queues") {
          uint32_t n = 0;
          if (!absl::SimpleAtoi(value, &n) || n < 1 || n > 16) {
            check.Error(absl::StrCat(at, ".options[", k, "].value"),
                        absl::StrCat(key, "=", value, ": want 1 to 16 queues"));
          }
          p.queues = n;
          continue;
        }
        options.push_back({key, value});
      }
      auto parsed = virtio_blk::ParseBlkOptions(options);
      if (!parsed.ok()) {
        check.Error(at + ".options", std::string(parsed.status().message()));
      } else {
        p.read_only = parsed->read_only;
        p.no_cache = parsed->no_cache;
        p.sync = parsed->sync_writes;
      }
      if (!d.hasPath()) {
        check.Error(at + ".path", "virtio-blk needs a disk image or block device");
      } else {
        p.path = Resolve(config.base_dir, d.getPath());
        if (access(p.path.c_str(), p.read_only ? R_OK : (R_OK | W_OK)) != 0) {
          check.Error(at + ".path", absl::StrCat("cannot open '", p.path, "' for ",
                                                 p.read_only ? "reading" : "reading and writing",
                                                 ": ", strerror(errno)));
        }
      }
      config.processes.push_back(p);
    }
    bool ahci = emulation == "ahci" || emulation == "ahci-hd" || emulation == "ahci-cd";
    if (!ahci && d.getPorts().size() > 0) {
      check.Error(at + ".ports", absl::StrCat("ports are for an AHCI controller (emulation \"ahci\"), not ",
                                              emulation));
    }
    if (ahci) {
      DeviceProcess p;
      p.kind = DeviceProcessKind::kAhci;
      p.name = name;
      p.device_index = i;
      CheckAhciPorts(check, config.base_dir, at, d, &p);
      config.processes.push_back(p);
    }
    if (emulation == "virtio-net") {
      DeviceProcess p;
      p.kind = DeviceProcessKind::kVirtioNet;
      p.name = name;
      p.device_index = i;
      std::vector<std::pair<std::string, std::string>> options;
      for (auto o : d.getOptions()) options.push_back({o.getKey(), o.getValue()});
      auto parsed = virtio_net::ParseNetOptions(std::string(d.getPath()), options);
      if (!parsed.ok()) {
        check.Error(at + (d.hasPath() && options.empty() ? ".path" : ".options"),
                    std::string(parsed.status().message()));
      } else {
        p.queues = parsed->queue_pairs;
        p.tap = parsed->tap_name;
      }
      config.processes.push_back(p);
    }
    if (!config.processes.empty() && config.processes.back().device_index == i) {
      DeviceProcess& p = config.processes.back();
      auto restart = d.getRestart();
      p.restart_mode = restart.getMode();
      p.restart_limit = restart.getLimit();
      p.restart_window_s = restart.getWindowSeconds();
      p.restart_backoff_ms = restart.getBackoffMs();
      if (p.restart_mode != schema::RestartMode::NEVER && !CanRestart(p.kind)) {
        check.Error(at + ".restart.mode",
                    absl::StrCat("'", emulation, "' cannot restart yet: its process keeps no state "
                                 "for a successor (lpc and virtio-blk do)"));
      }
      if (p.restart_mode != schema::RestartMode::NEVER && p.restart_window_s == 0) {
        check.Error(at + ".restart.windowSeconds", "must be at least 1");
      }
      if (p.restart_backoff_ms > 60000) {
        check.Error(at + ".restart.backoffMs", "at most 60000 (a minute)");
      }
    }
    if (!ValidName(name, /*device=*/true)) {
      check.Error(at + ".name", absl::StrCat("'", name, "' is not a valid device name"));
    } else if (!names.insert(name).second) {
      check.Error(at + ".name", absl::StrCat("device name '", name, "' is used twice"));
    }
  }
  // Multi-function devices need function 0 (guests probe functions only then).
  for (const auto& [key, index] : used) {
    if (key.second != 0 && used.count({key.first, 0}) == 0) {
      check.Error(absl::StrCat("devices[", index, "].function"),
                  absl::StrCat("slot ", key.first, " has function ", key.second,
                               " but no function 0"));
    }
  }
  auto lpc = vm.getLpc();
  schema::Serial::Reader serials[] = {lpc.getCom1(), lpc.getCom2(), lpc.getCom3(), lpc.getCom4()};
  int stdio_ports = 0;
  for (int i = 0; i < 4; ++i) {
    std::string at = absl::StrCat("lpc.com", i + 1);
    if (serials[i].isNone()) continue;
    if (lpc_index < 0) {
      check.Error(at, "a COM port needs an lpc device (bhyve: -s 31,lpc)");
    }
    if (serials[i].isStdio() && ++stdio_ports > 1) {
      check.Error(at + ".stdio", "only one COM port can use stdio");
    }
    if (serials[i].isSocket()) {
      std::string path = serials[i].getSocket();
      if (path.empty() || path.size() >= 108) {
        check.Error(at + ".socket", "a socket path of 1 to 107 bytes");
      }
    }
  }
  if (!check.ok()) return check.ToStatus();
  return config;
}

}  // namespace hv::broker
