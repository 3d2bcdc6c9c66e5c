// Per-device restart on this machine's /dev/kvm with hv's test guests:
// `hvbroker restart VM lpc` while the guest prints and the user types, the
// restart policy after SIGKILL (successors sandboxed again, the limit ends the
// VM), and what cannot restart. Needs KVM; skips loudly without it.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "gtest/gtest.h"
#include "tests/vm_harness.h"

namespace hv::test {
namespace {

class RestartTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access("/dev/kvm", R_OK | W_OK) != 0) {
      GTEST_SKIP() << "SKIPPED: this test needs /dev/kvm, which this host does not have";
    }
    dir_ = TempDir();
  }
  void TearDown() override {
    if (!dir_.empty()) system(("rm -rf " + dir_).c_str());
  }

  BrokerRun Command(const std::vector<std::string>& args, int timeout_ms = 30000) {
    BrokerRun run = StartBroker(args, dir_);
    WaitBroker(run, timeout_ms);
    return run;
  }

  // The idle guest (guest/idle.S) with `restart` as the lpc's policy.
  std::string VmFile(const std::string& cmdline, const std::string& restart) {
    std::string path = dir_ + "/idle.capnp";
    std::ofstream f(path);
    f << "using import \"/hv/vm.capnp\".Vm;\n"
      << "const vm :Vm = (name = \"idle\", memory = \"64M\",\n"
      << "  boot = (kernel = \"" << Runfile("guest/idle.elf") << "\", cmdline = \"" << cmdline
      << "\"),\n"
      << "  devices = [(slot = 0, emulation = \"hostbridge\"),\n"
      << "             (slot = 31, emulation = \"lpc\"" << (restart.empty() ? "" : ", ")
      << restart << ")],\n"
      << "  lpc = (com1 = (stdio = void)));\n";
    return path;
  }

  // The lpc's host pid as `status` shows it (-1: none).
  pid_t LpcPid() {
    BrokerRun status = Command({"status", "idle"});
    std::istringstream lines(status.out);
    std::string row;
    while (std::getline(lines, row)) {
      std::istringstream fields(row);
      std::string name, kind, state;
      pid_t pid = -1;
      fields >> name >> kind >> pid >> state;
      if (name == "lpc" && state == "running") return pid;
    }
    return -1;
  }

  // The successor's pid once one runs in place of `old` (-1 after 5 s).
  pid_t WaitForSuccessor(pid_t old) {
    for (int tries = 0; tries < 200; ++tries) {
      pid_t now = LpcPid();
      if (now > 0 && now != old) return now;
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    return -1;
  }

  std::string dir_;
};

bool WaitFor(BrokerRun& run, const std::string& text, int seconds = 60) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (std::chrono::steady_clock::now() < deadline) {
    PumpOutput(run, 50);
    if (run.out.find(text) != std::string::npos) return true;
  }
  return false;
}

std::string ProcStatusField(pid_t pid, const std::string& field) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field + ":", 0) == 0) {
      size_t v = line.find_first_not_of(" \t", field.size() + 1);
      return v == std::string::npos ? "" : line.substr(v);
    }
  }
  return "";
}

std::string Namespace(pid_t pid, const char* kind) {
  char buf[128] = {};
  std::string link = "/proc/" + std::to_string(pid) + "/ns/" + kind;
  ssize_t n = readlink(link.c_str(), buf, sizeof(buf) - 1);
  return n > 0 ? std::string(buf, n) : "";
}

// Sandboxed: seccomp filter mode and namespaces of its own.
void ExpectSandboxed(pid_t pid) {
  EXPECT_EQ(ProcStatusField(pid, "Seccomp"), "2") << "pid " << pid;
  EXPECT_EQ(ProcStatusField(pid, "NoNewPrivs"), "1") << "pid " << pid;
  for (const char* ns : {"pid", "mnt", "ipc", "user", "net"}) {
    std::string theirs = Namespace(pid, ns);
    EXPECT_FALSE(theirs.empty()) << ns;
    EXPECT_NE(theirs, Namespace(getpid(), ns)) << "pid " << pid << " shares our " << ns;
  }
}

TEST_F(RestartTest, RestartingTheLpcLosesNoCharacterPrintedOrTyped) {
  constexpr int kLines = 4000;  // about 8 s of console output here
  std::string vm = VmFile("count=" + std::to_string(kLines), "");
  // stdin a pipe: what the test types reaches COM1 through the lpc.
  int in[2];
  ASSERT_EQ(pipe(in), 0);
  // StartBroker gives the broker /dev/null; start this one by hand with the pipe.
  int out[2], err[2];
  ASSERT_EQ(pipe(out), 0);
  ASSERT_EQ(pipe(err), 0);
  BrokerRun up;
  up.pid = fork();
  if (up.pid == 0) {
    dup2(in[0], 0);
    dup2(out[1], 1);
    dup2(err[1], 2);
    close(in[1]);
    setenv("HV_RUNTIME_DIR", dir_.c_str(), 1);
    std::string broker = Runfile("broker/hvbroker");
    execl(broker.c_str(), broker.c_str(), "up", vm.c_str(), nullptr);
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  close(err[1]);
  up.stdout_fd = out[0];
  up.stderr_fd = err[0];
  fcntl(up.stdout_fd, F_SETFL, O_NONBLOCK);
  fcntl(up.stderr_fd, F_SETFL, O_NONBLOCK);

  ASSERT_TRUE(WaitFor(up, "line 100\n")) << up.err;
  // Restart while the guest prints; type between restarts.
  std::string typed;
  int restarts = 0;
  for (int i = 0; i < 5 && up.out.find("idle: waiting") == std::string::npos; ++i) {
    BrokerRun r = Command({"restart", "idle", "lpc"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("device 'lpc' restarted"), std::string::npos) << r.out;
    ++restarts;
    pid_t successor = LpcPid();
    ASSERT_GT(successor, 0);
    ExpectSandboxed(successor);
    std::string word = "typed-" + std::to_string(i) + " ";
    ASSERT_EQ(write(in[1], word.data(), word.size()), static_cast<ssize_t>(word.size()));
    typed += word;
    PumpOutput(up, 100);
  }
  ASSERT_GE(restarts, 3) << "the guest finished printing too soon to test anything";
  ASSERT_TRUE(WaitFor(up, "idle: waiting for the power button\n")) << up.err;
  // The guest echoes what was typed once it has printed everything.
  ASSERT_TRUE(WaitFor(up, typed, 30)) << up.out.substr(up.out.size() > 300 ? up.out.size() - 300 : 0);
  BrokerRun stop = Command({"stop", "idle"});
  EXPECT_EQ(stop.exit_code, 0) << stop.err;
  close(in[1]);
  WaitBroker(up, 30000);
  EXPECT_EQ(up.exit_code, 0) << up.err;
  // Every line exactly once, in order, then the echo.
  std::string expected;
  for (int n = 0; n < kLines; ++n) expected += "line " + std::to_string(n) + "\n";
  expected += "idle: waiting for the power button\n" + typed + "idle: power button pressed\n";
  EXPECT_EQ(up.out.size(), expected.size());
  if (up.out != expected) {
    size_t at = 0;
    while (at < up.out.size() && at < expected.size() && up.out[at] == expected[at]) ++at;
    ADD_FAILURE() << "console output differs at byte " << at << ": got '"
                  << up.out.substr(at > 40 ? at - 40 : 0, 80) << "', want '"
                  << expected.substr(at > 40 ? at - 40 : 0, 80) << "'";
  }
  EXPECT_NE(up.err.find("serves again"), std::string::npos) << up.err;
}

TEST_F(RestartTest, AKilledLpcIsRestartedSandboxedUntilTheLimitEndsTheVm) {
  std::string vm = VmFile("", "restart = (mode = onFailure, limit = 3, windowSeconds = 600)");
  BrokerRun up = StartBroker({"up", vm}, dir_);
  ASSERT_TRUE(WaitFor(up, "idle: waiting for the power button\n")) << up.err;
  pid_t first = LpcPid();
  ASSERT_GT(first, 0);
  pid_t last = first;
  for (int i = 1; i <= 3; ++i) {
    ASSERT_EQ(kill(last, SIGKILL), 0);
    pid_t next = WaitForSuccessor(last);
    ASSERT_GT(next, 0) << up.err;
    ExpectSandboxed(next);
    BrokerRun status = Command({"status", "idle"});
    EXPECT_NE(status.out.find(" " + std::to_string(i) + "\n"), std::string::npos) << status.out;
    last = next;
  }
  // One death too many ends the VM with a clear reason.
  ASSERT_EQ(kill(last, SIGKILL), 0);
  WaitBroker(up, 30000);
  EXPECT_EQ(up.exit_code, 4) << up.err;
  EXPECT_NE(up.err.find("not restarted: it was restarted 3 times within 600 s"), std::string::npos)
      << up.err;
}

TEST_F(RestartTest, AfterRestartsTheGuestStillShutsDownCleanly) {
  std::string vm = VmFile("", "restart = (mode = always)");
  BrokerRun up = StartBroker({"up", vm}, dir_);
  ASSERT_TRUE(WaitFor(up, "idle: waiting for the power button\n")) << up.err;
  pid_t lpc = LpcPid();
  for (int i = 0; i < 2; ++i) {
    ASSERT_GT(lpc, 0);
    ASSERT_EQ(kill(lpc, SIGKILL), 0);
    lpc = WaitForSuccessor(lpc);
  }
  ASSERT_GT(lpc, 0) << up.err;
  BrokerRun stop = Command({"stop", "idle"});
  EXPECT_EQ(stop.exit_code, 0) << stop.err;
  WaitBroker(up, 30000);
  EXPECT_EQ(up.exit_code, 0) << up.err;
  EXPECT_EQ(up.out, "idle: waiting for the power button\nidle: power button pressed\n") << up.err;
}

TEST_F(RestartTest, WithoutAPolicyADeviceDeathStillEndsTheVm) {
  BrokerRun up = StartBroker({"up", VmFile("", "")}, dir_);
  ASSERT_TRUE(WaitFor(up, "idle: waiting for the power button\n")) << up.err;
  pid_t lpc = LpcPid();
  ASSERT_GT(lpc, 0);
  ASSERT_EQ(kill(lpc, SIGKILL), 0);
  WaitBroker(up, 30000);
  EXPECT_EQ(up.exit_code, 4) << up.err;
  EXPECT_NE(up.err.find("not restarted: its restart policy is `never`"), std::string::npos)
      << up.err;
}

TEST_F(RestartTest, RestartRefusesTheCoreAndUnknownDevices) {
  BrokerRun up = StartBroker({"up", VmFile("", "")}, dir_);
  ASSERT_TRUE(WaitFor(up, "idle: waiting for the power button\n")) << up.err;
  BrokerRun core = Command({"restart", "idle", "core"});
  EXPECT_EQ(core.exit_code, 1);
  EXPECT_NE(core.err.find("hvcore holds the VM itself"), std::string::npos) << core.err;
  BrokerRun unknown = Command({"restart", "idle", "nosuch"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_NE(unknown.err.find("has no device 'nosuch' (its devices: lpc)"), std::string::npos)
      << unknown.err;
  EXPECT_EQ(Command({"stop", "--force", "idle"}).exit_code, 0);
  WaitBroker(up, 30000);
}

// `debug VM lpc`: a successor without its sandbox, stopped before it serves,
// that a debugger can attach to; once let go it serves the guest again.
TEST_F(RestartTest, DebugRestartsTheDeviceUnsandboxedAndStoppedForADebugger) {
  BrokerRun up = StartBroker({"up", VmFile("", "")}, dir_);
  ASSERT_TRUE(WaitFor(up, "idle: waiting for the power button\n")) << up.err;
  pid_t before = LpcPid();
  BrokerRun debug = Command({"debug", "idle", "lpc"});
  ASSERT_EQ(debug.exit_code, 0) << debug.err;
  size_t at = debug.out.find("gdb -p ");
  ASSERT_NE(at, std::string::npos) << debug.out;
  pid_t pid = atoi(debug.out.c_str() + at + strlen("gdb -p "));
  ASSERT_GT(pid, 0);
  EXPECT_NE(pid, before);
  EXPECT_NE(debug.out.find("WITHOUT its sandbox"), std::string::npos) << debug.out;
  EXPECT_NE(debug.out.find("kill -CONT " + std::to_string(pid)), std::string::npos) << debug.out;
  // Stopped, and unsandboxed: no seccomp filter, our own namespaces.
  for (int i = 0; i < 100 && ProcStatusField(pid, "State").rfind("T", 0) != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(ProcStatusField(pid, "State").substr(0, 1), "T");
  EXPECT_EQ(ProcStatusField(pid, "Seccomp"), "0");
  EXPECT_EQ(Namespace(pid, "pid"), Namespace(getpid(), "pid"));
  // A debugger can attach (what gdb -p does), then it is let go.
  ASSERT_EQ(ptrace(PTRACE_ATTACH, pid, nullptr, nullptr), 0) << strerror(errno);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, __WALL), pid);
  EXPECT_TRUE(WIFSTOPPED(status));
  ASSERT_EQ(ptrace(PTRACE_DETACH, pid, nullptr, nullptr), 0);
  ASSERT_EQ(kill(pid, SIGCONT), 0);
  BrokerRun status_run;
  for (int i = 0; i < 100; ++i) {
    status_run = Command({"status", "idle"});
    if (status_run.out.find(std::to_string(pid) + " running   NO") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_NE(status_run.out.find(std::to_string(pid) + " running   NO"), std::string::npos)
      << status_run.out;
  // It serves the guest: the power button still reaches it.
  EXPECT_EQ(Command({"stop", "idle"}).exit_code, 0);
  WaitBroker(up, 30000);
  EXPECT_EQ(up.exit_code, 0) << up.err;
  EXPECT_EQ(up.out, "idle: waiting for the power button\nidle: power button pressed\n") << up.err;
  EXPECT_NE(up.err.find("now runs WITHOUT its sandbox"), std::string::npos) << up.err;
}

// `trace VM DEVICE`: the accesses the device handles, decoded, and the broker's
// messages to and from it, live and across a restart.
TEST_F(RestartTest, TraceShowsTheDevicesAccessesAndMessagesLive) {
  BrokerRun up = StartBroker({"up", VmFile("", "")}, dir_);
  ASSERT_TRUE(WaitFor(up, "idle: waiting for the power button\n")) << up.err;
  // The idle guest reads PM1_STS (port 0x400, 2 bytes) over and over.
  BrokerRun few = Command({"trace", "--count=3", "idle", "lpc"});
  EXPECT_EQ(few.exit_code, 0) << few.err;
  EXPECT_NE(few.err.find("tracing device 'lpc'"), std::string::npos) << few.err;
  std::istringstream lines(few.out);
  std::string line;
  int n = 0;
  while (std::getline(lines, line)) {
    ++n;
    EXPECT_NE(line.find("vcpu-access"), std::string::npos) << line;
    EXPECT_NE(line.find("pio read 0x400 size 2 -> 0"), std::string::npos) << line;
  }
  EXPECT_EQ(n, 3) << few.out;

  BrokerRun live = StartBroker({"trace", "--seconds=4", "idle", "lpc"}, dir_);
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  EXPECT_EQ(Command({"restart", "idle", "lpc"}).exit_code, 0);
  WaitBroker(live, 30000);
  EXPECT_EQ(live.exit_code, 0) << live.err;
  for (const char* want : {"broker -> device: shutdown (for a successor)",
                           "exited with status 0", "device -> broker: hello",
                           "broker -> device: configureDevice", "device -> broker: deviceReady",
                           "serves again"}) {
    EXPECT_NE(live.out.find(want), std::string::npos) << want << " in:\n" << live.out.substr(0, 2000);
  }
  // Accesses before and after the restart.
  size_t restart_at = live.out.find("device -> broker: deviceReady");
  EXPECT_NE(live.out.find("vcpu-access"), std::string::npos);
  EXPECT_NE(live.out.find("vcpu-access", restart_at == std::string::npos ? 0 : restart_at),
            std::string::npos);

  BrokerRun core = Command({"trace", "--count=1", "idle", "core"});
  EXPECT_EQ(core.exit_code, 1);
  EXPECT_NE(core.err.find("hvcore is not traced"), std::string::npos) << core.err;
  EXPECT_EQ(Command({"stop", "--force", "idle"}).exit_code, 0);
  WaitBroker(up, 30000);
}

}  // namespace
}  // namespace hv::test
