// The control commands on running VMs (this machine's /dev/kvm, hv's test
// guests): `hvbroker ls`, `status`, `stop`, `stop --force`, `console` and
// `up --detach`. Needs KVM; skips loudly without it.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
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

class ControlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access("/dev/kvm", R_OK | W_OK) != 0) {
      GTEST_SKIP() << "SKIPPED: this test needs /dev/kvm, which this host does not have";
    }
    dir_ = TempDir();
  }
  void TearDown() override {
    if (dir_.empty()) return;
    // A detached broker the test did not stop: its lock file names it.
    for (const char* vm : {"idle", "busy"}) {
      std::ifstream lock(dir_ + "/" + vm + "/lock");
      pid_t pid = 0;
      if (lock >> pid && pid > 0) kill(pid, SIGKILL);
    }
    system(("rm -rf " + dir_).c_str());
  }

  // `hvbroker ARGS...` to its end.
  BrokerRun Command(const std::vector<std::string>& args, int timeout_ms = 30000) {
    BrokerRun run = StartBroker(args, dir_);
    WaitBroker(run, timeout_ms);
    return run;
  }

  // Output of a foreground `up` until `text` appears (or 60 s).
  bool WaitForOutput(BrokerRun& run, const std::string& text) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      PumpOutput(run, 50);
      if (run.out.find(text) != std::string::npos) return true;
    }
    return false;
  }

  std::string IdleVm() {
    // COM1 on stdio: in the foreground the broker's stdout, detached a socket.
    return WriteVmFile(dir_, "idle", Runfile("guest/idle.elf"), "");
  }
  std::string dir_;
};

constexpr char kWaiting[] = "idle: waiting for the power button\n";

TEST_F(ControlTest, LsAndStatusShowTheVmAndEachOfItsProcesses) {
  BrokerRun up = StartBroker({"up", IdleVm()}, dir_);
  ASSERT_TRUE(WaitForOutput(up, kWaiting)) << up.err;
  std::vector<ProcessInfo> children = Children(up.pid);
  ASSERT_EQ(children.size(), 2u);

  BrokerRun ls = Command({"ls"});
  EXPECT_EQ(ls.exit_code, 0) << ls.err;
  std::istringstream rows(ls.out);
  std::string header, name, state, pid;
  std::getline(rows, header);
  rows >> name >> state >> pid;
  EXPECT_EQ(name, "idle") << ls.out;
  EXPECT_EQ(state, "running") << ls.out;
  EXPECT_EQ(pid, std::to_string(up.pid)) << ls.out;
  EXPECT_NE(ls.out.find("2/2 running"), std::string::npos) << ls.out;

  BrokerRun status = Command({"status", "idle"});
  EXPECT_EQ(status.exit_code, 0) << status.err;
  EXPECT_NE(status.out.find("VM idle: running, broker pid " + std::to_string(up.pid)),
            std::string::npos)
      << status.out;
  // One row per process with its host pid, sandboxed, never restarted.
  for (const auto& child : children) {
    std::string row;
    std::istringstream lines(status.out);
    bool found = false;
    while (std::getline(lines, row)) {
      std::istringstream fields(row);
      std::string pname, kind, ppid, pstate, sandboxed, uptime, restarts;
      fields >> pname >> kind >> ppid >> pstate >> sandboxed >> uptime >> restarts;
      if (ppid != std::to_string(child.pid)) continue;
      found = true;
      EXPECT_TRUE(pname == "core" || pname == "lpc") << row;
      EXPECT_EQ(kind, pname == "core" ? "hvcore" : "lpc") << row;
      EXPECT_EQ(pstate, "running") << row;
      EXPECT_EQ(sandboxed, "yes") << row;
      EXPECT_EQ(restarts, "0") << row;
    }
    EXPECT_TRUE(found) << "no row for pid " << child.pid << " (" << child.comm << "):\n"
                       << status.out;
  }
  // A foreground VM's console is the broker's stdio: nothing to attach to.
  EXPECT_EQ(status.out.find("console com1"), std::string::npos) << status.out;

  BrokerRun stop = Command({"stop", "--force", "idle"});
  EXPECT_EQ(stop.exit_code, 0) << stop.err;
  WaitBroker(up, 30000);
  EXPECT_EQ(up.exit_code, 5) << up.err;
  EXPECT_NE(up.err.find("destroyed by `hvbroker stop --force`"), std::string::npos) << up.err;
  BrokerRun after = Command({"ls"});
  EXPECT_EQ(after.out.find("idle"), std::string::npos) << after.out;
}

TEST_F(ControlTest, StopPressesThePowerButtonAndTheGuestPowersOff) {
  BrokerRun up = StartBroker({"up", IdleVm()}, dir_);
  ASSERT_TRUE(WaitForOutput(up, kWaiting)) << up.err;
  BrokerRun stop = Command({"stop", "idle"});
  EXPECT_EQ(stop.exit_code, 0) << stop.err;
  EXPECT_NE(stop.out.find("pressed the ACPI power button"), std::string::npos) << stop.out;
  WaitBroker(up, 30000);
  // The guest saw PWRBTN_STS and entered S5 itself.
  EXPECT_EQ(up.exit_code, 0) << up.err;
  EXPECT_EQ(up.out, std::string(kWaiting) + "idle: power button pressed\n") << up.err;
  EXPECT_NE(up.err.find("the guest powered off"), std::string::npos) << up.err;
}

TEST_F(ControlTest, AGuestThatIgnoresThePowerButtonKeepsRunningUntilStopForce) {
  // exitbench never looks at PM1_STS.
  std::string vm = WriteVmFile(dir_, "busy", Runfile("guest/exitbench.elf"), "n=100000000");
  BrokerRun up = StartBroker({"up", vm}, dir_);
  ASSERT_TRUE(WaitForOutput(up, "exitbench n=")) << up.err;
  BrokerRun stop = Command({"stop", "--wait=1", "busy"});
  EXPECT_EQ(stop.exit_code, 1) << stop.out;
  EXPECT_NE(stop.err.find("still runs after 1 s"), std::string::npos) << stop.err;
  EXPECT_EQ(waitpid(up.pid, nullptr, WNOHANG), 0) << "the VM ended without --force";
  auto started = std::chrono::steady_clock::now();
  BrokerRun force = Command({"stop", "--force", "busy"});
  EXPECT_EQ(force.exit_code, 0) << force.err;
  // `stop --force` returns once the VM is gone, like bhyvectl --destroy.
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(10));
  EXPECT_EQ(Command({"status", "busy"}).exit_code, 1);
  WaitBroker(up, 30000);
  EXPECT_EQ(up.exit_code, 5) << up.err;
}

TEST_F(ControlTest, DetachedVmRunsInTheBackgroundAndItsConsoleAttaches) {
  auto started = std::chrono::steady_clock::now();
  BrokerRun up = Command({"up", "--detach", IdleVm()});
  ASSERT_EQ(up.exit_code, 0) << up.err;
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(20));
  EXPECT_NE(up.out.find("VM 'idle' runs in the background"), std::string::npos) << up.out;

  BrokerRun status = Command({"status", "idle"});
  ASSERT_EQ(status.exit_code, 0) << status.err;
  EXPECT_NE(status.out.find("console com1: " + dir_ + "/idle/com1.sock"), std::string::npos)
      << status.out;

  // `console` with a pipe for stdin: the guest echoes what it receives.
  int in[2], out[2];
  ASSERT_EQ(pipe(in), 0);
  ASSERT_EQ(pipe(out), 0);
  pid_t console = fork();
  if (console == 0) {
    dup2(in[0], 0);
    dup2(out[1], 1);
    close(in[1]);
    close(out[0]);
    setenv("HV_RUNTIME_DIR", dir_.c_str(), 1);
    std::string broker = Runfile("broker/hvbroker");
    execl(broker.c_str(), broker.c_str(), "console", "idle", nullptr);
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  std::string echoed;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  // Until the console has attached, what is typed may reach no one: type again.
  while (echoed.find("ping-1234") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    ASSERT_EQ(write(in[1], "ping-1234\n", 10), 10);
    pollfd p = {out[0], POLLIN, 0};
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
    while (std::chrono::steady_clock::now() < until && poll(&p, 1, 50) >= 0) {
      char buf[256];
      if ((p.revents & POLLIN) == 0) continue;
      ssize_t n = read(out[0], buf, sizeof(buf));
      if (n <= 0) break;
      echoed.append(buf, n);
    }
  }
  EXPECT_NE(echoed.find("ping-1234"), std::string::npos) << echoed;
  close(in[1]);  // end of input: the COM port lets the console go
  int console_status = -1;
  for (int i = 0; i < 200 && waitpid(console, &console_status, WNOHANG) == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(WIFEXITED(console_status) && WEXITSTATUS(console_status) == 0) << console_status;
  close(out[0]);

  BrokerRun stop = Command({"stop", "--wait=20", "idle"});
  EXPECT_EQ(stop.exit_code, 0) << stop.err;
  std::ifstream log(dir_ + "/idle.log");
  std::stringstream text;
  text << log.rdbuf();
  EXPECT_NE(text.str().find("the guest powered off"), std::string::npos) << text.str();
  EXPECT_EQ(Command({"ls"}).out.find("idle"), std::string::npos);
}

TEST_F(ControlTest, CommandsOnAVmThatDoesNotRunSaySo) {
  for (auto args : std::vector<std::vector<std::string>>{
           {"status", "nosuch"}, {"stop", "nosuch"}, {"stop", "--force", "nosuch"},
           {"console", "nosuch"}}) {
    BrokerRun run = Command(args);
    EXPECT_EQ(run.exit_code, 1) << args[0];
    EXPECT_NE(run.err.find("no VM named 'nosuch' is running"), std::string::npos) << run.err;
  }
  BrokerRun usage = Command({"status"});
  EXPECT_EQ(usage.exit_code, 2);
}

}  // namespace
}  // namespace hv::test
