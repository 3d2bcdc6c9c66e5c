// hvcore: the only process that holds /dev/kvm. Spawned by hvbroker, which hands
// it guest RAM, the kernel and every device's exit channel as inherited fds and
// describes them in a ConfigureCore message.
//
//   hvcore --ctl ENDPOINT --kvm-fd FD [--sandbox-report-fd FD | --no-sandbox]
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <signal.h>
#include <unistd.h>

#include <deque>
#include <mutex>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/fd.h"
#include "common/log.h"
#include "common/zmq_msg.h"
#include "common/sandbox.h"
#include "hvcore/core.h"
#include "hvcore/seccomp_policy.h"

namespace hv {
namespace {

// Exits reported by vCPU threads, handed to the main thread (which owns the socket).
class ExitQueue {
 public:
  ExitQueue() : efd_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}
  int fd() const { return efd_.get(); }
  void Push(msg::ExitReason reason, uint32_t status, std::string detail) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      items_.push_back({reason, status, std::move(detail)});
    }
    SignalEventFd(efd_.get());
  }
  struct Item {
    msg::ExitReason reason;
    uint32_t status;
    std::string detail;
  };
  std::deque<Item> Take() {
    uint64_t count;
    ssize_t ignored = read(efd_.get(), &count, sizeof(count));
    (void)ignored;
    std::lock_guard<std::mutex> lock(mu_);
    return std::exchange(items_, {});
  }

 private:
  Fd efd_;
  std::mutex mu_;
  std::deque<Item> items_;
};

absl::Status SendExit(zmq::socket_t& socket, msg::ExitReason reason, uint32_t status,
                      const std::string& detail) {
  capnp::MallocMessageBuilder b;
  auto exit = b.initRoot<msg::Message>().initGuestExit();
  exit.setReason(reason);
  exit.setStatus(status);
  exit.setDetail(detail);
  return SendToPeer(socket, b);
}

int Run(const std::string& endpoint, int kvm_fd, sandbox::Sandbox& sandbox) {
  zmq::context_t context(1);
  zmq::socket_t socket(context, zmq::socket_type::dealer);
  socket.set(zmq::sockopt::routing_id, "core");
  socket.set(zmq::sockopt::linger, 1000);
  socket.connect(endpoint);
  if (auto s = SendHello(socket, "core"); !s.ok()) {
    HV_ERROR("%s", std::string(s.message()).c_str());
    return 1;
  }
  ExitQueue exits;
  std::unique_ptr<Core> core;
  for (;;) {
    zmq::pollitem_t items[] = {{socket.handle(), 0, ZMQ_POLLIN, 0},
                               {nullptr, exits.fd(), ZMQ_POLLIN, 0}};
    zmq::poll(items, 2, std::chrono::milliseconds(-1));
    if (items[1].revents & ZMQ_POLLIN) {
      for (auto& e : exits.Take()) {
        if (auto s = SendExit(socket, e.reason, e.status, e.detail); !s.ok()) {
          HV_ERROR("cannot report a guest exit: %s", std::string(s.message()).c_str());
        }
      }
    }
    if (!(items[0].revents & ZMQ_POLLIN)) continue;
    zmq::message_t bytes;
    if (!socket.recv(bytes, zmq::recv_flags::none)) continue;
    ReceivedMessage received(std::move(bytes));
    if (!received.ok()) {
      HV_ERROR("bad message from the broker: %s", received.error().c_str());
      continue;
    }
    auto m = received.get();
    switch (m.which()) {
      case msg::Message::CONFIGURE_CORE: {
        auto config = m.getConfigureCore();
        auto created = Core::Create(config,
                                    [&exits](msg::ExitReason r, uint32_t st, std::string d) {
                                      exits.Push(r, st, std::move(d));
                                    },
                                    kvm_fd);
        if (!created.ok()) {
          std::string why(created.status().message());
          HV_ERROR("cannot build the VM: %s", why.c_str());
          (void)SendExit(socket, msg::ExitReason::ERROR, 0, why);
          return 1;
        }
        core = std::move(*created);
        // The VM is built; the guest runs only after `start`, sandboxed. Guest
        // RAM plus room for vCPU stacks and malloc's arenas; a thread per vCPU
        // and a few more; the fds it holds (one set per device) and some spare.
        sandbox::ProcessLimits limits;
        limits.address_space_bytes = config.getRamSize() + (uint64_t{4} << 30);
        limits.max_threads = 32 + config.getVm().getCpus();
        limits.max_fds = 4096;
        if (auto s = sandbox.Seal(CoreSyscallPolicy(), limits); !s.ok()) {
          std::string why = absl::StrCat("entering the sandbox: ", s.message());
          HV_ERROR("%s", why.c_str());
          (void)SendExit(socket, msg::ExitReason::ERROR, 0, why);
          return 1;
        }
        capnp::MallocMessageBuilder b;
        b.initRoot<msg::Message>().setCoreReady();
        (void)SendToPeer(socket, b);
        break;
      }
      case msg::Message::START:
        if (core == nullptr) {
          HV_ERROR("start before configure");
          return 1;
        }
        (void)core->Start();
        break;
      case msg::Message::SHUTDOWN:
        if (core != nullptr) core->Stop();
        return 0;
      default:
        HV_WARN("unexpected message %d from the broker", static_cast<int>(m.which()));
    }
  }
}

}  // namespace
}  // namespace hv

int main(int argc, char** argv) {
  hv::SetLogTag("hvcore");
  hv::InitLogLevelFromEnv();
  // Never outlive the broker.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  std::string endpoint;
  int kvm_fd = -1;
  hv::sandbox::SandboxArgs sandbox_args;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (hv::sandbox::ParseSandboxFlag(argc, argv, &i, &sandbox_args)) continue;
    if (arg == "--ctl" && i + 1 < argc) {
      endpoint = argv[++i];
    } else if (arg == "--kvm-fd" && i + 1 < argc) {
      auto fd = hv::ParseInheritedFd(argv[++i], "--kvm-fd");
      if (!fd.ok()) {
        fprintf(stderr, "hvcore: %s\n", std::string(fd.status().message()).c_str());
        return 2;
      }
      kvm_fd = *fd;
    } else if (arg == "--help" || arg == "-h") {
      fprintf(stdout,
              "usage: hvcore --ctl ENDPOINT [--kvm-fd FD] [--sandbox-report-fd FD | --no-sandbox]\n"
              "The VM's core process; hvbroker starts it. Not meant to be run by hand.\n");
      return 0;
    } else {
      fprintf(stderr, "hvcore: unknown argument '%s' (see --help)\n", arg.c_str());
      return 2;
    }
  }
  if (endpoint.empty()) {
    fprintf(stderr, "hvcore: --ctl ENDPOINT is required (hvcore is started by hvbroker)\n");
    return 2;
  }
  if (getppid() == 1) return 1;  // the broker is already gone
  // Before any thread exists: capabilities are per thread.
  auto sandbox = hv::sandbox::Sandbox::Begin(sandbox_args, "core", argv[0]);
  if (!sandbox.ok()) {
    HV_ERROR("cannot set up the sandbox: %s", std::string(sandbox.status().message()).c_str());
    return 1;
  }
  return hv::Run(endpoint, kvm_fd, **sandbox);
}
