#include "broker/bhyve_cli.h"

#include <stdlib.h>
#include <unistd.h>

#include <fstream>

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"

namespace hv::broker {
namespace {

using Args = std::vector<std::string>;

std::vector<std::string> Lines(const absl::Status& status) {
  return absl::StrSplit(status.message(), '\n');
}

// Runs each seeds example with its paths replaced by files in a fresh directory
// (the "current directory" the command line is read in).
class BhyveCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/hvbhyve.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    for (const char* name : {"vmlinuz", "initrd.gz", "disc1.iso", "hdd.img", "hdd1.img",
                             "hdd2.img", "vm0.img", "vm1.img", "smartos.iso"}) {
      std::ofstream(dir_ + "/" + name) << std::string(4096, 'x');
    }
  }
  void TearDown() override { system(("rm -rf " + dir_).c_str()); }

  std::string At(const std::string& name) { return dir_ + "/" + name; }

  BhyveInvocation Parse(const Args& args) {
    auto parsed = ParseBhyveCommandLine(args, dir_);
    EXPECT_TRUE(parsed.ok()) << parsed.status();
    return parsed.ok() ? *parsed : BhyveInvocation{};
  }
  // The errors of a command line that does not parse.
  std::vector<std::string> ParseErrors(const Args& args) {
    auto parsed = ParseBhyveCommandLine(args, dir_);
    EXPECT_FALSE(parsed.ok()) << "accepted: " << absl::StrJoin(args, " ");
    return parsed.ok() ? std::vector<std::string>{} : Lines(parsed.status());
  }
  // The errors of a command line that parses but does not validate.
  std::vector<std::string> LoadErrors(const Args& args) {
    auto vm = Parse(args).vm;
    auto config = LoadBhyveVm(vm, dir_);
    EXPECT_FALSE(config.ok()) << "valid:\n" << BhyveVmCapnpText(vm);
    return config.ok() ? std::vector<std::string>{} : Lines(config.status());
  }

  // The errors the broker's validation must give for the devices hv does not run
  // yet (and only those): each names its -s option. Asks the broker which
  // emulations it runs, so the expectation follows devices as they land.
  static std::vector<std::string> NotLandedErrors(const BhyveVm& vm) {
    std::vector<std::string> want;
    for (const auto& d : vm.devices) {
      if (!IsSupportedEmulation(d.emulation)) {
        want.push_back(d.option + ": '" + d.emulation + "' is not supported by hv yet");
      }
    }
    return want;
  }

  std::string dir_;
};

void ExpectDevice(const BhyveDevice& d, int slot, int function, const std::string& emulation,
                  const std::string& path, const BhyveOptionList& options = {}) {
  EXPECT_EQ(d.slot, slot) << d.option;
  EXPECT_EQ(d.function, function) << d.option;
  EXPECT_EQ(d.emulation, emulation) << d.option;
  EXPECT_EQ(d.path, path) << d.option;
  EXPECT_EQ(d.options, options) << d.option;
}

// OmniOS's "Start the Virtual Machine" (seeds/000), paths replaced.
Args OmniOsStart(const std::string& dir, bool with_unsupported) {
  Args args = {"-H"};
  if (with_unsupported) args.insert(args.end(), {"-B", "1,product=OmniOS HVM"});
  args.insert(args.end(), {"-s", "0,amd_hostbridge", "-s", "1,lpc"});
  if (with_unsupported) args.insert(args.end(), {"-l", "bootrom,/usr/share/bhyve/firmware/BHYVE.fd"});
  args.insert(args.end(), {"-l", "com1,stdio", "-c", "4", "-m", "1G",
                           "-s", "2:0,ahci-cd," + dir + "/disc1.iso",
                           "-s", "3:0,virtio-blk," + dir + "/hdd.img",
                           "-s", "5:0,virtio-net-viona,bhyve0",
                           "-s", "30,fbuf,vga=off,tcp=0.0.0.0:5900,wait,w=1024,h=768",
                           "-s", "31,xhci,tablet",
                           "--kernel", "vmlinuz", "--initrd", "initrd.gz",
                           "--cmdline", "console=ttyS0", "testvm"});
  return args;
}

TEST_F(BhyveCliTest, OmniOsExampleNamesBootromAndSmbiosAsUnsupported) {
  auto errors = ParseErrors(OmniOsStart(dir_, true));
  ASSERT_EQ(errors.size(), 2u) << absl::StrJoin(errors, "\n");
  EXPECT_EQ(errors[0],
            "-B 1,product=OmniOS HVM: SMBIOS tables are not supported by hv: it gives the guest none");
  EXPECT_EQ(errors[1].rfind("-l bootrom,/usr/share/bhyve/firmware/BHYVE.fd: hv has no firmware "
                            "(UEFI/CSM bootrom) support; ", 0), 0u) << errors[1];
  EXPECT_NE(errors[1].find("--kernel FILE"), std::string::npos) << errors[1];
}

TEST_F(BhyveCliTest, OmniOsExampleTranslatesEveryDeviceToItsSlot) {
  auto invocation = Parse(OmniOsStart(dir_, false));
  const BhyveVm& vm = invocation.vm;
  EXPECT_EQ(vm.name, "testvm");
  EXPECT_EQ(vm.cpus, 4);
  EXPECT_EQ(vm.memory, "1G");
  EXPECT_TRUE(vm.yield_flag);
  EXPECT_FALSE(vm.rtc_utc);
  EXPECT_EQ(vm.kernel, At("vmlinuz"));
  EXPECT_EQ(vm.initrd, At("initrd.gz"));
  EXPECT_EQ(vm.cmdline, "console=ttyS0");
  EXPECT_EQ(vm.com[0].kind, BhyveSerial::Kind::kStdio);
  ASSERT_EQ(vm.devices.size(), 7u);
  ExpectDevice(vm.devices[0], 0, 0, "amd_hostbridge", "");
  ExpectDevice(vm.devices[1], 1, 0, "lpc", "");
  ExpectDevice(vm.devices[2], 2, 0, "ahci-cd", At("disc1.iso"));
  ExpectDevice(vm.devices[3], 3, 0, "virtio-blk", At("hdd.img"));
  ExpectDevice(vm.devices[4], 5, 0, "virtio-net", "bhyve0");
  EXPECT_NE(vm.devices[4].note.find("viona"), std::string::npos);
  ExpectDevice(vm.devices[5], 30, 0, "fbuf", "",
               {{"vga", "off"}, {"tcp", "0.0.0.0:5900"}, {"wait", ""}, {"w", "1024"}, {"h", "768"}});
  ExpectDevice(vm.devices[6], 31, 0, "xhci", "", {{"tablet", ""}});

  // The broker's own parser reads the file back; its validation refuses exactly
  // the devices hv has not landed, each by its -s option.
  auto want = NotLandedErrors(vm);
  EXPECT_FALSE(want.empty());  // ahci-cd, fbuf and xhci at the time of writing
  auto config = LoadBhyveVm(vm, dir_);
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(Lines(config.status()), want) << BhyveVmCapnpText(vm);
}

TEST_F(BhyveCliTest, OmniOsSupportedSubsetParsesBackAndMatches) {
  Args args = {"-H", "-s", "0,amd_hostbridge", "-s", "1,lpc", "-l", "com1,stdio", "-c", "4",
               "-m", "1G", "-s", "3:0,virtio-blk,hdd.img", "-s", "5:0,virtio-net-viona,bhyve0",
               "--kernel", "vmlinuz", "--initrd", "initrd.gz", "--cmdline", "console=ttyS0",
               "testvm"};
  auto vm = Parse(args).vm;
  auto config = LoadBhyveVm(vm, "/nonexistent");  // every path in the file is absolute
  ASSERT_TRUE(config.ok()) << config.status() << "\n" << BhyveVmCapnpText(vm);
  auto read = config->vm();
  EXPECT_EQ(std::string(read.getName()), "testvm");
  EXPECT_EQ(read.getCpus(), 4);
  EXPECT_EQ(config->memory_bytes, 1ull << 30);
  EXPECT_FALSE(read.getRtcUtc());
  EXPECT_TRUE(read.getYieldOnHlt());
  EXPECT_EQ(config->kernel_path, At("vmlinuz"));
  EXPECT_EQ(config->initrd_path, At("initrd.gz"));
  EXPECT_EQ(std::string(read.getBoot().getCmdline()), "console=ttyS0");
  EXPECT_TRUE(read.getLpc().getCom1().isStdio());
  auto devices = read.getDevices();
  ASSERT_EQ(devices.size(), 4u);
  EXPECT_EQ(std::string(devices[0].getEmulation()), "amd_hostbridge");
  EXPECT_EQ(devices[1].getSlot(), 1);
  EXPECT_EQ(std::string(devices[1].getEmulation()), "lpc");
  EXPECT_EQ(devices[2].getSlot(), 3);
  EXPECT_EQ(std::string(devices[2].getPath()), At("hdd.img"));
  EXPECT_EQ(devices[3].getSlot(), 5);
  EXPECT_EQ(std::string(devices[3].getEmulation()), "virtio-net");
  EXPECT_EQ(std::string(devices[3].getPath()), "bhyve0");
  ASSERT_EQ(config->processes.size(), 3u);
  EXPECT_EQ(config->processes[0].name, "lpc");
  EXPECT_EQ(config->processes[1].path, At("hdd.img"));
  EXPECT_EQ(config->processes[2].tap, "bhyve0");
}

TEST_F(BhyveCliTest, OmniOsMoreOptionsExample) {
  // seeds/000 "More Options", comments dropped.
  Args full = {"-H", "-B", "1,product=OmniOS HVM", "-s", "0,amd_hostbridge", "-s", "1,lpc",
               "-l", "bootrom,/usr/share/bhyve/firmware/BHYVE_CSM.fd",
               "-l", "com1,socket,/tmp/test.cons,wait", "-c", "4", "-m", "1G",
               "-s", "2:0,ahci-cd,smartos.iso", "-s", "3:0,virtio-blk,hdd.img",
               "-s", "4:0,virtio-blk,hdd1.img", "-s", "4:1,virtio-blk,hdd2.img",
               "-s", "5:0,virtio-net-viona,bhyve0", "-s", "5:1,virtio-net-viona,bhyve1",
               "--kernel", "vmlinuz", "test"};
  auto errors = ParseErrors(full);
  ASSERT_EQ(errors.size(), 3u) << absl::StrJoin(errors, "\n");
  EXPECT_EQ(errors[0].rfind("-B 1,product=OmniOS HVM: ", 0), 0u);
  EXPECT_EQ(errors[1].rfind("-l bootrom,/usr/share/bhyve/firmware/BHYVE_CSM.fd: ", 0), 0u);
  EXPECT_EQ(errors[2].rfind("-l com1,socket,/tmp/test.cons,wait: 'wait' (start the guest only "
                            "once a client connects) is not supported by hv yet", 0), 0u)
      << errors[2];

  Args subset = {"-H", "-s", "0,amd_hostbridge", "-s", "1,lpc",
                 "-l", "com1,socket,/tmp/test.cons", "-c", "4", "-m", "1G",
                 "-s", "3:0,virtio-blk,hdd.img", "-s", "4:0,virtio-blk,hdd1.img",
                 "-s", "4:1,virtio-blk,hdd2.img", "-s", "5:0,virtio-net-viona,bhyve0",
                 "-s", "5:1,virtio-net-viona,bhyve1", "--kernel", "vmlinuz", "test"};
  auto vm = Parse(subset).vm;
  auto config = LoadBhyveVm(vm, dir_);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(std::string(config->vm().getLpc().getCom1().getSocket()), "/tmp/test.cons");
  auto devices = config->vm().getDevices();
  ASSERT_EQ(devices.size(), 7u);
  EXPECT_EQ(devices[3].getSlot(), 4);
  EXPECT_EQ(devices[3].getFunction(), 0);
  EXPECT_EQ(devices[4].getSlot(), 4);
  EXPECT_EQ(devices[4].getFunction(), 1);
  EXPECT_EQ(std::string(devices[4].getPath()), At("hdd2.img"));
  EXPECT_EQ(devices[6].getFunction(), 1);
  EXPECT_EQ(std::string(devices[6].getPath()), "bhyve1");

  // The commented-out alternative: two disks on one AHCI controller.
  Args ahci = {"-s", "0,amd_hostbridge", "-s", "4:0,ahci,hd:hdd1.img,hd:hdd2.img,ro",
               "--kernel", "vmlinuz", "test"};
  vm = Parse(ahci).vm;
  ASSERT_EQ(vm.devices.size(), 2u);
  const auto& controller = vm.devices[1];
  EXPECT_EQ(controller.emulation, "ahci");
  ASSERT_EQ(controller.ports.size(), 2u);
  EXPECT_EQ(controller.ports[0].type, "hd");
  EXPECT_EQ(controller.ports[0].path, At("hdd1.img"));
  EXPECT_TRUE(controller.ports[0].options.empty());
  EXPECT_EQ(controller.ports[1].path, At("hdd2.img"));
  EXPECT_EQ(controller.ports[1].options, (BhyveOptionList{{"ro", ""}}));
  auto want = NotLandedErrors(vm);
  config = LoadBhyveVm(vm, dir_);
  if (want.empty()) {
    EXPECT_TRUE(config.ok()) << config.status();
  } else {
    ASSERT_FALSE(config.ok());
    EXPECT_EQ(Lines(config.status()), want);
  }
}

TEST_F(BhyveCliTest, FreeBsdFaqExamples) {
  // seeds/001 "What does bhyve look like?"
  Args args = {"-c", "2", "-m", "256", "-A", "-H", "-P", "-s", "0:0,hostbridge",
               "-s", "1:0,virtio-net,tap0", "-s", "2:0,ahci-hd,./vm0.img", "-s", "31,lpc",
               "-l", "com1,stdio", "--kernel", "vmlinuz", "vm0"};
  auto invocation = Parse(args);
  BhyveVm vm = invocation.vm;
  EXPECT_FALSE(invocation.print_config);
  EXPECT_EQ(vm.cpus, 2);
  EXPECT_EQ(vm.memory, "256");
  EXPECT_TRUE(vm.acpi_flag && vm.yield_flag && vm.pause_flag);
  ASSERT_EQ(vm.devices.size(), 4u);
  ExpectDevice(vm.devices[0], 0, 0, "hostbridge", "");
  ExpectDevice(vm.devices[1], 1, 0, "virtio-net", "tap0");
  ExpectDevice(vm.devices[2], 2, 0, "ahci-hd", At("vm0.img"));
  ExpectDevice(vm.devices[3], 31, 0, "lpc", "");
  auto want = NotLandedErrors(vm);
  auto config = LoadBhyveVm(vm, dir_);
  if (want.empty()) {
    ASSERT_TRUE(config.ok()) << config.status();
  } else {
    ASSERT_FALSE(config.ok());
    EXPECT_EQ(Lines(config.status()), want);
  }
  // The same with -o config.dump=1 is --print-config.
  args.insert(args.end() - 1, {"-o", "config.dump=1"});
  EXPECT_TRUE(Parse(args).print_config);

  // 9pfs share.
  auto errors = LoadErrors({"-m", "1024", "-A", "-l", "com1,stdio", "-s", "0,hostbridge",
                            "-s", "3,virtio-9p,sharename=/root/9p/", "-s", "31,lpc",
                            "--kernel", "vmlinuz", "vm0"});
  EXPECT_EQ(errors, (std::vector<std::string>{
                        "-s 3,virtio-9p,sharename=/root/9p/: 'virtio-9p' is not supported by hv yet"}));

  // The nmdm console.
  errors = ParseErrors({"-s", "31,lpc", "-l", "com1,nmdm0A", "--kernel", "vmlinuz", "vm0"});
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].rfind("-l com1,nmdm0A: 'nmdm0A': hv's COM ports use stdio or a Unix "
                            "socket (socket,PATH); nmdm and tty devices are not supported", 0),
            0u) << errors[0];

  // "Does bhyve support AHCI devices?"
  vm = Parse({"-s", "4,ahci-cd,/path/to/image.iso", "--kernel", "vmlinuz", "vm0"}).vm;
  ExpectDevice(vm.devices[0], 4, 0, "ahci-cd", "/path/to/image.iso");
  vm = Parse({"-s", "4,ahci-hd,/path/to/disk.img", "--kernel", "vmlinuz", "vm0"}).vm;
  ExpectDevice(vm.devices[0], 4, 0, "ahci-hd", "/path/to/disk.img");

  // The arm64 example: bootrom by -o, and "-c console=stdio".
  errors = ParseErrors({"-o", "bootrom=/usr/local/share/u-boot/u-boot-bhyve-arm64/u-boot.bin",
                        "-s", "1,virtio-blk,./FreeBSD-15.0-CURRENT-arm64-aarch64-ufs.raw",
                        "-c", "console=stdio", "vm0"});
  ASSERT_EQ(errors.size(), 2u) << absl::StrJoin(errors, "\n");
  EXPECT_EQ(errors[0].rfind("-o bootrom=/usr/local/share/u-boot/u-boot-bhyve-arm64/u-boot.bin: ", 0), 0u);
  EXPECT_EQ(errors[1], "-c console=stdio: unknown key 'console' (want -c [cpus=]N[,sockets=S]"
                       "[,cores=C][,threads=T])");
}

TEST_F(BhyveCliTest, LibvirtDomxmlToNativeExample) {
  // seeds/002: what `virsh domxml-to-native` prints, with -l com1,/dev/nmdm0A.
  auto errors = ParseErrors({"-c", "2", "-m", "214", "-A", "-I", "-H", "-P", "-s", "0:0,hostbridge",
                             "-s", "3:0,virtio-net,tap0,mac=52:54:00:5d:74:e3",
                             "-s", "2:0,virtio-blk,vm1.img", "-s", "1,lpc", "-l",
                             "com1,/dev/nmdm0A", "vm1"});
  ASSERT_EQ(errors.size(), 1u) << absl::StrJoin(errors, "\n");
  EXPECT_EQ(errors[0].rfind("-l com1,/dev/nmdm0A: ", 0), 0u);

  // With the console on stdio and a kernel, hv runs all of it.
  auto vm = Parse({"-c", "2", "-m", "214", "-A", "-I", "-H", "-P", "-s", "0:0,hostbridge",
                   "-s", "3:0,virtio-net,tap0,mac=52:54:00:5d:74:e3", "-s", "2:0,virtio-blk,vm1.img",
                   "-s", "1,lpc", "-l", "com1,stdio", "--kernel", "vmlinuz", "vm1"})
                .vm;
  EXPECT_TRUE(vm.ioapic_flag);
  auto config = LoadBhyveVm(vm, dir_);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->memory_bytes, 214ull << 20);
  auto devices = config->vm().getDevices();
  ASSERT_EQ(devices.size(), 4u);
  EXPECT_EQ(devices[1].getSlot(), 3);
  ASSERT_EQ(devices[1].getOptions().size(), 1u);
  EXPECT_EQ(std::string(devices[1].getOptions()[0].getKey()), "mac");
  EXPECT_EQ(std::string(devices[1].getOptions()[0].getValue()), "52:54:00:5d:74:e3");
  EXPECT_EQ(std::string(devices[2].getPath()), At("vm1.img"));
}

TEST_F(BhyveCliTest, MalformedSlotsArePreciseErrors) {
  EXPECT_EQ(ParseErrors({"-s", "3", "vm"}),
            (std::vector<std::string>{
                "-s 3: no emulation after the slot (want -s SLOT[:FUNC],EMULATION[,CONF])"}));
  auto errors = ParseErrors({"-s", "40,foo", "vm"});
  ASSERT_EQ(errors.size(), 2u) << absl::StrJoin(errors, "\n");
  EXPECT_EQ(errors[0], "-s 40,foo: slot 40 is outside 0-31");
  EXPECT_EQ(errors[1].rfind("-s 40,foo: unknown emulation 'foo' (bhyve's: ahci, ", 0), 0u)
      << errors[1];
  EXPECT_EQ(ParseErrors({"-s", "3:9,virtio-blk", "vm"}),
            (std::vector<std::string>{"-s 3:9,virtio-blk: function 9 is outside 0-7"}));
  EXPECT_EQ(ParseErrors({"-s", "3,virtio-blk", "vm"}),
            (std::vector<std::string>{
                "-s 3,virtio-blk: no disk image (want -s 3,virtio-blk,PATH[,options])"}));
  EXPECT_EQ(ParseErrors({"-s", "1:3:0,lpc", "vm"}),
            (std::vector<std::string>{"-s 1:3:0,lpc: bus 1: hv has one PCI bus, bus 0"}));
  EXPECT_EQ(ParseErrors({"-s", "x,lpc", "vm"}),
            (std::vector<std::string>{"-s x,lpc: the slot 'x' is not a number"}));
  EXPECT_EQ(ParseErrors({"-s", "0:1:2:3,lpc", "vm"}),
            (std::vector<std::string>{"-s 0:1:2:3,lpc: '0:1:2:3' is not SLOT, SLOT:FUNC or BUS:SLOT:FUNC"}));
  EXPECT_EQ(ParseErrors({"-s", "3,", "vm"}),
            (std::vector<std::string>{
                "-s 3,: no emulation after the slot (want -s SLOT[:FUNC],EMULATION[,CONF])"}));
  EXPECT_EQ(ParseErrors({"-s", "31,lpc,foo", "vm"}),
            (std::vector<std::string>{"-s 31,lpc,foo: hv's lpc takes no configuration ('foo')"}));
  EXPECT_EQ(ParseErrors({"-s", "3,lpc", "-s", "3:0,hostbridge", "vm"}),
            (std::vector<std::string>{
                "-s 3:0,hostbridge: slot 3 function 0 is already used by -s 3,lpc"}));
  EXPECT_EQ(ParseErrors({"-s", "4,ahci", "vm"}),
            (std::vector<std::string>{
                "-s 4,ahci: no ports (want -s 4,ahci,hd:PATH[,options][,cd:PATH[,options]]...)"}));
  EXPECT_EQ(ParseErrors({"-s", "4,ahci,ro,hd:a.img", "vm"}),
            (std::vector<std::string>{"-s 4,ahci,ro,hd:a.img: 'ro' comes before the first hd:PATH or cd:PATH"}));
  errors = ParseErrors({"-s", "30,fbuf,tcp=0.0.0.0:5900,depth=32", "vm"});
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].rfind("-s 30,fbuf,tcp=0.0.0.0:5900,depth=32: unknown fbuf option 'depth'", 0), 0u);
  // Every error at once.
  errors = ParseErrors({"-s", "3", "-s", "40,foo", "-s", "3:9,virtio-blk", "-w", "vm"});
  EXPECT_EQ(errors.size(), 5u) << absl::StrJoin(errors, "\n");
}

TEST_F(BhyveCliTest, UnsupportedOptionsAreNamed) {
  struct Case {
    Args args;
    std::string starts;
  };
  std::vector<Case> cases = {
      {{"-w"}, "-w: ignoring unknown MSRs is not supported by hv yet"},
      {{"-S"}, "-S: wiring guest memory is not supported by hv yet"},
      {{"-W"}, "-W: forcing MSI instead of MSI-X is not supported by hv"},
      {{"-x"}, "-x: choosing the guest's APIC mode is not supported by hv"},
      {{"-a"}, "-a: choosing the guest's APIC mode is not supported by hv"},
      {{"-C"}, "-C: hv does not put guest memory in its core dumps"},
      {{"-e"}, "-e: not supported by hv"},
      {{"-p", "0:1"}, "-p 0:1: pinning vCPUs to host CPUs is not supported by hv yet"},
      {{"-U", "44454c4c-5300-1031-8053-b3c04f4e4e31"}, "-U 44454c4c-5300-1031-8053-b3c04f4e4e31: the UUID goes into SMBIOS"},
      {{"-k", "vm.conf"}, "-k vm.conf: bhyve's configuration files are not read by hv"},
      {{"-G", "1234"}, "-G 1234: the gdb stub is not supported by hv yet"},
      {{"-r", "vm.ckp"}, "-r vm.ckp: restoring a saved VM is not supported by hv yet"},
      {{"-f", "name=opt/x,string=y"}, "-f name=opt/x,string=y: fw_cfg items are not supported"},
      {{"-K", "US"}, "-K US: keyboard layouts are not supported by hv"},
      {{"-o", "memory.size=1G"}, "-o memory.size=1G: bhyve's configuration variables are not supported"},
      {{"-q"}, "-q: not a bhyve option"},
      {{"--foo"}, "--foo: not an option of hvbroker bhyve"},
      {{"-l", "com1,socket"}, "-l com1,socket: no socket path"},
      {{"-l", "com5,stdio"}, "-l com5,stdio: unknown lpc device 'com5'"},
      {{"-l", "tpm,swtpm,/tmp/x"}, "-l tpm,swtpm,/tmp/x: the lpc device 'tpm' is not supported by hv"},
      {{"-c", "sockets=2,cores=2"}, "-c sockets=2,cores=2: hv presents one socket of 4 single-thread cores; sockets=2, threads=1 are not supported yet"},
      {{"-c", "4,cores=2"}, "-c 4,cores=2: sockets*cores*threads = 2 does not match cpus = 4"},
      {{"-c", "0"}, "-c 0: '0': cpus must be a number from 1"},
      {{"-m", "1Q"}, "-m 1Q: unknown size suffix 'Q'"},
      {{"-m"}, "-m: needs an argument"},
  };
  for (const auto& c : cases) {
    Args args = c.args;
    if (c.args != Args{"-m"}) args.push_back("vm");
    auto errors = ParseErrors(args);
    ASSERT_EQ(errors.size(), c.args == Args{"-m"} ? 2u : 1u) << absl::StrJoin(errors, "\n");
    EXPECT_EQ(errors[0].rfind(c.starts, 0), 0u) << errors[0];
  }
  EXPECT_EQ(ParseErrors({"-H"}), (std::vector<std::string>{
                                    "VMNAME: no VM name (the last argument, as for bhyve)"}));
  EXPECT_EQ(ParseErrors({"vm1", "vm2"}),
            (std::vector<std::string>{
                "vm2: a second VM name (the first is 'vm1'); bhyve takes one VMNAME, after the options"}));
}

TEST_F(BhyveCliTest, GetoptClustersAndAttachedArguments) {
  auto invocation = Parse({"-AHPuY", "-c4", "-m1G", "-s0,hostbridge", "vm"});
  const BhyveVm& vm = invocation.vm;
  EXPECT_TRUE(vm.acpi_flag && vm.yield_flag && vm.pause_flag && vm.rtc_utc && vm.no_mptable);
  EXPECT_EQ(vm.cpus, 4);
  EXPECT_EQ(vm.memory, "1G");
  ASSERT_EQ(vm.devices.size(), 1u);
  EXPECT_EQ(vm.devices[0].emulation, "hostbridge");
  auto topology = Parse({"-c", "cpus=4,sockets=1,cores=4,threads=1", "vm"});
  EXPECT_EQ(topology.vm.cpus, 4);
  EXPECT_EQ(Parse({"-c", "cores=3", "vm"}).vm.cpus, 3);
  // hv's options anywhere, and `--`.
  auto late = Parse({"vm", "--print-config", "--kernel=k"});
  EXPECT_EQ(late.vm.name, "vm");
  EXPECT_TRUE(late.print_config);
  EXPECT_EQ(late.vm.kernel, At("k"));
  EXPECT_EQ(Parse({"--kernel", "k", "--", "-vm"}).vm.name, "-vm");
  EXPECT_TRUE(Parse({"-h"}).help);
  EXPECT_TRUE(Parse({"--help"}).help);
  EXPECT_NE(Parse({"-s", "help"}).list.find("ahci-cd"), std::string::npos);
  EXPECT_NE(Parse({"-l", "help"}).list.find("bootrom"), std::string::npos);
  auto run = Parse({"--no-sandbox=lpc,core", "--seccomp-log", "--uid-range=3000000:10", "vm"});
  EXPECT_EQ(run.run_options.no_sandbox, (std::set<std::string>{"lpc", "core"}));
  EXPECT_TRUE(run.run_options.seccomp_log);
  EXPECT_EQ(run.run_options.uid_range.first, 3000000u);
}

TEST_F(BhyveCliTest, ValidationErrorsNameTheOption) {
  EXPECT_EQ(LoadErrors({"-m", "1K", "--kernel", "vmlinuz", "vm"}),
            (std::vector<std::string>{"-m 1K: '1K' is outside 2M to 1T"}));
  EXPECT_EQ(LoadErrors({"-c", "100", "--kernel", "vmlinuz", "vm"}),
            (std::vector<std::string>{"-c 100: 100 vCPUs: must be 1 to 64"}));
  EXPECT_EQ(LoadErrors({"-l", "com1,stdio", "--kernel", "vmlinuz", "vm"}),
            (std::vector<std::string>{
                "-l com1,stdio: a COM port needs an lpc device (bhyve: -s 31,lpc)"}));
  auto errors = LoadErrors({"-s", "3,virtio-blk,missing.img", "--kernel", "vmlinuz", "vm"});
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0], "-s 3,virtio-blk,missing.img: cannot open '" + At("missing.img") +
                           "' for reading and writing: No such file or directory");
  errors = LoadErrors({"-s", "3,virtio-blk,hdd.img,sectorsize=1000", "-s", "4:1,virtio-blk,vm0.img",
                       "--kernel", "vmlinuz", "vm"});
  ASSERT_EQ(errors.size(), 2u) << absl::StrJoin(errors, "\n");
  EXPECT_EQ(errors[0].rfind("-s 3,virtio-blk,hdd.img,sectorsize=1000: ", 0), 0u) << errors[0];
  EXPECT_EQ(errors[1], "-s 4:1,virtio-blk,vm0.img: slot 4 has function 1 but no function 0");
  EXPECT_EQ(LoadErrors({"-s", "0,hostbridge", "--kernel", "missing", "bad/name"}),
            (std::vector<std::string>{
                "VMNAME 'bad/name': 'bad/name' is not a valid VM name (1-64 of A-Z a-z 0-9 . _ -)",
                "--kernel " + At("missing") + ": cannot read '" + At("missing") +
                    "': No such file or directory"}));
  EXPECT_EQ(LoadErrors({"-s", "0,hostbridge", "vm"}),
            (std::vector<std::string>{
                "--kernel: no kernel to boot: hv loads a Linux bzImage or a PVH ELF kernel itself "
                "(it has no firmware for bhyve's -l bootrom); give --kernel FILE"}));
  // After a refused -l bootrom (which says to give --kernel), the missing kernel is not said twice.
  BhyveInvocation partial;
  EXPECT_FALSE(ParseBhyveCommandLine({"-l", "bootrom,/x.fd", "-s", "0,hostbridge", "vm"}, dir_, &partial).ok());
  auto rest = LoadBhyveVm(partial.vm, dir_);
  ASSERT_FALSE(rest.ok());
  EXPECT_EQ(Lines(rest.status()), (std::vector<std::string>{"--kernel: no kernel to boot"}));
  EXPECT_EQ(LoadErrors({"-s", "5,virtio-net,tap0,queues=99", "--kernel", "vmlinuz", "vm"}),
            (std::vector<std::string>{"-s 5,virtio-net,tap0,queues=99: queues=99: want 1 to 8 queue pairs"}));
}

TEST_F(BhyveCliTest, PrintedConfigRoundTripsAwkwardText) {
  // Quotes, backslashes and a newline in the command line; a socket console; -u.
  auto vm = Parse({"-u", "-s", "0,hostbridge", "-s", "31,lpc", "-l", "com2,socket,cons.sock",
                   "--kernel", "vmlinuz", "--cmdline", "a=\"b c\" d\\e\nf", "vm"})
                .vm;
  std::string text = BhyveVmCapnpText(vm);
  auto config = LoadVmConfigText("printed.capnp", text, "/");
  ASSERT_TRUE(config.ok()) << config.status() << "\n" << text;
  EXPECT_EQ(std::string(config->vm().getBoot().getCmdline()), "a=\"b c\" d\\e\nf");
  EXPECT_TRUE(config->vm().getRtcUtc());
  EXPECT_TRUE(config->vm().getLpc().getCom1().isNone());
  EXPECT_EQ(std::string(config->vm().getLpc().getCom2().getSocket()), At("cons.sock"));
  // The header names the command line it came from.
  EXPECT_NE(text.find("#   hvbroker bhyve -u -s 0,hostbridge"), std::string::npos) << text;
}

}  // namespace
}  // namespace hv::broker
