#include "tests/vm_harness.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>

namespace hv::test {

std::string Runfile(const std::string& relative) {
  const char* srcdir = getenv("TEST_SRCDIR");
  const char* workspace = getenv("TEST_WORKSPACE");
  if (srcdir == nullptr) return relative;
  return std::string(srcdir) + "/" + (workspace ? workspace : "hv") + "/" + relative;
}

std::string TempDir() {
  char tmpl[] = "/tmp/hvt.XXXXXX";
  if (mkdtemp(tmpl) == nullptr) abort();
  // The VM's processes run under a uid of their own and must pass through it to
  // reach the broker's control socket in the runtime directory below.
  chmod(tmpl, 0711);
  return tmpl;
}

BrokerRun StartBroker(const std::vector<std::string>& args, const std::string& runtime_dir) {
  BrokerRun run;
  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) abort();
  std::string broker = Runfile("broker/hvbroker");
  std::vector<char*> argv = {const_cast<char*>(broker.c_str())};
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  run.pid = fork();
  if (run.pid == 0) {
    int devnull = open("/dev/null", O_RDONLY);
    dup2(devnull, 0);
    dup2(out[1], 1);
    dup2(err[1], 2);
    setenv("HV_RUNTIME_DIR", runtime_dir.c_str(), 1);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(out[1]);
  close(err[1]);
  run.stdout_fd = out[0];
  run.stderr_fd = err[0];
  fcntl(run.stdout_fd, F_SETFL, O_NONBLOCK);
  fcntl(run.stderr_fd, F_SETFL, O_NONBLOCK);
  return run;
}

void PumpOutput(BrokerRun& run, int ms) {
  pollfd fds[2] = {{run.stdout_fd, POLLIN, 0}, {run.stderr_fd, POLLIN, 0}};
  if (poll(fds, 2, ms) <= 0) return;
  char buf[4096];
  for (int i = 0; i < 2; ++i) {
    if (fds[i].fd < 0) continue;
    for (;;) {
      ssize_t n = read(fds[i].fd, buf, sizeof(buf));
      if (n <= 0) break;
      (i == 0 ? run.out : run.err).append(buf, n);
    }
  }
}

void WaitBroker(BrokerRun& run, int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    PumpOutput(run, 50);
    int status;
    pid_t r = waitpid(run.pid, &status, WNOHANG);
    if (r == run.pid) {
      PumpOutput(run, 0);
      run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      break;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      kill(run.pid, SIGKILL);
      waitpid(run.pid, &status, 0);
      PumpOutput(run, 0);
      run.exit_code = -1;
      run.err += "\n[test harness: hvbroker timed out and was killed]\n";
      break;
    }
  }
  close(run.stdout_fd);
  close(run.stderr_fd);
}

std::vector<ProcessInfo> Children(pid_t pid) {
  std::vector<ProcessInfo> result;
  std::ifstream children("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) +
                         "/children");
  pid_t child;
  while (children >> child) {
    std::ifstream comm("/proc/" + std::to_string(child) + "/comm");
    std::string name;
    std::getline(comm, name);
    result.push_back({child, name});
  }
  return result;
}

std::string WriteVmFile(const std::string& dir, const std::string& name, const std::string& kernel,
                        const std::string& cmdline, int cpus) {
  std::string path = dir + "/" + name + ".capnp";
  std::ofstream f(path);
  f << "using import \"/hv/vm.capnp\".Vm;\n"
    << "const vm :Vm = (\n"
    << "  name = \"" << name << "\",\n"
    << "  cpus = " << cpus << ",\n"
    << "  memory = \"64M\",\n"
    << "  boot = (kernel = \"" << kernel << "\", cmdline = \"" << cmdline << "\"),\n"
    << "  devices = [(slot = 0, emulation = \"hostbridge\"), (slot = 31, emulation = \"lpc\")],\n"
    << "  lpc = (com1 = (stdio = void)),\n"
    << ");\n";
  return path;
}

}  // namespace hv::test
