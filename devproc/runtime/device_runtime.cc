#include "devproc/runtime/device_runtime.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cstring>
#include <map>

#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/device_state.h"
#include "common/exit_channel.h"
#include "common/fd.h"
#include "common/log.h"
#include "common/zmq_msg.h"

namespace hv::devproc {
namespace {

// Watches speak poll(2)'s flags; zmq_poll has its own values for them.
short ZmqEvents(short poll_events) {
  short e = 0;
  if (poll_events & POLLIN) e |= ZMQ_POLLIN;
  if (poll_events & POLLOUT) e |= ZMQ_POLLOUT;
  if (poll_events & POLLPRI) e |= ZMQ_POLLPRI;
  return e;
}
short PollEvents(short zmq_events) {
  short e = 0;
  if (zmq_events & ZMQ_POLLIN) e |= POLLIN;
  if (zmq_events & ZMQ_POLLOUT) e |= POLLOUT;
  if (zmq_events & ZMQ_POLLPRI) e |= POLLPRI;
  if (zmq_events & ZMQ_POLLERR) e |= POLLERR;  // zmq folds POLLERR/POLLHUP/POLLNVAL into it
  return e;
}

class Runtime : public DeviceContext {
 public:
  Runtime(std::string name, std::unique_ptr<DeviceModel> model, sandbox::Sandbox* sandbox,
          sandbox::SyscallPolicy policy)
      : name_(std::move(name)),
        model_(std::move(model)),
        sandbox_(sandbox),
        policy_(std::move(policy)),
        socket_(context_, zmq::socket_type::dealer) {}

  ~Runtime() override {
    if (channel_base_ != nullptr) munmap(channel_base_, channel_bytes_);
  }

  int Run(const std::string& endpoint);

  void WatchFd(int fd, short events, std::function<void(short)> on_ready) override {
    watches_[fd] = {events, std::move(on_ready)};
  }
  void SetFdEvents(int fd, short events) override {
    auto it = watches_.find(fd);
    if (it != watches_.end()) it->second.events = events;
  }
  void UnwatchFd(int fd) override { watches_.erase(fd); }
  void GuestExit(msg::ExitReason reason, uint32_t status, const std::string& detail) override {
    capnp::MallocMessageBuilder b;
    auto exit = b.initRoot<msg::Message>().initGuestExit();
    exit.setReason(reason);
    exit.setStatus(status);
    exit.setDetail(detail);
    if (auto s = SendToPeer(socket_, b); !s.ok()) {
      HV_ERROR("cannot report the guest's exit: %s", std::string(s.message()).c_str());
    }
  }
  absl::StatusOr<int> NamedFd(std::string_view fd_name) const override {
    auto it = fds_.find(std::string(fd_name));
    if (it == fds_.end()) {
      return absl::NotFoundError(absl::StrCat(name_, ": the broker gave no fd named '", std::string(fd_name), "'"));
    }
    return it->second;
  }
  const GuestMemory& memory() const override { return *ram_; }
  absl::Status CarryIntoSandbox(const std::string& host_path) override {
    return sandbox_->CarryFile(host_path);
  }
  const std::string& name() const override { return name_; }
  int PublishRegister(msg::AddressSpace space, uint64_t addr, uint8_t size,
                      std::optional<uint64_t> unaffected_by) override {
    if (channel_ == nullptr) return -1;
    return channel_->AddPublished(space, addr, size,
                                  unaffected_by ? PublishedKey(space, *unaffected_by, 0) : 0);
  }
  void SetPublished(int handle, std::optional<uint64_t> value) override {
    if (channel_ != nullptr) channel_->SetPublished(handle, value);
  }
  void CommitState() override { SaveState(); }

 private:
  struct Watch {
    short events;
    std::function<void(short)> on_ready;
  };

  absl::Status Configure(msg::ConfigureDevice::Reader config);
  // Restart: the state region, and what a successor resumes from.
  absl::Status MapState(msg::ConfigureDevice::Reader config);
  absl::Status RestoreFromRegion();
  void SaveState();
  // Returns false when the device must exit.
  bool HandleControl();
  size_t DrainChannel();
  // `hvbroker trace`: each access handled, decoded, sent to the broker in batches.
  void Trace(const IoAccess& access, uint64_t value);
  void FlushTrace();
  void PollChannelBriefly();

  std::string name_;
  std::unique_ptr<DeviceModel> model_;
  sandbox::Sandbox* sandbox_;
  sandbox::SyscallPolicy policy_;
  zmq::context_t context_{1};
  zmq::socket_t socket_;
  std::unique_ptr<GuestMemory> ram_;
  void* channel_base_ = nullptr;
  size_t channel_bytes_ = 0;
  std::unique_ptr<ExitChannelServer> channel_;
  std::map<std::string, int> fds_;
  std::map<int, Watch> watches_;
  std::unique_ptr<DeviceStateRegion> state_;  // null: this device keeps no state
  std::string state_buffer_;                  // reused by every save
  uint32_t incarnation_ = 0;
  bool state_ready_ = false;  // restored (or fresh): saves may begin
  bool tracing_ = false;
  std::vector<std::string> trace_lines_;
  bool resumed_ = false;      // a successor that restored something to redo
};

// The runtime's part of a saved state, before the model's: the version of
// this layout, then per vCPU ring how far the device got.
constexpr uint32_t kRuntimeStateVersion = 1;

absl::Status Runtime::MapState(msg::ConfigureDevice::Reader config) {
  incarnation_ = config.getIncarnation();
  if (config.getStateFd() < 0) return absl::OkStatus();
  std::string probe;
  if (!model_->SaveState(&probe)) return absl::OkStatus();  // a model without state
  auto region = DeviceStateRegion::Map(config.getStateFd());
  if (!region.ok()) return region.status();
  state_ = std::move(*region);
  return absl::OkStatus();
}

absl::Status Runtime::RestoreFromRegion() {
  std::string_view saved = state_->Load();
  if (saved.empty()) {
    // Died before its first save: nothing happened that the guest saw.
    HV_WARN("%s: successor %u finds no saved state; starting afresh", name_.c_str(), incarnation_);
    return absl::OkStatus();
  }
  StateReader r(saved);
  uint32_t version = 0, rings = 0;
  if (!r.Get(&version) || version != kRuntimeStateVersion || !r.Get(&rings) ||
      rings != channel_->progress().size()) {
    return absl::DataLossError("saved state: bad runtime header");
  }
  std::vector<ExitRingProgress> progress(rings);
  for (auto& p : progress) {
    if (!r.Get(&p)) return absl::DataLossError("saved state: truncated ring progress");
  }
  // The channel first: the model's restore must not see (or save) an older progress.
  channel_->Restore(progress);
  if (auto s = model_->RestoreState(r.rest()); !s.ok()) return s;
  resumed_ = true;
  HV_INFO("%s: successor %u resumes from saved state %llu", name_.c_str(), incarnation_,
          static_cast<unsigned long long>(state_->saves()));
  return absl::OkStatus();
}

void Runtime::SaveState() {
  if (state_ == nullptr || channel_ == nullptr || !state_ready_) return;
  state_buffer_.clear();
  StateWriter w(&state_buffer_);
  w.Put(kRuntimeStateVersion);
  w.Put(static_cast<uint32_t>(channel_->progress().size()));
  for (const auto& p : channel_->progress()) w.Put(p);
  model_->SaveState(&state_buffer_);
  if (auto s = state_->Store(state_buffer_); !s.ok()) {
    HV_ERROR("%s: cannot save its state: %s", name_.c_str(), std::string(s.message()).c_str());
  }
}

absl::Status Runtime::Configure(msg::ConfigureDevice::Reader config) {
  std::vector<GuestRamRegion> regions = RamRegionsFrom(config.getRam());
  auto ram = GuestMemory::Map(config.getRamFd(), config.getRamSize(), regions);
  if (!ram.ok()) return ram.status();
  ram_ = std::move(*ram);
  uint32_t vcpus = config.getVcpus();
  channel_bytes_ = ExitChannelBytes(vcpus);
  channel_base_ = mmap(nullptr, channel_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED,
                       config.getChannelFd(), 0);
  if (channel_base_ == MAP_FAILED) {
    channel_base_ = nullptr;
    return ErrnoStatus("mmap exit channel");
  }
  int doorbell = config.getDoorbellFd();
  fcntl(doorbell, F_SETFL, fcntl(doorbell, F_GETFL) | O_NONBLOCK);
  channel_ = std::make_unique<ExitChannelServer>(channel_base_, vcpus, doorbell);
  for (auto f : config.getFds()) fds_[f.getName()] = f.getFd();

  auto ranges = model_->Configure(*this, config);
  if (!ranges.ok()) return ranges.status();
  if (auto s = MapState(config); !s.ok()) return s;
  if (state_ != nullptr) {
    if (incarnation_ > 0) {
      if (auto s = RestoreFromRegion(); !s.ok()) {
        return absl::Status(s.code(), absl::StrCat("resuming: ", s.message()));
      }
    }
    channel_->SetCommitHook([this] { SaveState(); });
    state_ready_ = true;
    SaveState();
  }
  // Everything is mapped and opened: from here on the guest can reach this
  // process, so it runs sandboxed. Guest RAM plus room for threads' stacks and
  // malloc's arenas; a few threads; the fds it has and some to accept or time with.
  sandbox::ProcessLimits limits;
  limits.address_space_bytes = config.getRamSize() + (uint64_t{4} << 30);
  limits.max_threads = 64;
  limits.max_fds = 256;
  if (auto s = sandbox_->Seal(policy_, limits); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("entering the sandbox: ", s.message()));
  }
  if (resumed_) model_->Resume();
  capnp::MallocMessageBuilder b;
  auto ready = b.initRoot<msg::Message>().initDeviceReady();
  auto list = ready.initRanges(ranges->size());
  for (size_t i = 0; i < ranges->size(); ++i) {
    list[i].setSpace((*ranges)[i].space);
    list[i].setBase((*ranges)[i].base);
    list[i].setLength((*ranges)[i].length);
    list[i].setPostedWrites((*ranges)[i].posted_writes);
  }
  if (auto pci = model_->PciFunction()) {
    ready.setHasPci(true);
    auto info = ready.initPci();
    auto bars = info.initBars(pci->bars.size());
    for (size_t i = 0; i < pci->bars.size(); ++i) {
      bars[i].setIndex(pci->bars[i].index);
      bars[i].setKind(pci->bars[i].kind);
      bars[i].setSize(pci->bars[i].size);
    }
    info.setMsixBar(pci->msix_bar);
    info.setMsixTableOffset(pci->msix_table_offset);
    info.setMsixVectors(pci->msix_vectors);
    info.setNotifyBar(pci->notify_bar);
    info.setNotifyOffset(pci->notify_offset);
    info.setNotifyStride(pci->notify_stride);
    info.setNotifyQueues(pci->notify_queues);
    info.setMsiCap(pci->msi_cap);
  }
  return SendToPeer(socket_, b);
}

size_t Runtime::DrainChannel() {
  return channel_->Drain([this](const IoAccess& a) -> uint64_t {
    if (a.is_write) {
      model_->Write(a.space, a.addr, a.size, a.data);
      if (tracing_) Trace(a, a.data);
      return 0;
    }
    uint64_t value = model_->Read(a.space, a.addr, a.size);
    if (tracing_) Trace(a, value);
    return value;
  });
}

void Runtime::Trace(const IoAccess& a, uint64_t value) {
  const char* space = a.space == msg::AddressSpace::PIO    ? "pio"
                      : a.space == msg::AddressSpace::MMIO ? "mmio"
                                                           : "pci-config";
  char line[160];
  snprintf(line, sizeof(line), "%.6f vcpu-access #%u %s %s %#llx size %u %s %#llx",
           MonotonicNs() / 1e9, a.seq, space, a.is_write ? "write" : "read",
           static_cast<unsigned long long>(a.addr), a.size, a.is_write ? "data" : "->",
           static_cast<unsigned long long>(value));
  trace_lines_.emplace_back(line);
  if (trace_lines_.size() >= 256) FlushTrace();
}

void Runtime::FlushTrace() {
  if (trace_lines_.empty()) return;
  capnp::MallocMessageBuilder b;
  auto list = b.initRoot<msg::Message>().initTrace(trace_lines_.size());
  for (size_t i = 0; i < trace_lines_.size(); ++i) list.set(i, trace_lines_[i]);
  trace_lines_.clear();
  (void)SendToPeer(socket_, b);
}

bool Runtime::HandleControl() {
  for (;;) {
    zmq::message_t bytes;
    if (!socket_.recv(bytes, zmq::recv_flags::dontwait)) return true;
    ReceivedMessage received(std::move(bytes));
    if (!received.ok()) {
      HV_ERROR("bad message from the broker: %s", received.error().c_str());
      continue;
    }
    auto m = received.get();
    switch (m.which()) {
      case msg::Message::CONFIGURE_DEVICE:
        if (auto s = Configure(m.getConfigureDevice()); !s.ok()) {
          HV_ERROR("configuration failed: %s", std::string(s.message()).c_str());
          GuestExit(msg::ExitReason::ERROR, 0, absl::StrCat(name_, ": ", s.message()));
          return false;
        }
        break;
      case msg::Message::SHUTDOWN:
        return false;
      case msg::Message::DEVICE_CONTROL:
        if (m.getDeviceControl().getAction() == msg::DeviceControl::Action::TRACE_ON ||
            m.getDeviceControl().getAction() == msg::DeviceControl::Action::TRACE_OFF) {
          tracing_ = m.getDeviceControl().getAction() == msg::DeviceControl::Action::TRACE_ON;
          break;
        }
        if (!model_->OnDeviceControl(m.getDeviceControl())) {
          HV_WARN("%s cannot carry out control request %d", name_.c_str(),
                  static_cast<int>(m.getDeviceControl().getAction()));
        }
        break;
      default:
        HV_WARN("unexpected message %d from the broker", static_cast<int>(m.which()));
    }
  }
}

// Right after serving register accesses more usually follow (a driver polling
// a status register, a burst of writes): wait for them awake for a few µs, so
// that each does not pay for this thread falling asleep and the vCPU for waking
// it up (a doorbell write). Bounded, so backends and the broker are still served.
void Runtime::PollChannelBriefly() {
  constexpr uint64_t kIdleNs = 30 * 1000;      // give up after this long without an access
  constexpr uint64_t kBudgetNs = 1000 * 1000;  // and return to the event loop at least this often
  auto now = [] { return static_cast<uint64_t>(MonotonicNs()); };
  const uint64_t start = now();
  uint64_t last = start;
  for (uint64_t t = start; t - last < kIdleNs && t - start < kBudgetNs; t = now()) {
    if (channel_->Pending()) {
      DrainChannel();
      last = now();
    } else {
      __builtin_ia32_pause();
    }
  }
}

int Runtime::Run(const std::string& endpoint) {
  socket_.set(zmq::sockopt::routing_id, name_);
  socket_.set(zmq::sockopt::linger, 1000);
  socket_.connect(endpoint);
  if (auto s = SendHello(socket_, name_); !s.ok()) {
    HV_ERROR("%s", std::string(s.message()).c_str());
    return 1;
  }
  std::vector<zmq::pollitem_t> items;
  std::vector<int> item_fds;
  for (;;) {
    bool may_sleep = true;
    if (channel_ != nullptr) {
      if (DrainChannel() > 0) PollChannelBriefly();
      may_sleep = channel_->PrepareToSleep();
    }
    FlushTrace();  // before a sleep that may be long
    items.clear();
    item_fds.clear();
    items.push_back({socket_.handle(), 0, ZMQ_POLLIN, 0});
    if (channel_ != nullptr) items.push_back({nullptr, channel_->doorbell_fd(), ZMQ_POLLIN, 0});
    size_t first_watch = items.size();
    for (const auto& [fd, w] : watches_) {
      if (w.events == 0) continue;
      items.push_back({nullptr, fd, ZmqEvents(w.events), 0});
      item_fds.push_back(fd);
    }
    zmq::poll(items.data(), items.size(), std::chrono::milliseconds(may_sleep ? -1 : 0));
    if (channel_ != nullptr) channel_->Woke();
    if ((items[0].revents & ZMQ_POLLIN) || !may_sleep) {
      if (!HandleControl()) return 0;
    }
    bool events = false;
    for (size_t i = first_watch; i < items.size(); ++i) {
      if (items[i].revents == 0) continue;
      auto it = watches_.find(item_fds[i - first_watch]);
      if (it != watches_.end()) it->second.on_ready(PollEvents(items[i].revents));
      events = true;
    }
    // Input taken from a backend, a timer's effect: saved before anything else.
    if (events) SaveState();
    FlushTrace();
  }
}

}  // namespace

int RunDevice(int argc, char** argv, const char* kind, std::unique_ptr<DeviceModel> model,
              sandbox::SyscallPolicy policy) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the broker
  std::string endpoint;
  std::string name = kind;
  bool stop_for_debugger = false;  // `hvbroker debug`: wait for gdb before serving
  sandbox::SandboxArgs sandbox_args;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (sandbox::ParseSandboxFlag(argc, argv, &i, &sandbox_args)) continue;
    if (arg == "--ctl" && i + 1 < argc) {
      endpoint = argv[++i];
    } else if (arg == "--name" && i + 1 < argc) {
      name = argv[++i];
    } else if (arg == "--stop-for-debugger") {
      stop_for_debugger = true;
    } else if (arg == "--help" || arg == "-h") {
      printf("usage: %s --ctl ENDPOINT --name NAME [--sandbox-report-fd FD | --no-sandbox]\n"
             "       [--stop-for-debugger]\n"
             "An hv device process; hvbroker starts it. Not meant to be run by hand.\n",
             argv[0]);
      return 0;
    } else {
      fprintf(stderr, "%s: unknown argument '%s' (see --help)\n", argv[0], arg.c_str());
      return 2;
    }
  }
  SetLogTag(name);
  InitLogLevelFromEnv();
  if (endpoint.empty()) {
    fprintf(stderr, "%s: --ctl ENDPOINT is required (device processes are started by hvbroker)\n",
            argv[0]);
    return 2;
  }
  if (getppid() == 1) return 1;  // the broker is already gone
  if (stop_for_debugger) {
    // Any process of this user may attach (Yama's ptrace_scope 1 would allow
    // only our parent), then the process stops until gdb (or SIGCONT) lets it go.
    prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY);
    HV_WARN("*** %s (pid %d) runs WITHOUT its sandbox, stopped for a debugger: gdb -p %d, "
            "then `continue` ***", name.c_str(), getpid(), getpid());
    raise(SIGSTOP);
  }
  // Before any thread exists: capabilities are per thread.
  auto sandbox = sandbox::Sandbox::Begin(sandbox_args, name, argv[0]);
  if (!sandbox.ok()) {
    HV_ERROR("cannot set up the sandbox: %s", std::string(sandbox.status().message()).c_str());
    return 1;
  }
  Runtime runtime(name, std::move(model), sandbox->get(), std::move(policy));
  return runtime.Run(endpoint);
}

}  // namespace hv::devproc
