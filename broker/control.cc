#include "broker/control.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "capnp/message.h"
#include "capnp/serialize.h"
#include "common/fd.h"
#include "common/zmq_msg.h"

namespace hv::broker {
namespace {

constexpr char kControlUsage[] = R"(usage:
  hvbroker ls                     the VMs running under $HV_RUNTIME_DIR and their state
  hvbroker status VM              its processes: pids, sandbox, uptime, restarts, counters
  hvbroker stop [--force] [--wait=SECONDS] VM
                                  press the VM's ACPI power button (the guest shuts
                                  down); --force destroys it at once (bhyvectl --destroy);
                                  --wait waits until the VM has ended
  hvbroker restart VM DEVICE      stop a device's process between two accesses and start a
                                  successor that resumes from its saved state; returns once
                                  it serves
  hvbroker debug VM DEVICE        restart a device WITHOUT its sandbox, stopped before it
                                  serves, and print how to attach gdb to it
  hvbroker trace [--count=N] [--seconds=S] VM DEVICE
                                  the register accesses a device handles and the broker's
                                  messages to and from it, decoded, live
  hvbroker console VM [comN]      attach this terminal to a COM port (default the
                                  first); Ctrl-] detaches
)";

// A reply that keeps its bytes alive for the reader.
class Reply {
 public:
  static absl::StatusOr<std::unique_ptr<Reply>> Parse(const zmq::message_t& bytes) {
    auto reply = std::unique_ptr<Reply>(new Reply);
    size_t nwords = bytes.size() / sizeof(capnp::word);
    if (nwords == 0 || bytes.size() % sizeof(capnp::word) != 0) {
      return absl::DataLossError("the broker's reply is not a Cap'n Proto message");
    }
    // ZeroMQ gives no alignment guarantee: copy into words.
    reply->words_ = kj::heapArray<capnp::word>(nwords);
    memcpy(reply->words_.begin(), bytes.data(), bytes.size());
    try {
      reply->reader_ = std::make_unique<capnp::FlatArrayMessageReader>(reply->words_.asPtr());
      (void)reply->get().getError();
    } catch (const kj::Exception& e) {
      return absl::DataLossError(absl::StrCat("bad reply: ", e.getDescription().cStr()));
    }
    return reply;
  }
  ctl::ControlReply::Reader get() { return reader_->getRoot<ctl::ControlReply>(); }

 private:
  Reply() = default;
  kj::Array<capnp::word> words_;
  std::unique_ptr<capnp::FlatArrayMessageReader> reader_;
};

std::string VmDir(const std::string& vm) { return RuntimeBaseDir() + "/" + vm; }

// A VM runs while its broker holds the lock in its runtime directory.
bool VmRunning(const std::string& vm_dir) {
  Fd lock(open((vm_dir + "/lock").c_str(), O_RDONLY | O_CLOEXEC));
  if (!lock.valid()) return false;
  return flock(lock.get(), LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
}

absl::StatusOr<std::unique_ptr<Reply>> Ask(const std::string& vm, capnp::MessageBuilder& request,
                                           int timeout_ms) {
  std::string dir = VmDir(vm);
  struct stat st;
  if (!VmRunning(dir) || stat(ControlSocketPath(dir).c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat("no VM named '", vm, "' is running (in ",
                                            RuntimeBaseDir(), ")"));
  }
  zmq::context_t context(1);
  zmq::socket_t socket(context, zmq::socket_type::dealer);
  socket.set(zmq::sockopt::linger, 0);
  socket.set(zmq::sockopt::rcvtimeo, timeout_ms);
  try {
    socket.connect("ipc://" + ControlSocketPath(dir));
    socket.send(SerializeMessage(request), zmq::send_flags::none);
    zmq::message_t bytes;
    if (!socket.recv(bytes, zmq::recv_flags::none)) {
      return absl::DeadlineExceededError(
          absl::StrCat("VM '", vm, "': its broker did not answer within ", timeout_ms, " ms"));
    }
    return Reply::Parse(bytes);
  } catch (const zmq::error_t& e) {
    return absl::UnavailableError(absl::StrCat("VM '", vm, "': ", e.what()));
  }
}

absl::StatusOr<std::unique_ptr<Reply>> AskStatus(const std::string& vm, int timeout_ms) {
  capnp::MallocMessageBuilder b;
  b.initRoot<ctl::ControlRequest>().setStatus();
  return Ask(vm, b, timeout_ms);
}

std::string Duration(uint64_t ms) {
  uint64_t s = ms / 1000;
  if (s < 60) return absl::StrFormat("%.1fs", ms / 1000.0);
  if (s < 3600) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  if (s < 86400) return absl::StrFormat("%dh%02dm", s / 3600, s / 60 % 60);
  return absl::StrFormat("%dd%02dh", s / 86400, s / 3600 % 24);
}

int Fail(const absl::Status& s) {
  fprintf(stderr, "hvbroker: %s\n", std::string(s.message()).c_str());
  return 1;
}

int Ls(const std::vector<std::string>& args) {
  if (args.size() != 1) {
    fputs(kControlUsage, stderr);
    return 2;
  }
  std::string base = RuntimeBaseDir();
  std::vector<std::string> names;
  if (DIR* d = opendir(base.c_str())) {
    while (dirent* e = readdir(d)) {
      std::string n = e->d_name;
      if (n == "." || n == "..") continue;
      struct stat st;
      if (stat((base + "/" + n).c_str(), &st) == 0 && S_ISDIR(st.st_mode) &&
          VmRunning(base + "/" + n)) {
        names.push_back(n);
      }
    }
    closedir(d);
  }
  std::sort(names.begin(), names.end());
  printf("%-20s %-10s %8s %10s  %s\n", "NAME", "STATE", "PID", "UPTIME", "PROCESSES");
  for (const auto& n : names) {
    auto reply = AskStatus(n, 2000);
    if (!reply.ok()) {
      printf("%-20s %-10s %8s %10s  %s\n", n.c_str(), "unknown", "-", "-",
             std::string(reply.status().message()).c_str());
      continue;
    }
    auto st = (*reply)->get().getStatus();
    int running = 0, total = 0;
    for (auto p : st.getProcesses()) {
      ++total;
      if (std::string(p.getState().cStr()) == "running") ++running;
    }
    printf("%-20s %-10s %8d %10s  %d/%d running\n", st.getName().cStr(), st.getState().cStr(),
           st.getBrokerPid(), Duration(st.getUptimeMs()).c_str(), running, total);
  }
  return 0;
}

int Status(const std::vector<std::string>& args) {
  if (args.size() != 2) {
    fputs(kControlUsage, stderr);
    return 2;
  }
  auto reply = AskStatus(args[1], 5000);
  if (!reply.ok()) return Fail(reply.status());
  auto st = (*reply)->get().getStatus();
  printf("VM %s: %s, broker pid %d, up %s, uid %u\n", st.getName().cStr(), st.getState().cStr(),
         st.getBrokerPid(), Duration(st.getUptimeMs()).c_str(), st.getVmUid());
  printf("%-16s %-11s %8s %-9s %-9s %10s %8s\n", "PROCESS", "KIND", "PID", "STATE", "SANDBOXED",
         "UPTIME", "RESTARTS");
  for (auto p : st.getProcesses()) {
    printf("%-16s %-11s %8d %-9s %-9s %10s %8u\n", p.getName().cStr(), p.getKind().cStr(),
           p.getPid(), p.getState().cStr(), p.getSandboxed() ? "yes" : "NO",
           Duration(p.getUptimeMs()).c_str(), p.getRestarts());
    for (auto c : p.getCounters()) {
      printf("    %s.%s = %llu\n", p.getName().cStr(), c.getName().cStr(),
             static_cast<unsigned long long>(c.getValue()));
    }
  }
  for (auto c : st.getConsoles()) printf("console %s: %s\n", c.getName().cStr(), c.getPath().cStr());
  return 0;
}

// Waits until the VM's broker has let go of its runtime directory.
bool WaitGone(const std::string& vm, int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (VmRunning(VmDir(vm))) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

int Stop(std::vector<std::string> args) {
  bool force = false;
  int wait_s = -1;
  while (args.size() > 1 && args[1].rfind("--", 0) == 0) {
    if (args[1] == "--force") {
      force = true;
    } else if (args[1].rfind("--wait=", 0) == 0) {
      wait_s = atoi(args[1].c_str() + strlen("--wait="));
    } else {
      fprintf(stderr, "hvbroker stop: unknown option '%s'\n", args[1].c_str());
      return 2;
    }
    args.erase(args.begin() + 1);
  }
  if (args.size() != 2) {
    fputs(kControlUsage, stderr);
    return 2;
  }
  capnp::MallocMessageBuilder b;
  b.initRoot<ctl::ControlRequest>().initStop().setForce(force);
  auto reply = Ask(args[1], b, 5000);
  if (!reply.ok()) return Fail(reply.status());
  auto r = (*reply)->get();
  if (r.getError().size() > 0) return Fail(absl::FailedPreconditionError(r.getError().cStr()));
  printf("%s\n", r.getMessage().cStr());
  // Destroying returns once the VM is gone, as bhyvectl --destroy does.
  if (force && wait_s < 0) wait_s = 10;
  if (wait_s >= 0 && !WaitGone(args[1], wait_s * 1000)) {
    fprintf(stderr, "hvbroker: VM '%s' still runs after %d s\n", args[1].c_str(), wait_s);
    return 1;
  }
  return 0;
}

int Restart(const std::vector<std::string>& args) {
  if (args.size() != 3) {
    fputs(kControlUsage, stderr);
    return 2;
  }
  capnp::MallocMessageBuilder b;
  if (args[0] == "debug") {
    b.initRoot<ctl::ControlRequest>().setDebug(args[2]);
  } else {
    b.initRoot<ctl::ControlRequest>().setRestart(args[2]);
  }
  auto reply = Ask(args[1], b, 30000);
  if (!reply.ok()) return Fail(reply.status());
  auto r = (*reply)->get();
  if (r.getError().size() > 0) return Fail(absl::FailedPreconditionError(r.getError().cStr()));
  printf("%s\n", r.getMessage().cStr());
  return 0;
}

// `trace VM DEVICE [--count N] [--seconds S]`: prints the lines the broker
// sends until N lines, S seconds, or Ctrl-C; repeats its request every second
// so that the broker keeps it as a tracer.
int Trace(std::vector<std::string> args) {
  long count = -1, seconds = -1;
  for (size_t i = 1; i < args.size();) {
    if (args[i].rfind("--count=", 0) == 0) {
      count = atol(args[i].c_str() + strlen("--count="));
    } else if (args[i].rfind("--seconds=", 0) == 0) {
      seconds = atol(args[i].c_str() + strlen("--seconds="));
    } else {
      ++i;
      continue;
    }
    args.erase(args.begin() + i);
  }
  if (args.size() != 3) {
    fputs(kControlUsage, stderr);
    return 2;
  }
  std::string dir = VmDir(args[1]);
  if (!VmRunning(dir)) {
    return Fail(absl::NotFoundError(absl::StrCat("no VM named '", args[1], "' is running (in ",
                                                 RuntimeBaseDir(), ")")));
  }
  zmq::context_t context(1);
  zmq::socket_t socket(context, zmq::socket_type::dealer);
  socket.set(zmq::sockopt::linger, 0);
  socket.connect("ipc://" + ControlSocketPath(dir));
  auto ask = [&] {
    capnp::MallocMessageBuilder b;
    b.initRoot<ctl::ControlRequest>().setTrace(args[2]);
    socket.send(SerializeMessage(b), zmq::send_flags::none);
  };
  ask();
  auto start = std::chrono::steady_clock::now();
  auto last_ask = start;
  bool answered = false;
  long printed = 0;
  for (;;) {
    auto now = std::chrono::steady_clock::now();
    if (seconds >= 0 && now - start >= std::chrono::seconds(seconds)) break;
    if (now - last_ask >= std::chrono::seconds(1)) {
      ask();
      last_ask = now;
    }
    zmq::pollitem_t item = {socket.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, std::chrono::milliseconds(200));
    if (!(item.revents & ZMQ_POLLIN)) {
      if (!answered && now - start > std::chrono::seconds(5)) {
        return Fail(absl::DeadlineExceededError("the VM's broker did not answer"));
      }
      if (answered && !VmRunning(dir)) break;  // the VM ended
      continue;
    }
    zmq::message_t bytes;
    if (!socket.recv(bytes, zmq::recv_flags::dontwait)) continue;
    auto reply = Reply::Parse(bytes);
    if (!reply.ok()) return Fail(reply.status());
    auto r = (*reply)->get();
    if (r.getError().size() > 0) return Fail(absl::FailedPreconditionError(r.getError().cStr()));
    if (r.getMessage().size() > 0) fprintf(stderr, "%s\n", r.getMessage().cStr());
    answered = true;
    for (auto line : r.getTrace()) {
      printf("%s\n", line.cStr());
      if (count >= 0 && ++printed >= count) {
        fflush(stdout);
        return 0;
      }
    }
    fflush(stdout);
  }
  return 0;
}

// The terminal in raw mode while attached to a console.
class RawTerminal {
 public:
  RawTerminal() {
    if (!isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &saved_) != 0) return;
    termios raw = saved_;
    cfmakeraw(&raw);
    if (tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0) active_ = true;
  }
  ~RawTerminal() {
    if (active_) tcsetattr(STDIN_FILENO, TCSANOW, &saved_);
  }
  bool active() const { return active_; }

 private:
  termios saved_ = {};
  bool active_ = false;
};

int Console(const std::vector<std::string>& args) {
  if (args.size() < 2 || args.size() > 3) {
    fputs(kControlUsage, stderr);
    return 2;
  }
  auto reply = AskStatus(args[1], 5000);
  if (!reply.ok()) return Fail(reply.status());
  auto consoles = (*reply)->get().getStatus().getConsoles();
  std::string path;
  for (auto c : consoles) {
    if (args.size() == 2 || args[2] == c.getName().cStr()) {
      path = c.getPath();
      break;
    }
  }
  if (path.empty()) {
    return Fail(absl::NotFoundError(absl::StrCat(
        "VM '", args[1], "' has no ", args.size() == 3 ? args[2] : "COM port",
        " to attach to (a COM port on a socket, or any COM port of a VM started with "
        "`up --detach`)")));
  }
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
  Fd sock(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!sock.valid() || connect(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return Fail(ErrnoStatus("connect " + path));
  }
  RawTerminal terminal;
  if (terminal.active()) fprintf(stderr, "[attached to %s; Ctrl-] detaches]\r\n", args[1].c_str());
  constexpr char kDetach = 0x1d;  // Ctrl-]
  signal(SIGPIPE, SIG_IGN);
  bool stdin_open = true;
  char buf[4096];
  for (;;) {
    pollfd fds[2] = {{sock.get(), POLLIN, 0}, {stdin_open ? STDIN_FILENO : -1, POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return Fail(ErrnoStatus("poll"));
    }
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = read(sock.get(), buf, sizeof(buf));
      if (n <= 0) break;  // the VM (or its COM port) let go of us
      if (!WriteFull(STDOUT_FILENO, buf, n).ok()) break;
    }
    if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
      if (n <= 0) {
        // No more input: the COM port sees end of input and lets go of us
        // once it has it, so output until then still arrives.
        stdin_open = false;
        shutdown(sock.get(), SHUT_WR);
        continue;
      }
      if (terminal.active()) {
        char* esc = static_cast<char*>(memchr(buf, kDetach, n));
        if (esc != nullptr) {
          (void)WriteFull(sock.get(), buf, esc - buf);
          break;
        }
      }
      if (!WriteFull(sock.get(), buf, n).ok()) break;
    }
  }
  if (terminal.active()) fprintf(stderr, "\r\n[detached from %s]\r\n", args[1].c_str());
  return 0;
}

}  // namespace

std::string ControlSocketPath(const std::string& vm_runtime_dir) {
  return vm_runtime_dir + "/control";
}

ControlServer::ControlServer(zmq::context_t& context) : socket_(context, zmq::socket_type::router) {}

absl::Status ControlServer::Bind(const std::string& vm_runtime_dir) {
  std::string path = ControlSocketPath(vm_runtime_dir);
  unlink(path.c_str());  // left by a broker that crashed
  mode_t old = umask(0077);
  try {
    // A reply to `stop --force` must still leave after the loop has ended.
    socket_.set(zmq::sockopt::linger, 1000);
    socket_.bind("ipc://" + path);
  } catch (const zmq::error_t& e) {
    umask(old);
    return absl::UnavailableError(absl::StrCat("bind ", path, ": ", e.what()));
  }
  umask(old);
  if (chmod(path.c_str(), 0600) != 0) return ErrnoStatus("chmod " + path);
  return absl::OkStatus();
}

void ControlServer::ServePending(const Handler& handler) {
  for (;;) {
    zmq::message_t identity, bytes;
    if (!socket_.recv(identity, zmq::recv_flags::dontwait)) return;
    if (!identity.more()) continue;
    // A DEALER client sends the request alone, a REQ client after an empty frame.
    do {
      if (!socket_.recv(bytes, zmq::recv_flags::none)) return;
    } while (bytes.size() == 0 && bytes.more());
    capnp::MallocMessageBuilder out;
    auto reply = out.initRoot<ctl::ControlReply>();
    size_t nwords = bytes.size() / sizeof(capnp::word);
    if (nwords == 0 || bytes.size() % sizeof(capnp::word) != 0) {
      reply.setError("not a Cap'n Proto message");
    } else {
      auto words = kj::heapArray<capnp::word>(nwords);  // ZeroMQ does not align
      memcpy(words.begin(), bytes.data(), bytes.size());
      try {
        capnp::FlatArrayMessageReader reader(words.asPtr());
        if (!handler(identity.to_string(), reader.getRoot<ctl::ControlRequest>(), reply)) continue;
      } catch (const kj::Exception& e) {
        reply.setError(absl::StrCat("bad request: ", e.getDescription().cStr()));
      }
    }
    Reply(identity.to_string(), out);
  }
}

void ControlServer::Reply(const std::string& client, capnp::MessageBuilder& reply) {
  try {
    socket_.send(zmq::buffer(client), zmq::send_flags::sndmore);
    socket_.send(SerializeMessage(reply), zmq::send_flags::dontwait);
  } catch (const zmq::error_t&) {
    // The client went away: nothing to tell it.
  }
}

bool IsControlCommand(const std::string& command) {
  return command == "ls" || command == "status" || command == "stop" || command == "console" ||
         command == "restart" || command == "debug" || command == "trace";
}

int RunControlCommand(const std::vector<std::string>& args) {
  const std::string& command = args[0];
  if (args.size() > 1 && (args[1] == "--help" || args[1] == "-h")) {
    fputs(kControlUsage, stdout);
    return 0;
  }
  if (command == "ls") return Ls(args);
  if (command == "status") return Status(args);
  if (command == "stop") return Stop(args);
  if (command == "console") return Console(args);
  if (command == "restart" || command == "debug") return Restart(args);
  if (command == "trace") return Trace(args);
  fputs(kControlUsage, stderr);
  return 2;
}

int RunVmDetached(VmConfig config, RunOptions options) {
  std::string base = RuntimeBaseDir();
  if (mkdir(base.c_str(), 0711) != 0 && errno != EEXIST) return Fail(ErrnoStatus("mkdir " + base));
  std::string name = config.vm().getName();
  std::string log_path = base + "/" + name + ".log";
  int ready[2];
  if (pipe2(ready, O_CLOEXEC) != 0) return Fail(ErrnoStatus("pipe2"));
  Fd log(open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600));
  if (!log.valid()) return Fail(ErrnoStatus("open " + log_path));
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) return Fail(ErrnoStatus("fork"));
  if (pid == 0) {
    close(ready[0]);
    setsid();  // no terminal: its hang-up or Ctrl-C no longer reach the VM
    int devnull = open("/dev/null", O_RDWR);
    dup2(devnull, STDIN_FILENO);
    dup2(devnull, STDOUT_FILENO);
    dup2(log.get(), STDERR_FILENO);  // the broker's and every child's messages
    if (devnull > STDERR_FILENO) close(devnull);
    options.detached = true;
    options.detach_ready_fd = ready[1];
    _exit(RunVm(std::move(config), options));
  }
  close(ready[1]);
  char byte;
  ssize_t n;
  do {
    n = read(ready[0], &byte, 1);
  } while (n < 0 && errno == EINTR);
  close(ready[0]);
  if (n == 1) {
    printf("VM '%s' runs in the background (broker pid %d); `hvbroker console %s` attaches to its "
           "console, `hvbroker stop %s` stops it; its log is %s\n",
           name.c_str(), pid, name.c_str(), name.c_str(), log_path.c_str());
    return 0;
  }
  // It did not start: say why (its log), and end as it did.
  int status = 0;
  waitpid(pid, &status, 0);
  Fd in(open(log_path.c_str(), O_RDONLY | O_CLOEXEC));
  char buf[4096];
  while (in.valid() && (n = read(in.get(), buf, sizeof(buf))) > 0) (void)WriteFull(STDERR_FILENO, buf, n);
  return WIFEXITED(status) ? WEXITSTATUS(status) : kExitStartFailed;
}

}  // namespace hv::broker
