// End to end on this machine's /dev/kvm: hvbroker -> hvcore -> lpc with hv's own
// test guest programs (guest/). Needs KVM; skips loudly without it.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <set>
#include <string>
#include <thread>

#include "gtest/gtest.h"
#include "tests/vm_harness.h"

namespace hv::test {
namespace {

class BootTest : public ::testing::Test {
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
  std::string dir_;
};

TEST_F(BootTest, HelloTravelsGuestToCoreToLpcToBrokerStdoutAndPowersOff) {
  std::string vm = WriteVmFile(dir_, "hello", Runfile("guest/hello.elf"), "");
  BrokerRun run = StartBroker({"up", vm}, dir_);
  WaitBroker(run, 60000);
  EXPECT_EQ(run.exit_code, 0) << run.err;
  // The whole of stdout is the guest's line: nothing else writes there.
  EXPECT_EQ(run.out, "hello from the hv test guest\n") << run.err;
  EXPECT_NE(run.err.find("the guest powered off"), std::string::npos) << run.err;
}

TEST_F(BootTest, ExampleFileBootsTheSameWay) {
  // examples/hello.capnp names the guest where `bazel build` puts it in a checkout;
  // here that is the runfile. Everything else is the example as shipped.
  std::ifstream in(Runfile("examples/hello.capnp"));
  std::stringstream text;
  text << in.rdbuf();
  std::string vm = text.str();
  const std::string kBuilt = "../.bazel/bin/guest/hello.elf";
  size_t at = vm.find(kBuilt);
  ASSERT_NE(at, std::string::npos) << vm;
  vm.replace(at, kBuilt.size(), Runfile("guest/hello.elf"));
  std::ofstream(dir_ + "/example.capnp") << vm;
  BrokerRun check = StartBroker({"check", dir_ + "/example.capnp"}, dir_);
  WaitBroker(check, 30000);
  EXPECT_EQ(check.exit_code, 0) << check.err;
  EXPECT_NE(check.out.find("process hvcore"), std::string::npos) << check.out;
  EXPECT_NE(check.out.find("process lpc"), std::string::npos) << check.out;
  BrokerRun run = StartBroker({"up", dir_ + "/example.capnp"}, dir_);
  WaitBroker(run, 60000);
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.out, "hello from the hv test guest\n") << run.err;
}

// A guest that keeps the VM busy long enough to look at it and to kill a device.
std::string LongRunningVm(const std::string& dir) {
  return WriteVmFile(dir, "busy", Runfile("guest/exitbench.elf"), "n=100000000");
}

bool WaitForChildren(BrokerRun& run, size_t want, std::vector<ProcessInfo>* out) {
  for (int i = 0; i < 200; ++i) {
    PumpOutput(run, 50);
    *out = Children(run.pid);
    if (out->size() >= want) return true;
  }
  return false;
}

TEST_F(BootTest, ARunningVmIsThreeProcesses) {
  BrokerRun run = StartBroker({"up", LongRunningVm(dir_)}, dir_);
  std::vector<ProcessInfo> children;
  ASSERT_TRUE(WaitForChildren(run, 2, &children)) << run.err;
  // Let the guest start printing: it runs through the lpc process.
  for (int i = 0; i < 100 && run.out.find("mmio=none") == std::string::npos; ++i) {
    PumpOutput(run, 50);
  }
  EXPECT_NE(run.out.find("exitbench n=100000000 floor=0x5e0 mmio=none"), std::string::npos)
      << run.out << run.err;
  children = Children(run.pid);
  ASSERT_EQ(children.size(), 2u);
  std::multiset<std::string> names;
  for (auto& c : children) names.insert(c.comm);
  EXPECT_EQ(names, (std::multiset<std::string>{"hv-lpc", "hvcore"}));
  kill(run.pid, SIGTERM);
  WaitBroker(run, 30000);
  EXPECT_EQ(run.exit_code, 5) << run.err;  // stopped by a signal
  EXPECT_NE(run.err.find("stopped by signal 15"), std::string::npos) << run.err;
  // Nothing is left behind.
  for (auto& c : children) EXPECT_NE(kill(c.pid, 0), 0) << c.comm << " survived the broker";
}

TEST_F(BootTest, KillingTheLpcProcessEndsTheVmNamingTheDevice) {
  BrokerRun run = StartBroker({"up", LongRunningVm(dir_)}, dir_);
  std::vector<ProcessInfo> children;
  ASSERT_TRUE(WaitForChildren(run, 2, &children)) << run.err;
  for (int i = 0; i < 100 && run.out.find("mmio=none") == std::string::npos; ++i) {
    PumpOutput(run, 50);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // mid-run: vCPU hammering lpc
  // Listed again now that the guest runs: a child that has only just been
  // spawned may not carry its executable's name yet.
  children = Children(run.pid);
  pid_t lpc = -1, core = -1;
  for (auto& c : children) (c.comm == "hv-lpc" ? lpc : core) = c.pid;
  ASSERT_GT(lpc, 0);
  ASSERT_EQ(kill(lpc, SIGKILL), 0);
  WaitBroker(run, 30000);
  EXPECT_EQ(run.exit_code, 4) << run.err;
  EXPECT_NE(run.err.find("device 'lpc' (pid " + std::to_string(lpc) + ") was killed by signal 9"),
            std::string::npos)
      << run.err;
  EXPECT_NE(kill(core, 0), 0) << "hvcore survived";
}

TEST_F(BootTest, GuestFailureStatusBecomesExitSix) {
  // exitbench refuses an MMIO address above 4 GiB and exits with status 1.
  std::string vm = WriteVmFile(dir_, "fail", Runfile("guest/exitbench.elf"), "n=10 mmio=0x100000000");
  BrokerRun run = StartBroker({"up", vm}, dir_);
  WaitBroker(run, 60000);
  EXPECT_EQ(run.exit_code, 6) << run.err;
  EXPECT_NE(run.err.find("powered off with status 1"), std::string::npos) << run.err;
}

TEST_F(BootTest, NonPvhKernelIsRefusedWithAReason) {
  std::string fake = dir_ + "/fake.elf";
  system(("cp /bin/true " + fake).c_str());  // an ELF, but no PVH note
  std::string vm = WriteVmFile(dir_, "nopvh", fake, "");
  BrokerRun run = StartBroker({"up", vm}, dir_);
  WaitBroker(run, 60000);
  EXPECT_EQ(run.exit_code, 1) << run.err;
  EXPECT_NE(run.err.find("no PVH entry note"), std::string::npos) << run.err;
}

TEST_F(BootTest, SecondBrokerForTheSameVmIsRefused) {
  BrokerRun first = StartBroker({"up", LongRunningVm(dir_)}, dir_);
  std::vector<ProcessInfo> children;
  ASSERT_TRUE(WaitForChildren(first, 2, &children)) << first.err;
  BrokerRun second = StartBroker({"up", LongRunningVm(dir_)}, dir_);
  WaitBroker(second, 30000);
  EXPECT_EQ(second.exit_code, 1);
  EXPECT_NE(second.err.find("is already running"), std::string::npos) << second.err;
  kill(first.pid, SIGTERM);
  WaitBroker(first, 30000);
  EXPECT_EQ(first.exit_code, 5) << first.err;
}

}  // namespace
}  // namespace hv::test
