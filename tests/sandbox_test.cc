// The sandbox, end to end on this machine's /dev/kvm: what each process of a
// running VM looks like from outside, a forbidden system call (made on purpose
// by the test builds of the processes) and two VMs that must not reach each
// other. Needs KVM and root (the broker maps VM uids); skips loudly otherwise.
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/vm_harness.h"

namespace hv::test {
namespace {

class SandboxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access("/dev/kvm", R_OK | W_OK) != 0) {
      GTEST_SKIP() << "SKIPPED: this test needs /dev/kvm, which this host does not have";
    }
    if (getuid() != 0) {
      GTEST_SKIP() << "SKIPPED: per-VM uids need a root broker; this test runs as uid "
                   << getuid();
    }
    dir_ = TempDir();
  }
  void TearDown() override {
    unsetenv("HV_LIBEXEC_DIR");
    unsetenv("HV_TEST_FORBIDDEN_SYSCALL");
    if (!dir_.empty()) system(("rm -rf " + dir_).c_str());
  }

  // A VM with lpc, one virtio-blk disk ("vda"), an AHCI controller ("sata0")
  // and a user-mode NIC ("net0")
  // running `kernel`.
  std::string WriteVm(const std::string& name, const std::string& kernel,
                      const std::string& cmdline) {
    std::string disk = dir_ + "/" + name + ".img";
    std::ofstream(disk).close();
    truncate(disk.c_str(), 1 << 20);
    std::string path = dir_ + "/" + name + ".capnp";
    std::ofstream f(path);
    f << "using import \"/hv/vm.capnp\".Vm;\n"
      << "const vm :Vm = (\n"
      << "  name = \"" << name << "\",\n"
      << "  memory = \"64M\",\n"
      << "  boot = (kernel = \"" << kernel << "\", cmdline = \"" << cmdline << "\"),\n"
      << "  devices = [(slot = 0, emulation = \"hostbridge\"),\n"
      << "             (slot = 2, emulation = \"virtio-net\", name = \"net0\", path = \"user\"),\n"
      << "             (slot = 3, emulation = \"virtio-blk\", name = \"vda\", path = \"" << disk
      << "\"),\n"
      << "             (slot = 4, emulation = \"ahci-hd\", name = \"sata0\", path = \"" << disk
      << "\", options = [(key = \"ro\")]),\n"
      << "             (slot = 31, emulation = \"lpc\")],\n"
      << "  lpc = (com1 = (stdio = void)),\n"
      << ");\n";
    return path;
  }
  std::string BusyVm(const std::string& name) {
    return WriteVm(name, Runfile("guest/exitbench.elf"), "n=100000000");
  }

  // Waits until the broker has its three children and the guest prints.
  std::map<std::string, pid_t> WaitRunning(BrokerRun& run) {
    std::map<std::string, pid_t> by_name;
    for (int i = 0; i < 300; ++i) {
      PumpOutput(run, 50);
      by_name.clear();
      for (auto& c : Children(run.pid)) by_name[c.comm] = c.pid;
      if (by_name.size() >= 5 && run.out.find("mmio=none") != std::string::npos) break;
    }
    return by_name;
  }

  std::string dir_;
};

std::map<std::string, std::string> Status(pid_t pid, const std::string& task = "") {
  std::string path = "/proc/" + std::to_string(pid) +
                     (task.empty() ? "" : "/task/" + task) + "/status";
  std::ifstream in(path);
  std::map<std::string, std::string> fields;
  std::string line;
  while (std::getline(in, line)) {
    size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string value = line.substr(colon + 1);
    value.erase(0, value.find_first_not_of(" \t"));
    fields[line.substr(0, colon)] = value;
  }
  return fields;
}

std::string Namespace(pid_t pid, const char* kind) {
  char buf[128] = {};
  std::string path = "/proc/" + std::to_string(pid) + "/ns/" + kind;
  ssize_t n = readlink(path.c_str(), buf, sizeof(buf) - 1);
  return n > 0 ? std::string(buf, n) : "unreadable: " + path;
}

std::vector<std::string> ListDir(const std::string& path) {
  std::vector<std::string> names;
  DIR* d = opendir(path.c_str());
  if (d == nullptr) return {"<cannot open " + path + ": " + strerror(errno) + ">"};
  while (dirent* e = readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  closedir(d);
  return names;
}

std::string ReadFile(const std::string& path) {
  std::ifstream f(path);
  if (!f) return "<cannot read " + path + ">";
  std::stringstream contents;
  contents << f.rdbuf();
  return contents.str();
}

uid_t RealUid(pid_t pid) {
  std::istringstream uids(Status(pid)["Uid"]);
  uid_t uid = 0;
  uids >> uid;
  return uid;
}

TEST_F(SandboxTest, EveryThreadOfEveryProcessIsConfined) {
  BrokerRun run = StartBroker({"up", BusyVm("confined")}, dir_);
  auto procs = WaitRunning(run);
  ASSERT_EQ(procs.size(), 5u) << run.err;
  pid_t self = getpid();
  std::set<uid_t> uids;
  for (const char* comm : {"hv-lpc", "hv-virtio-blk", "hv-virtio-net", "hv-ahci", "hvcore"}) {
    SCOPED_TRACE(comm);
    ASSERT_EQ(procs.count(comm), 1u) << run.err;
    pid_t pid = procs[comm];
    // Every thread: capabilities and no_new_privs are per thread.
    auto tasks = ListDir("/proc/" + std::to_string(pid) + "/task");
    EXPECT_GE(tasks.size(), 2u) << "ZeroMQ's I/O thread at least";
    for (const auto& task : tasks) {
      auto st = Status(pid, task);
      SCOPED_TRACE("thread " + task + " (" + st["Name"] + ")");
      EXPECT_EQ(st["Seccomp"], "2");
      EXPECT_EQ(st["NoNewPrivs"], "1");
      EXPECT_EQ(st["CapEff"], "0000000000000000");
      EXPECT_EQ(st["CapPrm"], "0000000000000000");
      EXPECT_EQ(st["CapBnd"], "0000000000000000");
      EXPECT_EQ(st["CapAmb"], "0000000000000000");
    }
    for (const char* ns : {"user", "pid", "mnt", "ipc", "net"}) {
      // User-mode networking makes the guest's connections from the host's
      // network namespace (libslirp); every other kind gets an empty one.
      if (std::string(ns) == "net" && std::string(comm) == "hv-virtio-net") {
        EXPECT_EQ(Namespace(pid, ns), Namespace(self, ns)) << "user-mode NIC: the host's network";
        continue;
      }
      EXPECT_NE(Namespace(pid, ns), Namespace(self, ns)) << ns << " namespace";
    }
    // pid 1 of its own pid namespace.
    auto st = Status(pid);
    EXPECT_EQ(st["NSpid"], std::to_string(pid) + "\t1");
    uid_t uid = RealUid(pid);
    EXPECT_NE(uid, 0u);
    std::string u = std::to_string(uid);
    EXPECT_EQ(st["Uid"], u + "\t" + u + "\t" + u + "\t" + u) << "real, effective, saved, fs";
    EXPECT_EQ(st["Gid"], u + "\t" + u + "\t" + u + "\t" + u) << "the VM's gid is its uid";
    EXPECT_EQ(st["Groups"], "") << "no supplementary groups";
    uids.insert(uid);
    // Its root is an empty directory: no host file is visible at all, but for
    // a user-mode NIC's copy of /etc/resolv.conf (libslirp forwards DNS there).
    std::string root = "/proc/" + std::to_string(pid) + "/root";
    if (std::string(comm) == "hv-virtio-net" && access("/etc/resolv.conf", R_OK) == 0) {
      EXPECT_EQ(ListDir(root), std::vector<std::string>{"etc"});
      EXPECT_EQ(ListDir(root + "/etc"), std::vector<std::string>{"resolv.conf"});
      EXPECT_EQ(ReadFile(root + "/etc/resolv.conf"), ReadFile("/etc/resolv.conf"));
    } else {
      EXPECT_EQ(ListDir(root), std::vector<std::string>{});
    }
  }
  EXPECT_EQ(uids.size(), 1u) << "the processes of one VM share its uid";
  kill(run.pid, SIGTERM);
  WaitBroker(run, 30000);
  EXPECT_EQ(run.exit_code, 5) << run.err;
}

// A directory whose hv-lpc, hv-virtio-blk, hv-virtio-net, hv-ahci and hvcore are the test builds with
// the forbidden-call hook (common/sandbox_test_hook.cc).
std::string TestHookLibexec(const std::string& dir) {
  std::string libexec = dir + "/libexec";
  mkdir(libexec.c_str(), 0755);
  symlink(Runfile("devproc/lpc/hv-lpc-testhooks").c_str(), (libexec + "/hv-lpc").c_str());
  symlink(Runfile("devproc/virtio_blk/hv-virtio-blk-testhooks").c_str(),
          (libexec + "/hv-virtio-blk").c_str());
  symlink(Runfile("devproc/virtio_net/hv-virtio-net-testhooks").c_str(),
          (libexec + "/hv-virtio-net").c_str());
  symlink(Runfile("devproc/ahci/hv-ahci-testhooks").c_str(), (libexec + "/hv-ahci").c_str());
  symlink(Runfile("hvcore/hvcore-testhooks").c_str(), (libexec + "/hvcore").c_str());
  return libexec;
}

struct ForbiddenCall {
  const char* process;  // as the broker names it
  const char* call;
  const char* expect;   // the broker's words
};

class ForbiddenCallTest : public SandboxTest,
                          public ::testing::WithParamInterface<ForbiddenCall> {};

TEST_P(ForbiddenCallTest, KillsTheProcessBySigsysAndTheBrokerNamesTheCall) {
  const ForbiddenCall& c = GetParam();
  setenv("HV_LIBEXEC_DIR", TestHookLibexec(dir_).c_str(), 1);
  setenv("HV_TEST_FORBIDDEN_SYSCALL", (std::string(c.process) + ":" + c.call).c_str(), 1);
  BrokerRun run = StartBroker({"up", WriteVm("forbidden", Runfile("guest/hello.elf"), "")}, dir_);
  WaitBroker(run, 60000);
  EXPECT_EQ(run.exit_code, 4) << run.err;  // a process died
  EXPECT_NE(run.err.find("test hook: making the forbidden call " + std::string(c.call)),
            std::string::npos)
      << run.err;
  EXPECT_EQ(run.err.find("returned"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("was killed by signal 31 (Bad system call): its sandbox forbids the "
                         "system call " + std::string(c.expect)),
            std::string::npos)
      << run.err;
  EXPECT_NE(run.err.find(std::string(c.process == std::string("core")
                                         ? "hvcore (pid "
                                         : "device '" + std::string(c.process) + "' (pid ")),
            std::string::npos)
      << run.err;
}

INSTANTIATE_TEST_SUITE_P(
    EveryKind, ForbiddenCallTest,
    ::testing::Values(ForbiddenCall{"lpc", "openat", "openat (257)"},
                      ForbiddenCall{"lpc", "execve", "execve (59)"},
                      ForbiddenCall{"vda", "openat", "openat (257)"},
                      ForbiddenCall{"vda", "execve", "execve (59)"},
                      ForbiddenCall{"sata0", "openat", "openat (257)"},
                      ForbiddenCall{"sata0", "execve", "execve (59)"},
                      // virtio-net may open its copy of /etc/resolv.conf
                      // for reading (libslirp), never for writing.
                      ForbiddenCall{"net0", "openat-write", "openat (257)"},
                      ForbiddenCall{"net0", "execve", "execve (59)"},
                      ForbiddenCall{"core", "openat", "openat (257)"},
                      ForbiddenCall{"core", "execve", "execve (59)"}),
    [](const auto& info) {
      std::string name = std::string(info.param.process) + "_" + info.param.call;
      std::replace(name.begin(), name.end(), '-', '_');
      return name;
    });

TEST_F(SandboxTest, WithoutItsSandboxTheSameCallSucceedsAndTheBrokerSaysSoLoudly) {
  // The control for the test above: the hook's call is harmless by itself.
  setenv("HV_LIBEXEC_DIR", TestHookLibexec(dir_).c_str(), 1);
  setenv("HV_TEST_FORBIDDEN_SYSCALL", "lpc:openat", 1);
  BrokerRun run = StartBroker(
      {"up", "--no-sandbox=lpc", WriteVm("nosandbox", Runfile("guest/hello.elf"), "")}, dir_);
  WaitBroker(run, 60000);
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.out, "hello from the hv test guest\n") << run.err;
  EXPECT_NE(run.err.find("--no-sandbox=lpc: process 'lpc' of VM 'nosandbox' is NOT sandboxed"),
            std::string::npos)
      << run.err;
  EXPECT_NE(run.err.find("hv lpc: *** SANDBOX OFF"), std::string::npos) << run.err;
  // The hook ran only in the test build of lpc, which was not sandboxed; the
  // core and the disk, sandboxed, were not asked to.
  EXPECT_NE(run.err.find("test hook: the forbidden call openat returned"), std::string::npos)
      << run.err;
}

TEST_F(SandboxTest, NoSandboxForOneProcessLeavesTheOthersSandboxed) {
  BrokerRun run = StartBroker({"up", "--no-sandbox=lpc", BusyVm("partial")}, dir_);
  auto procs = WaitRunning(run);
  ASSERT_EQ(procs.size(), 5u) << run.err;
  EXPECT_EQ(Status(procs["hv-lpc"])["Seccomp"], "0");
  EXPECT_EQ(Namespace(procs["hv-lpc"], "mnt"), Namespace(getpid(), "mnt"));
  EXPECT_EQ(Status(procs["hvcore"])["Seccomp"], "2");
  EXPECT_EQ(Status(procs["hv-virtio-blk"])["Seccomp"], "2");
  kill(run.pid, SIGTERM);
  WaitBroker(run, 30000);
  EXPECT_EQ(run.exit_code, 5) << run.err;
}

// The fd number under which `pid` holds guest RAM (memfd "hv-ram:<vm>").
int RamFd(pid_t pid) {
  std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  for (const auto& name : ListDir(dir)) {
    char target[256] = {};
    if (readlink((dir + "/" + name).c_str(), target, sizeof(target) - 1) > 0 &&
        strstr(target, "memfd:hv-ram:") != nullptr) {
      return atoi(name.c_str());
    }
  }
  return -1;
}

// In a child running as `uid`/`gid` (no capabilities, as a process of that VM
// that escaped everything but its uid): 0 if `what` succeeds, else its errno.
int AsUid(uid_t uid, gid_t gid, const std::function<int()>& what) {
  int result[2];
  if (pipe(result) != 0) return -1;
  pid_t child = fork();
  if (child == 0) {
    int err = 0;
    if (setgroups(0, nullptr) != 0 || setresgid(gid, gid, gid) != 0 ||
        setresuid(uid, uid, uid) != 0) {
      err = 1000;
    } else {
      err = what();
    }
    ssize_t ignored = write(result[1], &err, sizeof(err));
    (void)ignored;
    _exit(0);
  }
  close(result[1]);
  int err = -1;
  if (read(result[0], &err, sizeof(err)) != sizeof(err)) err = -1;
  close(result[0]);
  waitpid(child, nullptr, 0);
  return err;
}

int ConnectTo(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  int rc = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  int err = rc == 0 ? 0 : errno;
  close(fd);
  return err;
}

int OpenToMap(const std::string& path) {
  int fd = open(path.c_str(), O_RDWR);
  if (fd < 0) return errno;
  void* p = mmap(nullptr, 4096, PROT_READ, MAP_SHARED, fd, 0);
  int err = p == MAP_FAILED ? errno : 0;
  close(fd);
  return err;
}

TEST_F(SandboxTest, TwoVmsRunUnderTheirOwnUidsAndCannotReachEachOther) {
  BrokerRun a = StartBroker({"up", BusyVm("vma")}, dir_);
  auto procs_a = WaitRunning(a);
  BrokerRun b = StartBroker({"up", BusyVm("vmb")}, dir_);
  auto procs_b = WaitRunning(b);
  ASSERT_EQ(procs_a.size(), 5u) << a.err;
  ASSERT_EQ(procs_b.size(), 5u) << b.err;
  uid_t uid_a = RealUid(procs_a["hvcore"]), uid_b = RealUid(procs_b["hvcore"]);
  EXPECT_NE(uid_a, 0u);
  EXPECT_NE(uid_b, 0u);
  EXPECT_NE(uid_a, uid_b) << "two running VMs share a uid";
  for (auto& [comm, pid] : procs_a) EXPECT_EQ(RealUid(pid), uid_a) << comm;
  for (auto& [comm, pid] : procs_b) EXPECT_EQ(RealUid(pid), uid_b) << comm;

  std::string ctl_a = dir_ + "/vma/broker.ctl", ctl_b = dir_ + "/vmb/broker.ctl";
  // VM a's uid reaches its own control socket (so the path is right)...
  EXPECT_EQ(AsUid(uid_a, uid_a, [&] { return ConnectTo(ctl_a); }), 0);
  // ...and not VM b's, nor can it list where the sockets are.
  EXPECT_EQ(AsUid(uid_a, uid_a, [&] { return ConnectTo(ctl_b); }), EACCES);
  EXPECT_EQ(AsUid(uid_b, uid_b, [&] { return ConnectTo(ctl_a); }), EACCES);
  EXPECT_EQ(AsUid(uid_a, uid_a, [&] { return opendir(dir_.c_str()) ? 0 : errno; }), EACCES);

  // VM b's guest RAM, through hvcore's fd: root can open and map it (so the
  // path is right); VM a's uid cannot.
  pid_t core_b = procs_b["hvcore"];
  int ram_fd = RamFd(core_b);
  ASSERT_GE(ram_fd, 0);
  std::string ram_b = "/proc/" + std::to_string(core_b) + "/fd/" + std::to_string(ram_fd);
  EXPECT_EQ(OpenToMap(ram_b), 0);
  int err = AsUid(uid_a, uid_a, [&] { return OpenToMap(ram_b); });
  EXPECT_TRUE(err == EACCES || err == EPERM) << strerror(err);
  // Nor through any of VM b's device processes.
  int dev_fd = RamFd(procs_b["hv-virtio-blk"]);
  ASSERT_GE(dev_fd, 0);
  std::string dev_ram_b = "/proc/" + std::to_string(procs_b["hv-virtio-blk"]) + "/fd/" +
                          std::to_string(dev_fd);
  err = AsUid(uid_a, uid_a, [&] { return OpenToMap(dev_ram_b); });
  EXPECT_TRUE(err == EACCES || err == EPERM) << strerror(err);

  kill(a.pid, SIGTERM);
  kill(b.pid, SIGTERM);
  WaitBroker(a, 30000);
  WaitBroker(b, 30000);
  EXPECT_EQ(a.exit_code, 5) << a.err;
  EXPECT_EQ(b.exit_code, 5) << b.err;
}

}  // namespace
}  // namespace hv::test
