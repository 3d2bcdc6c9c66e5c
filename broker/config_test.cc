#include "broker/config.h"

#include <stdlib.h>
#include <unistd.h>

#include <fstream>

#include "gtest/gtest.h"

namespace hv::broker {
namespace {

// Writes VM files into a fresh directory, beside a kernel file to point at.
class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/hvcfg.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    std::ofstream(dir_ + "/kernel.elf") << "not really a kernel";
  }
  void TearDown() override { system(("rm -rf " + dir_).c_str()); }

  std::string Write(const std::string& name, const std::string& text) {
    std::string path = dir_ + "/" + name;
    std::ofstream(path) << text;
    return path;
  }
  // Expects LoadVmConfig to fail with a message containing `file:line:` and `needle`.
  void ExpectError(const std::string& text, int line, const std::string& needle) {
    std::string path = Write("bad.capnp", text);
    auto config = LoadVmConfig(path);
    ASSERT_FALSE(config.ok()) << "accepted:\n" << text;
    std::string message(config.status().message());
    EXPECT_NE(message.find(path + ":" + std::to_string(line) + ":"), std::string::npos)
        << "wanted line " << line << " in: " << message;
    EXPECT_NE(message.find(needle), std::string::npos) << "wanted '" << needle << "' in: " << message;
  }

  std::string dir_;
};

constexpr char kHeader[] = "using import \"/hv/vm.capnp\".Vm;\n";  // line 1

TEST_F(ConfigTest, ValidFileLoadsWithEveryField) {
  auto path = Write("ok.capnp", std::string(kHeader) + R"(
const vm :Vm = (
  name = "demo",
  cpus = 2,
  memory = "1G",
  boot = (kernel = "kernel.elf", cmdline = "console=ttyS0"),
  devices = [
    (slot = 0, emulation = "hostbridge"),
    (slot = 31, emulation = "lpc"),
  ],
  lpc = (com1 = (stdio = void)),
);
)");
  auto config = LoadVmConfig(path);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(std::string(config->vm().getName()), "demo");
  EXPECT_EQ(config->vm().getCpus(), 2);
  EXPECT_EQ(config->memory_bytes, 1ull << 30);
  EXPECT_EQ(config->kernel_path, dir_ + "/kernel.elf");
  ASSERT_EQ(config->processes.size(), 1u);
  EXPECT_EQ(config->processes[0].name, "lpc");
  EXPECT_TRUE(config->vm().getLpc().getCom1().isStdio());
}

TEST_F(ConfigTest, DefaultsApplyAndAnyConstNameWorksWhenItIsTheOnlyOne) {
  auto path = Write("min.capnp", std::string(kHeader) +
                                     "const myvm :Vm = (name = \"m\", boot = (kernel = \"kernel.elf\"));\n");
  auto config = LoadVmConfig(path);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->vm().getCpus(), 1);
  EXPECT_EQ(config->memory_bytes, 256ull << 20);
}

TEST_F(ConfigTest, SyntaxErrorNamesFileAndLine) {
  ExpectError(std::string(kHeader) + "const vm :Vm = (\n  name = \"x\"\n  cpus = 2,\n);\n", 4, "");
}

TEST_F(ConfigTest, UnknownFieldNamesFileAndLine) {
  ExpectError(std::string(kHeader) + "const vm :Vm = (\n  name = \"x\",\n  cpuz = 2,\n);\n", 4,
              "cpuz");
}

TEST_F(ConfigTest, WrongValueTypeNamesFileAndLine) {
  ExpectError(std::string(kHeader) + "const vm :Vm = (\n  name = \"x\",\n  cpus = \"two\",\n);\n",
              4, "");
}

TEST_F(ConfigTest, DuplicateSlotNamesBothDevices) {
  ExpectError(std::string(kHeader) + R"(const vm :Vm = (
  name = "x", boot = (kernel = "kernel.elf"),
  devices = [
    (slot = 0, emulation = "hostbridge"),
    (slot = 0, emulation = "lpc"),
  ],
);
)",
              6, "devices[1].slot: slot 0 function 0 is already used by devices[0] (line 5)");
}

TEST_F(ConfigTest, MissingKernelFileIsNamed) {
  ExpectError(std::string(kHeader) + R"(const vm :Vm = (
  name = "x",
  boot = (
    kernel = "no-such-kernel"),
);
)",
              5, "boot.kernel: cannot read '");
}

TEST_F(ConfigTest, NoKernelAtAll) {
  ExpectError(std::string(kHeader) + "const vm :Vm = (\n  name = \"x\",\n);\n", 2,
              "boot.kernel: no kernel to boot");
}

TEST_F(ConfigTest, BadMemorySizes) {
  for (const char* bad : {"12X", "lots", "1", "2T", "4097K", ""}) {
    ExpectError(std::string(kHeader) + "const vm :Vm = (\n  name = \"x\", boot = (kernel = \"kernel.elf\"),\n  memory = \"" + bad + "\",\n);\n",
                4, "memory: '");
  }
}

TEST_F(ConfigTest, UnknownEmulationListsTheKnownOnes) {
  ExpectError(std::string(kHeader) + R"(const vm :Vm = (
  name = "x", boot = (kernel = "kernel.elf"),
  devices = [(slot = 3,
              emulation = "virtio-blork")],
);
)",
              5, "unknown device emulation 'virtio-blork'; bhyve's are: ");
}

TEST_F(ConfigTest, SlotAndFunctionOutOfRange) {
  ExpectError(std::string(kHeader) + R"(const vm :Vm = (
  name = "x", boot = (kernel = "kernel.elf"),
  devices = [(slot = 32, emulation = "lpc")],
);
)",
              4, "devices[0].slot: slot 32 is outside 0-31");
  ExpectError(std::string(kHeader) + R"(const vm :Vm = (
  name = "x", boot = (kernel = "kernel.elf"),
  devices = [(slot = 3, function = 9, emulation = "lpc")],
);
)",
              4, "devices[0].function: function 9 is outside 0-7");
}

TEST_F(ConfigTest, FunctionWithoutFunctionZero) {
  ExpectError(std::string(kHeader) + R"(const vm :Vm = (
  name = "x", boot = (kernel = "kernel.elf"),
  devices = [(slot = 0, emulation = "hostbridge"),
             (slot = 4, function = 1, emulation = "lpc")],
);
)",
              5, "slot 4 has function 1 but no function 0");
}

TEST_F(ConfigTest, ComPortWithoutLpcDevice) {
  ExpectError(std::string(kHeader) + R"(const vm :Vm = (
  name = "x", boot = (kernel = "kernel.elf"),
  lpc = (com1 = (stdio = void)),
);
)",
              4, "lpc.com1: a COM port needs an lpc device");
}

TEST_F(ConfigTest, BadNameAndCpus) {
  ExpectError(std::string(kHeader) + "const vm :Vm = (\n  name = \"../etc\", boot = (kernel = \"kernel.elf\"),\n);\n",
              3, "name: '../etc' is not a valid VM name");
  ExpectError(std::string(kHeader) + "const vm :Vm = (\n  name = \"x\", boot = (kernel = \"kernel.elf\"),\n  cpus = 0,\n);\n",
              4, "cpus: 0 vCPUs");
}

TEST_F(ConfigTest, NoVmConstant) {
  ExpectError(std::string(kHeader) + "const x :Text = \"hi\";\n", 1, "no constant of type Vm");
}

TEST_F(ConfigTest, SeveralErrorsAreAllReported) {
  std::string path = Write("multi.capnp", std::string(kHeader) + R"(const vm :Vm = (
  name = "x",
  cpus = 0,
  memory = "huge",
);
)");
  auto config = LoadVmConfig(path);
  ASSERT_FALSE(config.ok());
  std::string message(config.status().message());
  EXPECT_NE(message.find(":4:3: cpus:"), std::string::npos) << message;
  EXPECT_NE(message.find(":5:3: memory:"), std::string::npos) << message;
  EXPECT_NE(message.find("boot.kernel"), std::string::npos) << message;
}

TEST_F(ConfigTest, VirtioNetUserAndTapBackends) {
  auto path = Write("net.capnp", std::string(kHeader) + R"(
const vm :Vm = (
  name = "net", boot = (kernel = "kernel.elf"),
  devices = [
    (slot = 0, emulation = "hostbridge"),
    (slot = 2, emulation = "virtio-net", path = "user",
     options = [(key = "hostfwd", value = "tcp:127.0.0.1:2222-:22")]),
    (slot = 3, emulation = "virtio-net", path = "tap7",
     options = [(key = "queues", value = "2"), (key = "mac", value = "02:00:00:00:00:07")]),
  ],
);
)");
  auto config = LoadVmConfig(path);
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->processes.size(), 2u);
  EXPECT_EQ(config->processes[0].kind, DeviceProcessKind::kVirtioNet);
  EXPECT_EQ(config->processes[0].name, "virtio-net@2.0");
  EXPECT_EQ(config->processes[0].tap, "");
  EXPECT_EQ(config->processes[0].queues, 1);
  EXPECT_EQ(config->processes[1].tap, "tap7");
  EXPECT_EQ(config->processes[1].queues, 2);
}

TEST_F(ConfigTest, VirtioNetBadOptionNamesTheLine) {
  ExpectError(std::string(kHeader) + R"(const vm :Vm = (
  name = "x", boot = (kernel = "kernel.elf"),
  devices = [(slot = 0, emulation = "hostbridge"),
             (slot = 2, emulation = "virtio-net", path = "user",
              options = [(key = "hostfwd", value = "tcp:2222:22")])],
);
)",
              6, "hostfwd=tcp:2222:22");
}

TEST_F(ConfigTest, AhciPortsAndSinglePortEmulations) {
  std::ofstream(dir_ + "/a.img") << std::string(4096, '\0');
  std::ofstream(dir_ + "/b.iso") << std::string(4096, '\0');
  auto path = Write("ahci.capnp", std::string(kHeader) + R"(
const vm :Vm = (
  name = "sata", boot = (kernel = "kernel.elf"),
  devices = [
    (slot = 0, emulation = "hostbridge"),
    (slot = 4, emulation = "ahci", ports = [
      (type = hd, path = "a.img", options = [(key = "nocache"), (key = "ser", value = "S1")]),
      (type = cd, path = "b.iso")]),
    (slot = 5, emulation = "ahci-cd", path = "b.iso"),
    (slot = 6, emulation = "ahci-hd", path = "a.img", options = [(key = "ro")]),
  ],
);
)");
  auto config = LoadVmConfig(path);
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->processes.size(), 3u);
  const DeviceProcess& hba = config->processes[0];
  EXPECT_EQ(hba.kind, DeviceProcessKind::kAhci);
  EXPECT_EQ(hba.name, "ahci@4.0");
  ASSERT_EQ(hba.ports.size(), 2u);
  EXPECT_EQ(hba.ports[0].path, dir_ + "/a.img");
  EXPECT_TRUE(hba.ports[0].no_cache);
  EXPECT_FALSE(hba.ports[0].read_only);
  EXPECT_TRUE(hba.ports[1].read_only);  // a CD is read-only
  ASSERT_EQ(config->processes[1].ports.size(), 1u);
  EXPECT_TRUE(config->processes[1].ports[0].read_only);
  EXPECT_TRUE(config->processes[2].ports[0].read_only);
}

TEST_F(ConfigTest, AhciErrorsNameThePort) {
  std::ofstream(dir_ + "/a.img") << std::string(4096, '\0');
  ExpectError(std::string(kHeader) + R"(const vm :Vm = (
  name = "x", boot = (kernel = "kernel.elf"),
  devices = [(slot = 0, emulation = "hostbridge"),
             (slot = 4, emulation = "ahci", ports = [
               (type = hd, path = "a.img"),
               (type = hd, path = "a.img", options = [(key = "sectorsize", value = "1000")])])],
);
)",
              7, "devices[1].ports[1].options: sectorsize=1000");
  ExpectError(std::string(kHeader) + R"(const vm :Vm = (
  name = "x", boot = (kernel = "kernel.elf"),
  devices = [(slot = 0, emulation = "hostbridge"),
             (slot = 4, emulation = "ahci", ports = [
               (type = cd)])],
);
)",
              6, "devices[1].ports[0].path: an AHCI CD-ROM port needs an ISO image");
  ExpectError(std::string(kHeader) + R"(const vm :Vm = (
  name = "x", boot = (kernel = "kernel.elf"),
  devices = [(slot = 0, emulation = "hostbridge"),
             (slot = 4,
              emulation = "ahci")],
);
)",
              6, "ahci needs at least one entry in `ports`");
  ExpectError(std::string(kHeader) + R"(const vm :Vm = (
  name = "x", boot = (kernel = "kernel.elf"),
  devices = [(slot = 0, emulation = "hostbridge"),
             (slot = 4, emulation = "ahci-hd",
              path = "missing.img")],
);
)",
              6, "cannot open '");
  ExpectError(std::string(kHeader) + R"(const vm :Vm = (
  name = "x", boot = (kernel = "kernel.elf"),
  devices = [(slot = 0, emulation = "hostbridge"),
             (slot = 4, emulation = "virtio-blk", path = "a.img",
              ports = [(type = hd, path = "a.img")])],
);
)",
              6, "ports are for an AHCI controller");
}

TEST(MemorySizeTest, SuffixesAsBhyveReadsThem) {
  EXPECT_EQ(*ParseMemorySize("512"), 512ull << 20);
  EXPECT_EQ(*ParseMemorySize("512M"), 512ull << 20);
  EXPECT_EQ(*ParseMemorySize("2g"), 2ull << 30);
  EXPECT_EQ(*ParseMemorySize("65536k"), 64ull << 20);
  EXPECT_FALSE(ParseMemorySize("1.5G").ok());
  EXPECT_FALSE(ParseMemorySize("-1").ok());
  EXPECT_FALSE(ParseMemorySize("99999999999999999999").ok());
  EXPECT_FALSE(ParseMemorySize("16777216T").ok());
}

TEST_F(ConfigTest, RestartPolicyIsReadAndOnlyDevicesWithStateMayRestart) {
  std::ofstream(dir_ + "/disk.img") << std::string(4096, '\0');
  std::string good = Write("good.capnp", std::string(kHeader) + R"(const vm :Vm = (
  name = "x", boot = (kernel = "kernel.elf"),
  devices = [(slot = 31, emulation = "lpc",
              restart = (mode = onFailure, limit = 7, windowSeconds = 30, backoffMs = 50))],
);
)");
  auto config = LoadVmConfig(good);
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->processes.size(), 1u);
  EXPECT_EQ(config->processes[0].restart_mode, schema::RestartMode::ON_FAILURE);
  EXPECT_EQ(config->processes[0].restart_limit, 7u);
  EXPECT_EQ(config->processes[0].restart_window_s, 30u);
  EXPECT_EQ(config->processes[0].restart_backoff_ms, 50u);
  ExpectError(std::string(kHeader) + R"(const vm :Vm = (
  name = "x", boot = (kernel = "kernel.elf"),
  devices = [(slot = 31, emulation = "lpc"),
             (slot = 4, emulation = "virtio-net", path = "user",
              restart = (mode = always))],
);
)",
              6, "devices[1].restart.mode: 'virtio-net' cannot restart yet");
  ExpectError(std::string(kHeader) + R"(const vm :Vm = (
  name = "x", boot = (kernel = "kernel.elf"),
  devices = [(slot = 31, emulation = "lpc",
              restart = (mode = always, windowSeconds = 0))],
);
)",
              5, "devices[0].restart.windowSeconds: must be at least 1");
}

}  // namespace
}  // namespace hv::broker
