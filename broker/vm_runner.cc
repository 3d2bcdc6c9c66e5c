#include "broker/vm_runner.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <map>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "broker/control.h"
#include "broker/spawn.h"
#include "broker/supervisor.h"
#include "common/device_state.h"
#include "broker/vm_identity.h"
#include "common/exit_channel.h"
#include "common/fd.h"
#include "common/guest_layout.h"
#include "common/log.h"
#include "common/sandbox.h"
#include "common/zmq_msg.h"
#include "devproc/virtio_net/net_queues.h"
#include "hvcore/acpi/acpi.h"

namespace hv::broker {
namespace {

using Clock = std::chrono::steady_clock;

struct Process {
  std::string name;  // "core" or the device's name (also its ZeroMQ identity)
  bool is_core = false;
  const DeviceProcess* device = nullptr;
  Child child;
  bool sandboxed = false;
  Fd seccomp_reports;  // read end of the pipe its SIGSYS handler reports on
  bool exited = false;
  bool ready = false;
  Clock::time_point spawned_at;
  uint32_t restarts = 0;  // successors started after a death
  // Supervision (broker/supervisor.h).
  Fd state;  // device: its state region (common/device_state.h), kept across deaths
  std::unique_ptr<DeviceStateRegion> state_view;  // the broker's mapping, for counters
  std::unique_ptr<RestartBudget> budget;
  bool respawn_pending = false;  // dead; a successor starts at respawn_at
  Clock::time_point respawn_at;
  Clock::time_point died_at;
  bool restart_requested = false;  // `hvbroker restart`: asked to stop for a successor
  Clock::time_point kill_at;       // ... and killed if it has not by then
  std::vector<std::string> waiting_clients;  // control clients told when it serves again
  std::map<std::string, Clock::time_point> tracers;  // `hvbroker trace` clients, last heard
  bool debug_next = false;  // `hvbroker debug`: its successor starts unsandboxed, stopped
  std::vector<std::string> debug_clients;  // told the debug successor's pid once spawned
  Fd channel;   // device: its exit-channel memfd
  Fd doorbell;  // device: its doorbell eventfd
  // device: backend fds it inherits, by name ("com1.listen"); stdio is passed as 0/1.
  std::vector<std::pair<std::string, Fd>> backend_fds;
  struct Irq {
    uint32_t gsi;
    Fd fd;
    Fd resample;       // level-triggered lines only
    std::string name;  // as the device knows it: "irq4", "intx"
  };
  std::vector<Irq> irqs;  // device: the interrupt lines it raises
  std::vector<Fd> msix;    // virtio: one eventfd per MSI-X vector
  std::vector<Fd> notify;  // virtio: one eventfd per queue doorbell
  Fd msi;                  // ahci: its MSI eventfd (the core routes it)
  std::vector<msg::Range::Reader> ranges;  // device: what it asked the core to forward
  capnp::MallocMessageBuilder ranges_message;
};

// The terminal in raw-ish mode while a COM port uses stdio: keys go to the guest
// as typed; Ctrl-C still stops the VM.
class TerminalMode {
 public:
  void MakeRaw() {
    if (!isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &saved_) != 0) return;
    termios raw = saved_;
    cfmakeraw(&raw);
    raw.c_lflag |= ISIG;
    raw.c_oflag |= OPOST | ONLCR;
    if (tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0) active_ = true;
  }
  ~TerminalMode() {
    if (active_) tcsetattr(STDIN_FILENO, TCSANOW, &saved_);
  }

 private:
  termios saved_ = {};
  bool active_ = false;
};

// A listening Unix socket at `path` (bhyve's -l com1,socket,PATH), owner-only.
absl::StatusOr<Fd> ListenUnix(const std::string& path) {
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("socket path too long: ", path));
  }
  memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  struct stat st;
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::AlreadyExistsError(absl::StrCat(path, " exists and is not a socket"));
    }
    unlink(path.c_str());  // a stale socket from an earlier run
  }
  Fd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return ErrnoStatus("socket");
  mode_t old = umask(0077);
  int r = bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  umask(old);
  if (r != 0) return ErrnoStatus("bind " + path);
  if (listen(fd.get(), 1) != 0) return ErrnoStatus("listen " + path);
  return fd;
}

class VmRunner {
 public:
  VmRunner(VmConfig config, const RunOptions& options)
      : config_(std::move(config)),
        options_(options),
        router_(zmq_, zmq::socket_type::router),
        control_(zmq_) {}
  ~VmRunner();
  int Run();

 private:
  absl::Status Prepare();
  absl::Status CreateRuntimeDir();
  // The VM's processes must reach broker.ctl: every directory above it must let
  // them through (search permission for others).
  absl::Status CheckRuntimeDirReachable() const;
  bool Sandboxed(const std::string& process_name) const;
  absl::Status SpawnAll();
  absl::Status SpawnProcess(Process* p);
  // Supervision: a device died while the VM ran, or was asked to restart.
  void Supervise(Process& p, int wait_status, const std::string& what);
  void Respawn(Process& p);
  void ServeAgain(Process& p);
  // The earliest supervision deadline (a successor to start, a process to kill).
  std::optional<Clock::time_point> NextSupervisionDeadline() const;
  void RunSupervisionDeadlines();
  // `hvbroker trace`: lines to the device's tracers, and switching its tracing.
  void TraceLines(Process& p, const std::vector<std::string>& lines);
  void TraceNote(Process& p, const std::string& what);
  void SetDeviceTracing(Process& p, bool on);
  absl::Status PrepareLpc(Process& p);
  absl::Status PrepareVirtioBlk(Process& p);
  absl::Status PrepareAhci(Process& p);
  absl::Status PrepareVirtioNet(Process& p);
  // What every virtio function gets: a doorbell per queue, an MSI-X vector per
  // queue plus one for configuration changes, and INTx for guests without MSI-X.
  absl::Status PrepareVirtioInterrupts(Process& p, int queues);
  absl::Status PreparePciIntx(Process& p);
  // A device may claim config space only at its own slot and function.
  absl::Status CheckRange(const Process& p, msg::Range::Reader range);
  void OnMessage(const std::string& from, msg::Message::Reader m);
  // A request on the control socket (`hvbroker status`, `stop`, ...).
  // Returns false when the reply is sent later (`restart`: once the successor serves).
  bool OnControl(const std::string& client, ctl::ControlRequest::Reader request,
                 ctl::ControlReply::Builder reply);
  void FillStatus(ctl::VmStatus::Builder status);
  // A COM port the guest's console uses: the broker's stdio, unless detached.
  bool ComOnStdio(schema::Serial::Reader serial) const {
    return serial.isStdio() && !options_.detached;
  }
  void SendConfigureDevice(Process& p);
  void MaybeConfigureCore();
  void OnChildExit(Process& p);
  void BeginStop(int code, const std::string& why);
  void Shutdown();
  Process* Find(const std::string& name);

  VmConfig config_;
  RunOptions options_;
  std::string name_;
  std::string runtime_dir_;
  std::string endpoint_;
  Fd lock_;
  VmIdentity identity_;
  Fd kvm_;  // for hvcore, which cannot open /dev/kvm inside its sandbox
  Fd ram_;
  Fd kernel_;
  Fd initrd_;
  std::vector<GuestRamRegion> regions_;
  zmq::context_t zmq_{1};
  zmq::socket_t router_;
  ControlServer control_;
  Clock::time_point born_ = Clock::now();
  std::vector<std::pair<std::string, std::string>> consoles_;  // COM port, socket path
  std::vector<std::unique_ptr<Process>> processes_;
  Fd signals_;
  TerminalMode terminal_;
  std::vector<std::string> socket_paths_;  // COM sockets to remove at the end

  bool core_configured_ = false;
  bool started_ = false;
  std::optional<int> exit_code_;
  std::string exit_reason_;
};

VmRunner::~VmRunner() {
  for (const auto& path : socket_paths_) unlink(path.c_str());
  if (!runtime_dir_.empty()) {
    unlink((runtime_dir_ + "/broker.ctl").c_str());
    unlink(ControlSocketPath(runtime_dir_).c_str());
    unlink((runtime_dir_ + "/lock").c_str());
    rmdir(runtime_dir_.c_str());
  }
}

Process* VmRunner::Find(const std::string& name) {
  for (auto& p : processes_) {
    if (p->name == name) return p.get();
  }
  return nullptr;
}

absl::Status VmRunner::CreateRuntimeDir() {
  std::string base = RuntimeBaseDir();
  // Others may pass through the base (each VM's uid to its own directory), not list it.
  if (mkdir(base.c_str(), 0711) != 0 && errno != EEXIST) return ErrnoStatus("mkdir " + base);
  // A base made by an older broker (0700) is opened for passing through.
  struct stat base_stat;
  if (stat(base.c_str(), &base_stat) == 0 && base_stat.st_uid == getuid() &&
      (base_stat.st_mode & 0011) != 0011) {
    chmod(base.c_str(), (base_stat.st_mode & 07777) | 0011);
  }
  runtime_dir_ = base + "/" + name_;
  if (mkdir(runtime_dir_.c_str(), 0700) != 0 && errno != EEXIST) {
    std::string dir = std::exchange(runtime_dir_, "");
    return ErrnoStatus("mkdir " + dir);
  }
  // Only this broker and the VM's own uid (group) reach its control socket;
  // the VM's processes may pass through the directory, not change it.
  if (chown(runtime_dir_.c_str(), getuid(), identity_.gid) != 0 ||
      chmod(runtime_dir_.c_str(), 0710) != 0) {
    return ErrnoStatus("chown/chmod " + runtime_dir_);
  }
  endpoint_ = BrokerEndpoint(runtime_dir_);
  if (runtime_dir_.size() + strlen("/broker.ctl") >= 107) {
    return absl::InvalidArgumentError(absl::StrCat(
        "runtime directory '", runtime_dir_, "' is too long for a Unix socket; set HV_RUNTIME_DIR"));
  }
  std::string lock_path = runtime_dir_ + "/lock";
  lock_.Reset(open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!lock_.valid()) return ErrnoStatus("open " + lock_path);
  if (flock(lock_.get(), LOCK_EX | LOCK_NB) != 0) {
    char pid[32] = {};
    ssize_t ignored = pread(lock_.get(), pid, sizeof(pid) - 1, 0);
    (void)ignored;
    runtime_dir_.clear();  // not ours to clean up
    return absl::AlreadyExistsError(
        absl::StrCat("VM '", name_, "' is already running (broker pid ", pid, ")"));
  }
  std::string pid = absl::StrCat(getpid(), "\n");
  if (ftruncate(lock_.get(), 0) == 0) (void)WriteFull(lock_.get(), pid.data(), pid.size());
  unlink((runtime_dir_ + "/broker.ctl").c_str());  // left by a broker that crashed
  return absl::OkStatus();
}

absl::Status VmRunner::Prepare() {
  auto vm = config_.vm();
  name_ = vm.getName();
  auto identity = ClaimVmIdentity(options_.uid_range);
  if (!identity.ok()) return identity.status();
  identity_ = std::move(*identity);
  if (getuid() != 0) {
    HV_WARN("not root: VM '%s' runs under this user's uid %u, not a uid of its own",
            name_.c_str(), identity_.uid);
  }
  if (options_.no_sandbox.count("*") != 0) {
    HV_WARN("*** --no-sandbox: NO process of VM '%s' is sandboxed; every one runs with the "
            "broker's privileges. For debugging only. ***", name_.c_str());
  } else {
    for (const auto& n : options_.no_sandbox) {
      HV_WARN("*** --no-sandbox=%s: process '%s' of VM '%s' is NOT sandboxed. For debugging "
              "only. ***", n.c_str(), n.c_str(), name_.c_str());
    }
  }
  if (options_.seccomp_log) {
    HV_WARN("*** --seccomp-log: forbidden system calls are only logged by the kernel, not "
            "stopped. For building allowlists only. ***");
  }
  HV_DEBUG("VM '%s' runs as uid %u gid %u", name_.c_str(), identity_.uid, identity_.gid);
  if (auto s = CreateRuntimeDir(); !s.ok()) return s;

  // Guest RAM: one memfd, sealed so that nobody can shrink it under a mapping.
  int ram = memfd_create(("hv-ram:" + name_).c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (ram < 0) return ErrnoStatus("memfd_create guest RAM");
  ram_.Reset(ram);
  if (ftruncate(ram, config_.memory_bytes) != 0) return ErrnoStatus("size guest RAM");
  if (fcntl(ram, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    return ErrnoStatus("seal guest RAM");
  }
  regions_ = GuestRamRegions(config_.memory_bytes);

  kernel_.Reset(open(config_.kernel_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!kernel_.valid()) return ErrnoStatus("open kernel " + config_.kernel_path);
  if (!config_.initrd_path.empty()) {
    initrd_.Reset(open(config_.initrd_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!initrd_.valid()) return ErrnoStatus("open initrd " + config_.initrd_path);
  }

  // Signals arrive as messages in the loop.
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGHUP);
  sigprocmask(SIG_BLOCK, &mask, nullptr);
  signals_.Reset(signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
  signal(SIGPIPE, SIG_IGN);

  try {
    router_.set(zmq::sockopt::router_mandatory, 1);
    // A device's successor connects under its predecessor's identity, maybe
    // before the broker has seen the old connection close.
    router_.set(zmq::sockopt::router_handover, 1);
    router_.set(zmq::sockopt::linger, 0);
    router_.bind(endpoint_);
  } catch (const zmq::error_t& e) {
    return absl::UnavailableError(absl::StrCat("bind ", endpoint_, ": ", e.what()));
  }
  std::string ctl = runtime_dir_ + "/broker.ctl";
  if (chown(ctl.c_str(), getuid(), identity_.gid) != 0 || chmod(ctl.c_str(), 0660) != 0) {
    return ErrnoStatus("chown/chmod " + ctl);
  }
  if (auto s = CheckRuntimeDirReachable(); !s.ok()) return s;
  if (auto s = control_.Bind(runtime_dir_); !s.ok()) return s;

  for (const auto& d : config_.processes) {
    auto p = std::make_unique<Process>();
    p->name = d.name;
    p->device = &d;
    size_t bytes = ExitChannelBytes(vm.getCpus());
    int channel = memfd_create(("hv-exit:" + d.name).c_str(), MFD_CLOEXEC);
    if (channel < 0) return ErrnoStatus("memfd_create exit channel");
    p->channel.Reset(channel);
    if (ftruncate(channel, bytes) != 0) return ErrnoStatus("size exit channel");
    void* base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, channel, 0);
    if (base == MAP_FAILED) return ErrnoStatus("mmap exit channel");
    InitExitChannel(base, vm.getCpus());
    munmap(base, bytes);
    p->doorbell.Reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!p->doorbell.valid()) return ErrnoStatus("eventfd");
    // The state region outlives each of the device's processes.
    p->state.Reset(memfd_create(("hv-state:" + d.name).c_str(), MFD_CLOEXEC));
    if (!p->state.valid()) return ErrnoStatus("memfd_create state region");
    if (auto s = InitDeviceStateRegion(p->state.get(), kDeviceStateBytes); !s.ok()) return s;
    auto view = DeviceStateRegion::Map(p->state.get());
    if (!view.ok()) return view.status();
    p->state_view = std::move(*view);
    p->budget = std::make_unique<RestartBudget>(d.restart_mode, d.restart_limit,
                                                d.restart_window_s, d.restart_backoff_ms);
    if (d.kind == DeviceProcessKind::kLpc) {
      if (auto s = PrepareLpc(*p); !s.ok()) return s;
    }
    if (d.kind == DeviceProcessKind::kVirtioBlk) {
      if (auto s = PrepareVirtioBlk(*p); !s.ok()) return s;
    }
    if (d.kind == DeviceProcessKind::kAhci) {
      if (auto s = PrepareAhci(*p); !s.ok()) return s;
    }
    if (d.kind == DeviceProcessKind::kVirtioNet) {
      if (auto s = PrepareVirtioNet(*p); !s.ok()) return s;
    }
    processes_.push_back(std::move(p));
  }
  auto core = std::make_unique<Process>();
  core->name = "core";
  core->is_core = true;
  processes_.push_back(std::move(core));
  kvm_.Reset(open("/dev/kvm", O_RDWR | O_CLOEXEC));
  if (!kvm_.valid()) return ErrnoStatus("open /dev/kvm");
  return SpawnAll();
}

// The lpc's ISA interrupt lines (keyboard, COM2/4, COM1/3, RTC, SCI, mouse) and
// its COM sockets.
absl::Status VmRunner::PrepareLpc(Process& p) {
  struct IsaIrq {
    uint32_t irq;
    bool level;
  };
  for (IsaIrq line : {IsaIrq{1, false}, IsaIrq{3, false}, IsaIrq{4, false}, IsaIrq{8, false},
                      IsaIrq{9, true}, IsaIrq{12, false}}) {
    Process::Irq irq;
    irq.gsi = line.irq;
    irq.name = absl::StrCat("irq", line.irq);
    irq.fd.Reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!irq.fd.valid()) return ErrnoStatus("eventfd");
    if (line.level) {
      irq.resample.Reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
      if (!irq.resample.valid()) return ErrnoStatus("eventfd");
    }
    p.irqs.push_back(std::move(irq));
  }
  auto lpc = config_.vm().getLpc();
  schema::Serial::Reader serials[] = {lpc.getCom1(), lpc.getCom2(), lpc.getCom3(), lpc.getCom4()};
  for (int i = 0; i < 4; ++i) {
    // Detached, a console on stdio becomes a socket `hvbroker console` attaches to.
    bool detached_stdio = serials[i].isStdio() && options_.detached;
    if (!serials[i].isSocket() && !detached_stdio) continue;
    std::string path = detached_stdio ? absl::StrCat(runtime_dir_, "/com", i + 1, ".sock")
                                      : std::string(serials[i].getSocket());
    auto fd = ListenUnix(path);
    if (!fd.ok()) return fd.status();
    socket_paths_.push_back(path);
    consoles_.push_back({absl::StrCat("com", i + 1), path});
    p.backend_fds.push_back({absl::StrCat("com", i + 1, ".listen"), std::move(*fd)});
  }
  return absl::OkStatus();
}

// A disk image or ISO as the VM file asks for it: read-only, O_DIRECT
// (`nocache`), O_DSYNC (`direct`).
static absl::StatusOr<Fd> OpenDiskFile(const std::string& path, bool read_only, bool no_cache,
                                bool sync) {
  int flags = (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC | (no_cache ? O_DIRECT : 0) |
              (sync ? O_DSYNC : 0);
  Fd file(open(path.c_str(), flags));
  if (!file.valid()) return ErrnoStatus(absl::StrCat("open ", path));
  return file;
}

// INTA of a PCI function, on the GSI the DSDT's _PRT names, level-triggered
// with a resample eventfd: for guests without MSI or MSI-X.
absl::Status VmRunner::PreparePciIntx(Process& p) {
  auto dev = config_.vm().getDevices()[p.device->device_index];
  Process::Irq intx;
  intx.gsi = acpi::PciIntxGsi(dev.getSlot(), 0);
  intx.name = "intx";
  intx.fd.Reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  intx.resample.Reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!intx.fd.valid() || !intx.resample.valid()) return ErrnoStatus("eventfd");
  p.irqs.push_back(std::move(intx));
  return absl::OkStatus();
}

// A virtio-blk function: its disk, one doorbell per queue, one MSI-X vector per
// queue plus one for configuration changes, and INTx for guests without MSI-X.
absl::Status VmRunner::PrepareVirtioBlk(Process& p) {
  const DeviceProcess& d = *p.device;
  auto disk = OpenDiskFile(d.path, d.read_only, d.no_cache, d.sync);
  if (!disk.ok()) {
    return absl::Status(disk.status().code(), absl::StrCat(p.name, ": ", disk.status().message()));
  }
  p.backend_fds.push_back({"disk", std::move(*disk)});
  return PrepareVirtioInterrupts(p, d.queues);
}

// An AHCI controller: each port's file (a CD's ISO read-only) as "port<N>",
// one MSI eventfd, and INTx for guests without MSI.
absl::Status VmRunner::PrepareAhci(Process& p) {
  const DeviceProcess& d = *p.device;
  for (size_t i = 0; i < d.ports.size(); ++i) {
    const BackendFile& f = d.ports[i];
    auto file = OpenDiskFile(f.path, f.read_only, f.no_cache, f.sync);
    if (!file.ok()) {
      return absl::Status(file.status().code(),
                          absl::StrCat(p.name, ": port ", i, ": ", file.status().message()));
    }
    p.backend_fds.push_back({absl::StrCat("port", i), std::move(*file)});
  }
  p.msi.Reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!p.msi.valid()) return ErrnoStatus("eventfd");
  return PreparePciIntx(p);
}

absl::Status VmRunner::PrepareVirtioInterrupts(Process& p, int queues) {
  auto event = [](std::vector<Fd>& into) -> absl::Status {
    into.emplace_back(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    return into.back().valid() ? absl::OkStatus() : ErrnoStatus("eventfd");
  };
  for (int q = 0; q < queues; ++q) {
    if (auto s = event(p.notify); !s.ok()) return s;
  }
  for (int v = 0; v < queues + 1; ++v) {
    if (auto s = event(p.msix); !s.ok()) return s;
  }
  return PreparePciIntx(p);
}

// A virtio-net function: with a tap backend, one fd per queue pair on the tap
// named in the VM file (created if missing; the device process never needs
// CAP_NET_ADMIN); user mode needs no host resource here.
absl::Status VmRunner::PrepareVirtioNet(Process& p) {
  const DeviceProcess& d = *p.device;
  for (int i = 0; !d.tap.empty() && i < d.queues; ++i) {
    Fd tun(open("/dev/net/tun", O_RDWR | O_CLOEXEC));
    if (!tun.valid()) return ErrnoStatus(absl::StrCat(p.name, ": open /dev/net/tun"));
    ifreq ifr = {};
    snprintf(ifr.ifr_name, IFNAMSIZ, "%s", d.tap.c_str());
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | (d.queues > 1 ? IFF_MULTI_QUEUE : 0);
    if (ioctl(tun.get(), TUNSETIFF, &ifr) != 0) {
      return ErrnoStatus(absl::StrCat(p.name, ": tap ", d.tap));
    }
    // The device, sandboxed under the VM's uid with no CAP_NET_ADMIN, attaches
    // and detaches its queues (TUNSETQUEUE): the tap must be the VM's.
    if (ioctl(tun.get(), TUNSETOWNER, static_cast<unsigned long>(identity_.uid)) != 0 ||
        ioctl(tun.get(), TUNSETGROUP, static_cast<unsigned long>(identity_.gid)) != 0) {
      return ErrnoStatus(absl::StrCat(p.name, ": give tap ", d.tap, " to the VM's uid"));
    }
    p.backend_fds.push_back({absl::StrCat("tap", i), std::move(tun)});
  }
  virtio_net::NetDeviceConfig net;
  net.queue_pairs = d.queues;
  return PrepareVirtioInterrupts(p, virtio_net::NumQueues(net));
}

absl::Status VmRunner::SpawnAll() {
  for (auto& p : processes_) {
    if (auto s = SpawnProcess(p.get()); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status VmRunner::SpawnProcess(Process* p) {
  {
    std::string path;
    std::vector<int> keep = {ram_.get()};
    if (p->is_core) {
      auto found = FindExecutable("hvcore/hvcore");
      if (!found.ok()) return found.status();
      path = *found;
      keep.push_back(kernel_.get());
      if (initrd_.valid()) keep.push_back(initrd_.get());
      for (auto& d : processes_) {
        if (d->is_core) continue;
        keep.push_back(d->channel.get());
        keep.push_back(d->doorbell.get());
        for (auto& irq : d->irqs) {
          keep.push_back(irq.fd.get());
          if (irq.resample.valid()) keep.push_back(irq.resample.get());
        }
        for (auto& fd : d->msix) keep.push_back(fd.get());
        for (auto& fd : d->notify) keep.push_back(fd.get());
        if (d->msi.valid()) keep.push_back(d->msi.get());
      }
    } else {
      const char* executable = "devproc/lpc/hv-lpc";
      if (p->device->kind == DeviceProcessKind::kVirtioBlk) {
        executable = "devproc/virtio_blk/hv-virtio-blk";
      } else if (p->device->kind == DeviceProcessKind::kVirtioNet) {
        executable = "devproc/virtio_net/hv-virtio-net";
      } else if (p->device->kind == DeviceProcessKind::kAhci) {
        executable = "devproc/ahci/hv-ahci";
      }
      auto found = FindExecutable(executable);
      if (!found.ok()) return found.status();
      path = *found;
      for (auto& fd : p->msix) keep.push_back(fd.get());
      for (auto& fd : p->notify) keep.push_back(fd.get());
      if (p->msi.valid()) keep.push_back(p->msi.get());
      keep.push_back(p->channel.get());
      keep.push_back(p->doorbell.get());
      for (auto& irq : p->irqs) {
        keep.push_back(irq.fd.get());
        if (irq.resample.valid()) keep.push_back(irq.resample.get());
      }
      for (auto& [name, fd] : p->backend_fds) keep.push_back(fd.get());
      if (p->state.valid()) keep.push_back(p->state.get());
    }
    std::vector<std::string> args = {"--ctl", endpoint_};
    if (p->is_core) {
      args.push_back("--kvm-fd");
      args.push_back(absl::StrCat(kvm_.get()));
      keep.push_back(kvm_.get());
    } else {
      args.push_back("--name");
      args.push_back(p->name);
    }
    p->sandboxed = Sandboxed(p->name) && !p->debug_next;
    if (p->debug_next) args.push_back("--stop-for-debugger");
    Fd report_write;
    SandboxSpawn box;
    if (p->sandboxed) {
      int report[2];
      if (pipe2(report, O_CLOEXEC | O_NONBLOCK) != 0) return ErrnoStatus("pipe2");
      p->seccomp_reports.Reset(report[0]);
      report_write.Reset(report[1]);
      keep.push_back(report_write.get());
      args.push_back("--sandbox-report-fd");
      args.push_back(absl::StrCat(report_write.get()));
      if (options_.seccomp_log) args.push_back("--seccomp-log");
      box.uid = identity_.uid;
      box.gid = identity_.gid;
      // Backends come as fds the broker opened (disk, tap, listening socket,
      // stdio), except user-mode networking: libslirp makes the guest's
      // connections from the device process, in the host's network namespace.
      box.new_network = !(p->device != nullptr &&
                          p->device->kind == DeviceProcessKind::kVirtioNet && p->device->tap.empty());
    } else {
      args.push_back("--no-sandbox");
    }
    auto child = Spawn(path, args, keep, p->sandboxed ? &box : nullptr);
    if (!child.ok()) return child.status();
    p->child = std::move(*child);
    p->spawned_at = Clock::now();
    HV_DEBUG("started %s: pid %d%s", p->name.c_str(), p->child.pid,
             p->sandboxed ? " (sandboxed)" : " (NOT sandboxed)");
  }
  return absl::OkStatus();
}

void VmRunner::SendConfigureDevice(Process& p) {
  auto vm = config_.vm();
  capnp::MallocMessageBuilder b;
  auto c = b.initRoot<msg::Message>().initConfigureDevice();
  c.setDevice(vm.getDevices()[p.device->device_index]);
  c.setLpc(vm.getLpc());
  for (size_t i = 0; i < consoles_.size(); ++i) {
    // Detached: the ports that were on stdio are on their sockets now.
    auto lpc = c.getLpc();
    schema::Serial::Builder serials[] = {lpc.getCom1(), lpc.getCom2(), lpc.getCom3(),
                                         lpc.getCom4()};
    int com = consoles_[i].first.back() - '1';
    if (serials[com].isStdio()) serials[com].setSocket(consoles_[i].second);
  }
  FillRamRegions(regions_, c.initRam(regions_.size()));
  c.setRamSize(config_.memory_bytes);
  c.setVcpus(vm.getCpus());
  c.setRtcUtc(vm.getRtcUtc());
  c.setVmName(vm.getName());
  auto self = vm.getDevices()[p.device->device_index];
  for (auto other : vm.getDevices()) {
    if (other.getSlot() == self.getSlot() && other.getFunction() != self.getFunction()) {
      c.setMultifunction(true);
    }
  }
  c.setRamFd(ram_.get());
  c.setChannelFd(p.channel.get());
  c.setDoorbellFd(p.doorbell.get());
  c.setStateFd(p.state.valid() ? p.state.get() : -1);
  c.setIncarnation(p.restarts);
  std::vector<std::pair<std::string, int>> fds;
  for (auto& [name, fd] : p.backend_fds) fds.push_back({name, fd.get()});
  for (auto& irq : p.irqs) {
    fds.push_back({irq.name, irq.fd.get()});
    if (irq.resample.valid()) fds.push_back({irq.name + ".resample", irq.resample.get()});
  }
  for (size_t v = 0; v < p.msix.size(); ++v) fds.push_back({absl::StrCat("msix", v), p.msix[v].get()});
  for (size_t q = 0; q < p.notify.size(); ++q) {
    fds.push_back({absl::StrCat("notify", q), p.notify[q].get()});
  }
  if (p.msi.valid()) fds.push_back({"msi", p.msi.get()});
  if (p.device->kind == DeviceProcessKind::kLpc) {
    // A COM port on stdio: the broker's own stdin and stdout, inherited.
    schema::Serial::Reader serials[] = {vm.getLpc().getCom1(), vm.getLpc().getCom2(),
                                        vm.getLpc().getCom3(), vm.getLpc().getCom4()};
    for (int i = 0; i < 4; ++i) {
      if (!ComOnStdio(serials[i])) continue;
      fds.push_back({absl::StrCat("com", i + 1, ".in"), STDIN_FILENO});
      fds.push_back({absl::StrCat("com", i + 1, ".out"), STDOUT_FILENO});
    }
  }
  {
    auto list = c.initFds(fds.size());
    for (size_t i = 0; i < fds.size(); ++i) {
      list[i].setName(fds[i].first);
      list[i].setFd(fds[i].second);
    }
  }
  if (auto s = SendToIdentity(router_, p.name, b); !s.ok()) {
    BeginStop(kExitStartFailed, std::string(s.message()));
  }
  TraceNote(p, absl::StrCat("broker -> device: configureDevice (", fds.size(), " fds, incarnation ",
                            p.restarts, ")"));
}

void VmRunner::MaybeConfigureCore() {
  Process* core = Find("core");
  if (core_configured_ || core == nullptr || !core->ready) return;  // core->ready: said hello
  for (auto& p : processes_) {
    if (!p->is_core && !p->ready) return;
  }
  auto vm = config_.vm();
  capnp::MallocMessageBuilder b;
  auto c = b.initRoot<msg::Message>().initConfigureCore();
  c.setVm(vm);
  FillRamRegions(regions_, c.initRam(regions_.size()));
  c.setRamSize(config_.memory_bytes);
  c.setRamFd(ram_.get());
  c.setKernelFd(kernel_.get());
  c.setInitrdFd(initrd_.valid() ? initrd_.get() : -1);
  size_t ndev = processes_.size() - 1;
  auto devices = c.initDevices(ndev);
  size_t i = 0;
  for (auto& p : processes_) {
    if (p->is_core) continue;
    auto d = devices[i++];
    d.setName(p->name);
    d.setChannelFd(p->channel.get());
    d.setDoorbellFd(p->doorbell.get());
    auto ranges = d.initRanges(p->ranges.size());
    for (size_t r = 0; r < p->ranges.size(); ++r) {
      ranges.setWithCaveats(r, p->ranges[r]);
    }
    auto ready = p->ranges_message.getRoot<msg::Message>().asReader().getDeviceReady();
    if (ready.getHasPci()) {
      auto dev = vm.getDevices()[p->device->device_index];
      d.setHasPci(true);
      d.setSlot(dev.getSlot());
      d.setFunction(dev.getFunction());
      d.setPci(ready.getPci());
      auto msix = d.initMsixFds(p->msix.size());
      for (size_t v = 0; v < p->msix.size(); ++v) msix.set(v, p->msix[v].get());
      auto notify = d.initNotifyFds(p->notify.size());
      for (size_t q = 0; q < p->notify.size(); ++q) notify.set(q, p->notify[q].get());
      d.setMsiFd(p->msi.valid() ? p->msi.get() : -1);
    }
  }
  std::vector<const Process::Irq*> irqs;
  for (auto& p : processes_) {
    for (auto& irq : p->irqs) irqs.push_back(&irq);
  }
  auto lines = c.initIrqLines(irqs.size());
  for (size_t k = 0; k < irqs.size(); ++k) {
    lines[k].setGsi(irqs[k]->gsi);
    lines[k].setFd(irqs[k]->fd.get());
    lines[k].setResampleFd(irqs[k]->resample.valid() ? irqs[k]->resample.get() : -1);
  }
  core_configured_ = true;
  if (auto s = SendToIdentity(router_, "core", b); !s.ok()) {
    BeginStop(kExitStartFailed, std::string(s.message()));
  }
}

void VmRunner::OnMessage(const std::string& from, msg::Message::Reader m) {
  Process* p = Find(from);
  if (p == nullptr) {
    HV_WARN("message from unknown peer '%s' ignored", from.c_str());
    return;
  }
  if (m.which() == msg::Message::TRACE) {
    std::vector<std::string> lines;
    for (auto line : m.getTrace()) lines.push_back(line);
    TraceLines(*p, lines);
    return;
  }
  if (!p->tracers.empty()) {
    const char* names[] = {"hello", "deviceReady", "coreReady", "guestExit"};
    int which = static_cast<int>(m.which());
    TraceNote(*p, absl::StrCat("device -> broker: ", which < 4 ? names[which] : "message ",
                               which < 4 ? "" : absl::StrCat(which),
                               m.isGuestExit() ? absl::StrCat(" (", m.getGuestExit().getDetail().cStr(), ")")
                                               : ""));
  }
  switch (m.which()) {
    case msg::Message::HELLO:
      // A sandboxed process is pid 1 of its own pid namespace.
      if (!p->sandboxed && m.getHello().getPid() != p->child.pid) {
        HV_WARN("%s says it is pid %d, expected %d", from.c_str(), m.getHello().getPid(),
                p->child.pid);
      }
      if (p->is_core) {
        p->ready = true;  // hello received; configured once every device is ready
        MaybeConfigureCore();
      } else {
        SendConfigureDevice(*p);
      }
      break;
    case msg::Message::DEVICE_READY: {
      p->ranges_message.setRoot(m);  // a copy that outlives the received bytes
      auto kept = p->ranges_message.getRoot<msg::Message>().asReader().getDeviceReady();
      p->ranges.clear();
      for (auto r : kept.getRanges()) {
        if (auto s = CheckRange(*p, r); !s.ok()) {
          BeginStop(kExitStartFailed, std::string(s.message()));
          return;
        }
        p->ranges.push_back(r);
      }
      p->ready = true;
      if (core_configured_) {
        ServeAgain(*p);  // a successor: the core already routes to its channel
      } else {
        MaybeConfigureCore();
      }
      break;
    }
    case msg::Message::CORE_READY: {
      capnp::MallocMessageBuilder b;
      b.initRoot<msg::Message>().setStart();
      if (auto s = SendToIdentity(router_, "core", b); !s.ok()) {
        BeginStop(kExitStartFailed, std::string(s.message()));
        break;
      }
      started_ = true;
      HV_DEBUG("VM '%s' started", name_.c_str());
      if (options_.detach_ready_fd >= 0) {
        // `up --detach` returns now.
        (void)WriteFull(options_.detach_ready_fd, "R", 1);
        close(std::exchange(options_.detach_ready_fd, -1));
      }
      break;
    }
    case msg::Message::GUEST_EXIT: {
      auto e = m.getGuestExit();
      std::string detail = e.getDetail();
      switch (e.getReason()) {
        case msg::ExitReason::POWER_OFF:
          if (e.getStatus() == 0) {
            BeginStop(kExitPowerOff, "the guest powered off");
          } else {
            BeginStop(kExitGuestFailure,
                      absl::StrCat("the guest powered off with status ", e.getStatus()));
          }
          break;
        case msg::ExitReason::RESET:
          BeginStop(kExitReset, "the guest asked for a reset");
          break;
        case msg::ExitReason::PANIC:
          BeginStop(kExitGuestPanic, detail);
          break;
        case msg::ExitReason::TRIPLE_FAULT:
          BeginStop(kExitTripleFault, absl::StrCat("the guest triple-faulted: ", detail));
          break;
        default:
          BeginStop(started_ ? kExitRuntimeError : kExitStartFailed,
                    absl::StrCat(from, ": ", detail));
      }
      break;
    }
    default:
      HV_WARN("unexpected message %d from %s", static_cast<int>(m.which()), from.c_str());
  }
}

bool VmRunner::OnControl(const std::string& client, ctl::ControlRequest::Reader request,
                         ctl::ControlReply::Builder reply) {
  switch (request.which()) {
    case ctl::ControlRequest::TRACE: {
      std::string device = request.getTrace();
      Process* p = Find(device);
      if (p == nullptr || p->is_core) {
        reply.setError(p == nullptr ? absl::StrCat("VM '", name_, "' has no device '", device, "'")
                                    : "hvcore is not traced; trace one of its devices");
        break;
      }
      bool known = p->tracers.count(client) != 0;
      p->tracers[client] = Clock::now();
      if (known) return false;  // a keep-alive: nothing to answer
      if (p->tracers.size() == 1) SetDeviceTracing(*p, true);
      reply.setMessage(absl::StrCat("tracing device '", device, "' (pid ", p->child.pid,
                                    "): the register accesses it handles and the broker's "
                                    "messages to and from it"));
      break;
    }
    case ctl::ControlRequest::RESTART:
    case ctl::ControlRequest::DEBUG: {
      bool debug = request.which() == ctl::ControlRequest::DEBUG;
      std::string device = debug ? request.getDebug() : request.getRestart();
      Process* p = Find(device);
      if (p == nullptr || p->is_core) {
        std::string names;
        for (auto& q : processes_) {
          if (!q->is_core) names += (names.empty() ? "" : ", ") + q->name;
        }
        reply.setError(p == nullptr ? absl::StrCat("VM '", name_, "' has no device '", device,
                                                   "' (its devices: ", names, ")")
                                    : "hvcore holds the VM itself: it cannot restart");
        break;
      }
      if (!CanRestart(p->device->kind)) {
        reply.setError(absl::StrCat("device '", device, "' keeps no state for a successor yet, ",
                                    "so restarting it would lose what the guest expects of it"));
        break;
      }
      if (!started_ || exit_code_.has_value()) {
        reply.setError(absl::StrCat("VM '", name_, "' is not running"));
        break;
      }
      if (debug) {
        if (p->exited || p->restart_requested || !p->ready) {
          reply.setError(absl::StrCat("device '", device, "' is restarting; try again"));
          break;
        }
        p->debug_next = true;
        p->debug_clients.push_back(client);
      } else {
        p->waiting_clients.push_back(client);
      }
      if (p->exited || p->restart_requested || !p->ready) return false;  // one is on its way
      // It stops between two accesses, its state saved; a successor resumes.
      p->restart_requested = true;
      p->kill_at = Clock::now() + std::chrono::seconds(3);
      capnp::MallocMessageBuilder b;
      b.initRoot<msg::Message>().setShutdown();
      (void)SendToIdentity(router_, p->name, b);
      TraceNote(*p, "broker -> device: shutdown (for a successor)");
      HV_INFO("restarting device '%s' (pid %d) on request%s", p->name.c_str(), p->child.pid,
              debug ? ", without its sandbox, for a debugger" : "");
      return false;
    }
    case ctl::ControlRequest::STATUS:
      FillStatus(reply.initStatus());
      break;
    case ctl::ControlRequest::STOP: {
      if (request.getStop().getForce()) {
        HV_INFO("VM '%s' is destroyed on request (stop --force)", name_.c_str());
        BeginStop(kExitStopped, "destroyed by `hvbroker stop --force`");
        reply.setMessage(absl::StrCat("VM '", name_, "' destroyed"));
        break;
      }
      // The guest shuts down as after a press of its power button: the lpc's
      // ACPI PM sets PWRBTN_STS and raises the SCI.
      Process* lpc = nullptr;
      for (auto& p : processes_) {
        if (!p->is_core && p->device->kind == DeviceProcessKind::kLpc) lpc = p.get();
      }
      if (lpc == nullptr || !started_ || lpc->exited) {
        reply.setError(absl::StrCat("VM '", name_, "' has no running lpc device, so no ACPI power ",
                                    "button (`stop --force` destroys it)"));
        break;
      }
      capnp::MallocMessageBuilder b;
      b.initRoot<msg::Message>().initDeviceControl().setAction(
          msg::DeviceControl::Action::POWER_BUTTON);
      if (auto s = SendToIdentity(router_, lpc->name, b); !s.ok()) {
        reply.setError(std::string(s.message()));
        break;
      }
      TraceNote(*lpc, "broker -> device: deviceControl(powerButton)");
      HV_INFO("VM '%s': power button pressed on request (stop)", name_.c_str());
      reply.setMessage(absl::StrCat("pressed the ACPI power button of VM '", name_,
                                    "'; the guest shuts down if it listens (`stop --force` destroys it)"));
      break;
    }
    default:
      reply.setError("this broker does not know that request");
  }
  return true;
}

void VmRunner::FillStatus(ctl::VmStatus::Builder status) {
  auto ms = [](Clock::duration d) {
    return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(d).count());
  };
  auto now = Clock::now();
  status.setName(name_);
  status.setState(exit_code_.has_value() ? "stopping" : started_ ? "running" : "starting");
  status.setBrokerPid(getpid());
  status.setUptimeMs(ms(now - born_));
  status.setVmUid(identity_.uid);
  auto list = status.initProcesses(processes_.size());
  for (size_t i = 0; i < processes_.size(); ++i) {
    const Process& p = *processes_[i];
    auto out = list[i];
    out.setName(p.name);
    const char* kind = "hvcore";
    if (!p.is_core) {
      kind = p.device->kind == DeviceProcessKind::kLpc         ? "lpc"
             : p.device->kind == DeviceProcessKind::kVirtioBlk ? "virtio-blk"
             : p.device->kind == DeviceProcessKind::kVirtioNet ? "virtio-net"
             : p.device->kind == DeviceProcessKind::kAhci      ? "ahci"
                                                               : "device";
    }
    out.setKind(kind);
    out.setPid(p.exited ? -1 : p.child.pid);
    out.setState(p.respawn_pending ? "restarting"
                 : p.exited        ? "exited"
                 : p.ready         ? "running"
                                   : "starting");
    if (p.state_view != nullptr) {
      auto counters = out.initCounters(1);
      counters[0].setName("stateSaves");
      counters[0].setValue(p.state_view->saves());
    }
    out.setSandboxed(p.sandboxed);
    out.setUptimeMs(p.exited ? 0 : ms(now - p.spawned_at));
    out.setRestarts(p.restarts);
  }
  auto consoles = status.initConsoles(consoles_.size());
  for (size_t i = 0; i < consoles_.size(); ++i) {
    consoles[i].setName(consoles_[i].first);
    consoles[i].setPath(consoles_[i].second);
  }
}

void VmRunner::Supervise(Process& p, int wait_status, const std::string& what) {
  TraceNote(p, absl::StrCat("process: ", what));
  p.died_at = Clock::now();
  p.ready = false;
  if (p.restart_requested) {
    // `hvbroker restart`: stopped between two accesses with its state saved.
    p.restart_requested = false;
    p.respawn_pending = true;
    p.respawn_at = p.died_at;
    HV_INFO("%s stopped for a successor", what.c_str());
    return;
  }
  RestartDecision d = p.budget->OnDeath(p.died_at, wait_status);
  if (!d.restart) {
    BeginStop(kExitProcessCrashed,
              absl::StrCat(what, " while the VM was running; not restarted: ", d.reason));
    return;
  }
  HV_WARN("%s; restarting it (%s)%s", what.c_str(), d.reason.c_str(),
          d.delay.count() > 0 ? absl::StrCat(" in ", d.delay.count(), " ms").c_str() : "");
  p.respawn_pending = true;
  p.respawn_at = p.died_at + d.delay;
}

void VmRunner::Respawn(Process& p) {
  p.respawn_pending = false;
  p.exited = false;
  p.ready = false;
  ++p.restarts;
  p.seccomp_reports.Reset();
  if (auto s = SpawnProcess(&p); !s.ok()) {
    BeginStop(kExitProcessCrashed, absl::StrCat("cannot start a successor for device '", p.name,
                                                "': ", s.message()));
    return;
  }
  if (p.debug_next) {
    p.debug_next = false;
    HV_WARN("*** device '%s' now runs WITHOUT its sandbox (pid %d), stopped for a debugger ***",
            p.name.c_str(), p.child.pid);
    for (const auto& client : std::exchange(p.debug_clients, {})) {
      capnp::MallocMessageBuilder b;
      b.initRoot<ctl::ControlReply>().setMessage(absl::StrFormat(
          "device '%s' restarted WITHOUT its sandbox as pid %d, stopped before it serves "
          "(the guest waits on it).\nAttach:   gdb -p %d   (then `continue`)\nOr let it "
          "run:   kill -CONT %d\nIt stays unsandboxed until `hvbroker restart %s %s`.",
          p.name, p.child.pid, p.child.pid, p.child.pid, name_, p.name));
      control_.Reply(client, b);
    }
  }
}

void VmRunner::ServeAgain(Process& p) {
  double ms = std::chrono::duration<double, std::milli>(Clock::now() - p.died_at).count();
  if (!p.tracers.empty()) {
    SetDeviceTracing(p, true);  // the successor starts untraced
    TraceNote(p, absl::StrFormat("process: successor pid %d serves again after %.1f ms", p.child.pid, ms));
  }
  HV_INFO("device '%s' serves again (pid %d%s), %.1f ms after its predecessor ended",
          p.name.c_str(), p.child.pid, p.sandboxed ? ", sandboxed" : ", NOT sandboxed", ms);
  for (const auto& client : p.waiting_clients) {
    capnp::MallocMessageBuilder b;
    b.initRoot<ctl::ControlReply>().setMessage(
        absl::StrFormat("device '%s' restarted: pid %d serves again after %.1f ms", p.name,
                        p.child.pid, ms));
    control_.Reply(client, b);
  }
  p.waiting_clients.clear();
}

void VmRunner::TraceLines(Process& p, const std::vector<std::string>& lines) {
  if (p.tracers.empty() || lines.empty()) return;
  for (const auto& [client, seen] : p.tracers) {
    capnp::MallocMessageBuilder b;
    auto list = b.initRoot<ctl::ControlReply>().initTrace(lines.size());
    for (size_t i = 0; i < lines.size(); ++i) list.set(i, lines[i]);
    control_.Reply(client, b);
  }
}

void VmRunner::TraceNote(Process& p, const std::string& what) {
  if (p.tracers.empty()) return;
  double now = std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  TraceLines(p, {absl::StrFormat("%.6f %s", now, what)});
}

void VmRunner::SetDeviceTracing(Process& p, bool on) {
  if (p.exited || !p.ready) return;  // a successor is told once it serves
  capnp::MallocMessageBuilder b;
  b.initRoot<msg::Message>().initDeviceControl().setAction(
      on ? msg::DeviceControl::Action::TRACE_ON : msg::DeviceControl::Action::TRACE_OFF);
  (void)SendToIdentity(router_, p.name, b);
}

std::optional<Clock::time_point> VmRunner::NextSupervisionDeadline() const {
  std::optional<Clock::time_point> next;
  for (const auto& p : processes_) {
    std::optional<Clock::time_point> t;
    if (!p->tracers.empty()) t = Clock::now() + std::chrono::seconds(1);  // tracer expiry
    if (p->respawn_pending) t = p->respawn_at;
    if (p->restart_requested && !p->exited) t = p->kill_at;
    if (t && (!next || *t < *next)) next = t;
  }
  return next;
}

void VmRunner::RunSupervisionDeadlines() {
  auto now = Clock::now();
  for (auto& p : processes_) {
    if (exit_code_.has_value()) return;
    // A tracer that stopped repeating its request has gone away.
    bool traced = !p->tracers.empty();
    for (auto it = p->tracers.begin(); it != p->tracers.end();) {
      it = now - it->second > std::chrono::seconds(3) ? p->tracers.erase(it) : std::next(it);
    }
    if (traced && p->tracers.empty()) SetDeviceTracing(*p, false);
    if (p->respawn_pending && now >= p->respawn_at) Respawn(*p);
    if (p->restart_requested && !p->exited && now >= p->kill_at) {
      HV_WARN("device '%s' (pid %d) did not stop for its successor; killing it", p->name.c_str(),
              p->child.pid);
      kill(p->child.pid, SIGKILL);
      p->kill_at = now + std::chrono::hours(1);  // its death arrives through the pidfd
    }
  }
}

absl::Status VmRunner::CheckRange(const Process& p, msg::Range::Reader range) {
  if (range.getSpace() != msg::AddressSpace::PCI_CONFIG) return absl::OkStatus();
  auto d = config_.vm().getDevices()[p.device->device_index];
  uint64_t own = (uint64_t{d.getSlot()} << 15) | (uint64_t{d.getFunction()} << 12);
  if (range.getBase() != own || range.getLength() != 4096) {
    return absl::PermissionDeniedError(absl::StrCat(
        p.name, " claimed PCI config space it does not own (", range.getBase(), "+",
        range.getLength(), ")"));
  }
  return absl::OkStatus();
}

bool VmRunner::Sandboxed(const std::string& process_name) const {
  return options_.no_sandbox.count("*") == 0 && options_.no_sandbox.count(process_name) == 0;
}

absl::Status VmRunner::CheckRuntimeDirReachable() const {
  std::string dir = runtime_dir_;
  while ((dir = dir.substr(0, dir.rfind('/'))).size() > 0) {
    struct stat st;
    if (stat(dir.c_str(), &st) != 0) return ErrnoStatus("stat " + dir);
    if ((st.st_mode & S_IXOTH) == 0 && st.st_uid != identity_.uid) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the VM's processes (uid ", identity_.uid, ") cannot reach ", runtime_dir_,
          ": ", dir, " has no search permission for others (chmod o+x it, or set "
          "HV_RUNTIME_DIR)"));
    }
  }
  return absl::OkStatus();
}

void VmRunner::BeginStop(int code, const std::string& why) {
  if (exit_code_.has_value()) return;  // the first reason wins
  exit_code_ = code;
  exit_reason_ = why;
}

void VmRunner::OnChildExit(Process& p) {
  int status = 0;
  waitpid(p.child.pid, &status, 0);
  p.exited = true;
  std::string what = p.is_core ? "hvcore" : absl::StrCat("device '", p.name, "'");
  // A sandboxed process killed for a forbidden system call said which one.
  std::string forbidden;
  sandbox::SeccompReport report;
  if (p.seccomp_reports.valid() &&
      read(p.seccomp_reports.get(), &report, sizeof(report)) == sizeof(report) &&
      report.magic == sandbox::SeccompReport::kMagic) {
    forbidden = absl::StrCat(": its sandbox forbids the system call ",
                             sandbox::SyscallName(report.syscall_nr), " (", report.syscall_nr, ")");
    HV_ERROR("%s (pid %d) made the forbidden system call %s (number %d, arch %#x, at %#llx)",
             what.c_str(), p.child.pid, sandbox::SyscallName(report.syscall_nr).c_str(),
             report.syscall_nr, report.arch,
             static_cast<unsigned long long>(report.instruction_pointer));
  }
  if (!exit_code_.has_value() && !p.is_core && core_configured_) {
    Supervise(p, status, absl::StrCat(what, " (pid ", p.child.pid, ") ", DescribeWaitStatus(status),
                                      forbidden));
  } else if (!exit_code_.has_value()) {
    BeginStop(kExitProcessCrashed, absl::StrCat(what, " (pid ", p.child.pid, ") ",
                                                DescribeWaitStatus(status), forbidden,
                                                " while the VM was running"));
  } else {
    HV_DEBUG("%s (pid %d) %s", what.c_str(), p.child.pid, DescribeWaitStatus(status).c_str());
  }
}

void VmRunner::Shutdown() {
  capnp::MallocMessageBuilder b;
  b.initRoot<msg::Message>().setShutdown();
  // The core first: its vCPUs stop touching devices before the devices go.
  for (const char* pass : {"core", "devices"}) {
    for (auto& p : processes_) {
      if (p->exited || p->is_core != (std::string(pass) == "core")) continue;
      (void)SendToIdentity(router_, p->name, b);
    }
  }
  auto deadline = Clock::now() + std::chrono::seconds(3);
  for (auto& p : processes_) {
    while (!p->exited) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) {
        HV_WARN("%s (pid %d) did not stop; killing it", p->name.c_str(), p->child.pid);
        kill(p->child.pid, SIGKILL);
        int status;
        waitpid(p->child.pid, &status, 0);
        p->exited = true;
        break;
      }
      pollfd pfd = {p->child.pidfd.get(), POLLIN, 0};
      if (poll(&pfd, 1, left.count()) > 0) {
        int status;
        waitpid(p->child.pid, &status, 0);
        p->exited = true;
      }
    }
  }
}

int VmRunner::Run() {
  if (auto s = Prepare(); !s.ok()) {
    HV_ERROR("cannot start VM '%s': %s", name_.c_str(), std::string(s.message()).c_str());
    exit_code_ = kExitStartFailed;
    Shutdown();
    return kExitStartFailed;
  }
  auto vm = config_.vm();
  schema::Serial::Reader serials[] = {vm.getLpc().getCom1(), vm.getLpc().getCom2(),
                                      vm.getLpc().getCom3(), vm.getLpc().getCom4()};
  for (auto& s : serials) {
    if (ComOnStdio(s)) terminal_.MakeRaw();
  }
  auto start_deadline = Clock::now() + std::chrono::milliseconds(options_.start_timeout_ms);
  while (!exit_code_.has_value()) {
    std::vector<zmq::pollitem_t> items;
    items.push_back({router_.handle(), 0, ZMQ_POLLIN, 0});
    items.push_back({nullptr, signals_.get(), ZMQ_POLLIN, 0});
    items.push_back({control_.handle(), 0, ZMQ_POLLIN, 0});
    constexpr size_t kFirstChild = 3;
    std::vector<Process*> watched;  // live processes, by their pidfd
    for (auto& p : processes_) {
      if (p->exited) continue;
      items.push_back({nullptr, p->child.pidfd.get(), ZMQ_POLLIN, 0});
      watched.push_back(p.get());
    }
    long timeout_ms = started_ ? -1 : 200;
    if (auto next = NextSupervisionDeadline()) {
      long until = std::max<long>(
          0, std::chrono::ceil<std::chrono::milliseconds>(*next - Clock::now()).count());
      timeout_ms = timeout_ms < 0 ? until : std::min(timeout_ms, until);
    }
    zmq::poll(items.data(), items.size(), std::chrono::milliseconds(timeout_ms));
    if (!started_ && Clock::now() > start_deadline) {
      BeginStop(kExitStartFailed, "the VM's processes did not become ready in time");
      break;
    }
    if (items[1].revents & ZMQ_POLLIN) {
      signalfd_siginfo info;
      if (read(signals_.get(), &info, sizeof(info)) == sizeof(info)) {
        BeginStop(kExitStopped, absl::StrCat("stopped by signal ", info.ssi_signo, " (",
                                             strsignal(info.ssi_signo), ")"));
      }
    }
    // Messages before deaths: a device's last words explain why it ended.
    while (items[0].revents & ZMQ_POLLIN) {
      zmq::message_t identity, bytes;
      if (!router_.recv(identity, zmq::recv_flags::dontwait)) break;
      if (!identity.more() || !router_.recv(bytes, zmq::recv_flags::none)) continue;
      ReceivedMessage received(std::move(bytes));
      if (!received.ok()) {
        HV_WARN("bad message from %s: %s", identity.to_string().c_str(), received.error().c_str());
        continue;
      }
      OnMessage(identity.to_string(), received.get());
    }
    if (items[2].revents & ZMQ_POLLIN) {
      control_.ServePending([this](const std::string& client, ctl::ControlRequest::Reader request,
                                   ctl::ControlReply::Builder reply) {
        return OnControl(client, request, reply);
      });
    }
    for (size_t i = 0; i < watched.size(); ++i) {
      if ((items[kFirstChild + i].revents & ZMQ_POLLIN) && !watched[i]->exited) {
        OnChildExit(*watched[i]);
      }
    }
    RunSupervisionDeadlines();
  }
  for (auto& p : processes_) {
    for (const auto& client : p->waiting_clients) {
      capnp::MallocMessageBuilder b;
      b.initRoot<ctl::ControlReply>().setError(
          absl::StrCat("VM '", name_, "' ended before device '", p->name, "' served again: ",
                       exit_reason_));
      control_.Reply(client, b);
    }
  }
  Shutdown();
  int code = *exit_code_;
  if (code == kExitPowerOff) {
    HV_INFO("VM '%s': %s", name_.c_str(), exit_reason_.c_str());
  } else {
    HV_ERROR("VM '%s': %s", name_.c_str(), exit_reason_.c_str());
  }
  return code;
}

}  // namespace

std::string RuntimeBaseDir() {
  if (const char* dir = getenv("HV_RUNTIME_DIR"); dir != nullptr && dir[0] != '\0') return dir;
  if (const char* xdg = getenv("XDG_RUNTIME_DIR"); xdg != nullptr && xdg[0] != '\0') {
    return absl::StrCat(xdg, "/hv");
  }
  if (getuid() == 0) return "/run/hv";
  return absl::StrCat("/tmp/hv-", getuid());
}

int RunVm(VmConfig config, const RunOptions& options) {
  VmRunner runner(std::move(config), options);
  return runner.Run();
}

}  // namespace hv::broker
