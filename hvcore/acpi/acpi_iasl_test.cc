// Checks the tables with ACPICA's own tools (Debian's acpica-tools, installed by
// tools/setup): `iasl -d` disassembles each table, `iasl` recompiles the DSDT's
// disassembly, and the results must be free of errors and warnings. Skipped, with
// a loud message, when iasl is not installed.
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "hvcore/acpi/acpi.h"

namespace hv::acpi {
namespace {

constexpr uint64_t kBase = 0xe0000;

// The path of an ACPICA tool (iasl, acpiexec), or "" if it is not installed.
std::string FindTool(const std::string& name) {
  std::string path = getenv("PATH") ? getenv("PATH") : "";
  path += ":/usr/bin:/usr/local/bin:/bin";
  std::stringstream dirs(path);
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    if (dir.empty()) continue;
    std::string candidate = dir + "/" + name;
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

void SayMissing(const std::string& tool) {
  fprintf(stderr,
          "\n*****************************************************************\n"
          "*** %-8s NOT FOUND: ACPICA checks of the tables are SKIPPED. ***\n"
          "*** Install Debian's acpica-tools (tools/setup does it).       ***\n"
          "*****************************************************************\n\n",
          tool.c_str());
}

struct RunResult {
  int status = -1;
  std::string output;  // stdout and stderr
};

RunResult RunIn(const std::string& dir, const std::string& command) {
  RunResult r;
  std::string full = absl::StrCat("cd '", dir, "' && ", command, " 2>&1");
  FILE* f = popen(full.c_str(), "r");
  if (f == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), f)) > 0) r.output.append(buf, n);
  int s = pclose(f);
  r.status = WIFEXITED(s) ? WEXITSTATUS(s) : -1;
  return r;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Lines of iasl's output or listing that report a problem.
std::string Problems(const std::string& text) {
  std::string out;
  std::istringstream in(text);
  std::string line;
  static const std::regex bad("(error|warning)", std::regex::icase);
  static const std::regex summary("[0-9]+ Errors?, [0-9]+ Warnings?");
  while (std::getline(in, line)) {
    if (std::regex_search(line, summary)) continue;  // checked separately
    if (std::regex_search(line, bad)) out += line + "\n";
  }
  return out;
}

class IaslTest : public testing::Test {
 protected:
  void SetUp() override {
    iasl_ = FindTool("iasl");
    if (iasl_.empty()) {
      SayMissing("iasl");
      GTEST_SKIP() << "iasl not found (apt-get install acpica-tools)";
    }
    const char* tmp = getenv("TEST_TMPDIR");
    dir_ = absl::StrCat(tmp ? tmp : "/tmp", "/acpi_iasl_", getpid(), "_",
                        testing::UnitTest::GetInstance()->current_test_info()->name());
    ASSERT_EQ(mkdir(dir_.c_str(), 0755), 0) << dir_;
  }

  // Writes every table of `t` to the directory as <signature>.dat (DSDT as
  // dsdt.aml) and returns the file names by signature.
  std::map<std::string, std::string> WriteTables(const Tables& t) {
    std::map<std::string, std::string> files;
    auto at = [&](uint64_t addr) { return t.bytes.data() + (addr - kBase); };
    auto u32 = [&](uint64_t addr) {
      uint32_t v;
      memcpy(&v, at(addr), 4);
      return v;
    };
    auto u64 = [&](uint64_t addr) {
      uint64_t v;
      memcpy(&v, at(addr), 8);
      return v;
    };
    auto write = [&](const std::string& sig, uint64_t addr, size_t length) {
      std::string name = sig == "DSDT" ? "dsdt.aml" : absl::AsciiStrToLower(sig) + ".dat";
      if (sig == "RSD PTR ") name = "rsdp.dat";
      std::ofstream out(dir_ + "/" + name, std::ios::binary);
      out.write(reinterpret_cast<const char*>(at(addr)), static_cast<std::streamsize>(length));
      files[sig == "RSD PTR " ? "RSDP" : sig] = name;
    };
    write("RSD PTR ", t.rsdp_address, 36);
    files.erase("RSDP");  // see CheckRsdp
    uint64_t xsdt = u64(t.rsdp_address + 24);
    write("XSDT", xsdt, u32(xsdt + 4));
    for (uint32_t i = 0; i < (u32(xsdt + 4) - 36) / 8; ++i) {
      uint64_t a = u64(xsdt + 36 + 8 * i);
      std::string sig(reinterpret_cast<const char*>(at(a)), 4);
      write(sig, a, u32(a + 4));
      if (sig == "FACP") {
        uint64_t dsdt = u64(a + 140), facs = u32(a + 36);
        write("DSDT", dsdt, u32(dsdt + 4));
        write("FACS", facs, u32(facs + 4));
      }
    }
    return files;
  }

  // `iasl -d file`: returns the disassembly, and fails the test on any error or
  // warning.
  std::string Disassemble(const std::string& file) {
    RunResult r = RunIn(dir_, absl::StrCat("'", iasl_, "' -d ", file));
    EXPECT_EQ(r.status, 0) << r.output;
    EXPECT_EQ(Problems(r.output), "") << file << ":\n" << r.output;
    std::string dsl = file.substr(0, file.rfind('.')) + ".dsl";
    std::string text = ReadFile(dir_ + "/" + dsl);
    EXPECT_FALSE(text.empty()) << "no " << dsl << "\n" << r.output;
    EXPECT_EQ(Problems(text), "") << dsl << ":\n" << text;
    return text;
  }

  // iasl 20200925 cannot disassemble a lone RSDP (it has no standard header), but
  // it compiles one from data-table source: the result, checksums and all, must be
  // our RSDP byte for byte.
  void CheckRsdp(const Tables& t) {
    uint64_t xsdt;
    memcpy(&xsdt, t.bytes.data() + (t.rsdp_address - kBase) + 24, 8);
    std::string source = absl::StrFormat(
        "[0008]                          Signature : \"RSD PTR \"\n"
        "[0001]                           Checksum : 00\n"
        "[0006]                             Oem ID : \"HVVMM \"\n"
        "[0001]                           Revision : 02\n"
        "[0004]                       RSDT Address : 00000000\n"
        "[0004]                             Length : 00000024\n"
        "[0008]                       XSDT Address : %016X\n"
        "[0001]                  Extended Checksum : 00\n"
        "[0003]                           Reserved : 000000\n",
        xsdt);
    std::ofstream(dir_ + "/rsdp_ref.asl") << source;
    RunResult r = RunIn(dir_, absl::StrCat("'", iasl_, "' rsdp_ref.asl"));
    EXPECT_EQ(r.status, 0) << r.output;
    EXPECT_EQ(Problems(r.output), "") << r.output;
    std::string ref = ReadFile(dir_ + "/rsdp_ref.aml");
    std::string ours(reinterpret_cast<const char*>(t.bytes.data() + (t.rsdp_address - kBase)), 36);
    EXPECT_EQ(ref, ours) << r.output;
  }

  std::string iasl_;
  std::string dir_;
};

Platform FullPlatform() {
  Platform p;
  p.cpus = 4;
  p.ecam_base = 0xb0000000;
  p.ecam_buses = 256;
  p.pci_mmio64_base = 0x8000000000;
  p.pci_mmio64_size = 0x4000000000;
  p.isa_devices = {
      {"COM1", "PNP0501", 1, {{0x3f8, 8}}, {4}},
      {"COM2", "PNP0501", 2, {{0x2f8, 8}}, {3}},
      {"RTC", "PNP0B00", 0, {{0x70, 2}}, {8}},
      {"KBD", "PNP0303", 0, {{0x60, 1}, {0x64, 1}}, {1}},
      {"MOU", "PNP0F13", 0, {}, {12}},
      {"PEVT", "QEMU0001", 0, {{0x505, 1}}, {}},
  };
  return p;
}

TEST_F(IaslTest, EveryTableDisassemblesCleanly) {
  auto t = BuildTables(FullPlatform(), kBase);
  ASSERT_TRUE(t.ok()) << t.status();
  auto files = WriteTables(*t);
  for (const char* sig : {"XSDT", "FACP", "FACS", "APIC", "MCFG", "DSDT"}) {
    EXPECT_TRUE(files.count(sig)) << sig;
  }

  CheckRsdp(*t);

  std::string xsdt = Disassemble(files["XSDT"]);
  EXPECT_NE(xsdt.find("Oem Table ID : \"HVTABLES\""), std::string::npos) << xsdt;

  std::string fadt = Disassemble(files["FACP"]);
  for (const char* want : {"SCI Interrupt : 0009", "PM1A Event Block Address : 00000400",
                           "PM1A Control Block Address : 00000404",
                           "PM Timer Block Address : 00000408", "PM1 Event Block Length : 04",
                           "PM1 Control Block Length : 02", "PM Timer Block Length : 04",
                           "WBINVD instruction is operational (V1) : 1",
                           "All CPUs support C1 (V1) : 1", "Control Method Sleep Button (V1) : 1",
                           "Reset Register Supported (V2) : 1",
                           "Legacy Devices Supported (V2) : 1",
                           "8042 Present on ports 60/64 (V2) : 1",
                           "VGA Not Present (V4) : 1", "Address : 0000000000000CF9",
                           "Value to cause reset : 06", "FADT Minor Revision : 03",
                           "Hardware Reduced (V5) : 0", "32-bit PM Timer (V1) : 0"}) {
    EXPECT_NE(fadt.find(want), std::string::npos) << want << "\n" << fadt;
  }

  std::string facs = Disassemble(files["FACS"]);
  EXPECT_NE(facs.find("\"FACS\""), std::string::npos) << facs;

  std::string madt = Disassemble(files["APIC"]);
  EXPECT_NE(madt.find("PC-AT Compatibility : 1"), std::string::npos) << madt;
  size_t lapics = 0;
  for (size_t at = 0; (at = madt.find("Subtable Type : 00 [Processor Local APIC]", at)) !=
                      std::string::npos;
       ++at) {
    ++lapics;
  }
  EXPECT_EQ(lapics, 4u) << madt;
  EXPECT_NE(madt.find("Subtable Type : 01 [I/O APIC]"), std::string::npos) << madt;
  EXPECT_NE(madt.find("Subtable Type : 02 [Interrupt Source Override]"), std::string::npos);
  EXPECT_NE(madt.find("Subtable Type : 04 [Local APIC NMI]"), std::string::npos);

  std::string mcfg = Disassemble(files["MCFG"]);
  EXPECT_NE(mcfg.find("Base Address : 00000000B0000000"), std::string::npos) << mcfg;
  EXPECT_NE(mcfg.find("End Bus Number : FF"), std::string::npos) << mcfg;

  std::string dsdt = Disassemble(files["DSDT"]);
  for (const char* want :
       {"Device (PCI0)", "EisaId (\"PNP0A08\")", "EisaId (\"PNP0A03\")", "Name (_BBN, Zero)",
        "Name (_SEG, Zero)", "Name (_PRT, Package (0x80)", "Name (_S5, Package (0x04)  // _S5_: S5 System State", "Device (COM1)",
        "Device (COM2)", "Device (RTC)", "Device (KBD)", "Device (MOU)", "Device (PEVT)",
        "Device (ECAM)", "EisaId (\"PNP0501\")", "EisaId (\"PNP0B00\")", "EisaId (\"PNP0303\")",
        "EisaId (\"PNP0F13\")", "EisaId (\"PNP0C02\")", "Name (_HID, \"QEMU0001\")",
        "Method (_STA, 0, NotSerialized)", "Return (0x0F)", "WordBusNumber (ResourceProducer",
        "DWordMemory (ResourceProducer", "QWordMemory (ResourceProducer", "IRQNoFlags ()",
        "Memory32Fixed (ReadWrite"}) {
    EXPECT_NE(dsdt.find(want), std::string::npos) << want << "\n" << dsdt;
  }
  // Devices sit directly under \_SB.
  EXPECT_NE(dsdt.find("Scope (_SB)"), std::string::npos) << dsdt;
  // Every _PRT entry, as iasl prints it.
  for (uint32_t slot = 0; slot < 32; ++slot) {
    for (uint32_t pin = 0; pin < 4; ++pin) {
      std::string pin_text = pin == 0 ? "Zero" : pin == 1 ? "One" : absl::StrFormat("0x%02X", pin);
      std::regex entry(absl::StrFormat(
          R"(Package \(0x04\)\s*\{\s*%s,\s*%s,\s*Zero,\s*0x%02X\s*\})",
          slot == 0 ? "0xFFFF" : absl::StrFormat("0x%04XFFFF", slot), pin_text,
          PciIntxGsi(slot, pin)));
      EXPECT_TRUE(std::regex_search(dsdt, entry)) << "slot " << slot << " pin " << pin;
    }
  }
  // COM1's resources.
  EXPECT_TRUE(std::regex_search(
      dsdt, std::regex(R"(IO \(Decode16,\s*0x03F8,[^\n]*\n\s*0x03F8,[^\n]*\n\s*0x01,[^\n]*\n\s*0x08,)")))
      << dsdt;
  EXPECT_TRUE(std::regex_search(dsdt, std::regex(R"(IRQNoFlags \(\)\s*\{4\})"))) << dsdt;
}

TEST_F(IaslTest, DsdtRecompilesToTheSameAml) {
  auto t = BuildTables(FullPlatform(), kBase);
  ASSERT_TRUE(t.ok()) << t.status();
  auto files = WriteTables(*t);
  Disassemble(files["DSDT"]);
  // Compile the disassembly again (into again.aml): iasl's semantic checks run on
  // it, and its AML must be ours, byte for byte, after the header.
  RunResult r = RunIn(dir_, absl::StrCat("'", iasl_, "' -p again dsdt.dsl"));
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find(" 0 Errors, 0 Warnings, 0 Remarks"), std::string::npos) << r.output;
  EXPECT_EQ(Problems(r.output), "") << r.output;
  std::string ours = ReadFile(dir_ + "/dsdt.aml");
  std::string again = ReadFile(dir_ + "/again.aml");
  ASSERT_GT(ours.size(), 36u);
  ASSERT_GT(again.size(), 36u);
  EXPECT_EQ(ours.substr(36), again.substr(36)) << "iasl encodes the DSDT differently";
  EXPECT_EQ(ours.substr(0, 9), again.substr(0, 9));  // signature, length, revision
}

TEST_F(IaslTest, MinimalAndLargePlatformsDisassembleCleanly) {
  Platform small;  // one CPU, no ISA devices, no ECAM, no 64-bit window
  Platform big = FullPlatform();
  big.cpus = 300;  // x2APIC entries
  for (const Platform& p : {small, big}) {
    auto t = BuildTables(p, kBase);
    ASSERT_TRUE(t.ok()) << t.status();
    auto files = WriteTables(*t);
    CheckRsdp(*t);
    for (const auto& [sig, file] : files) {
      SCOPED_TRACE(sig);
      std::string text = Disassemble(file);
      if (sig == "APIC" && p.cpus == 300) {
        EXPECT_NE(text.find("Subtable Type : 09 [Processor Local x2APIC]"), std::string::npos);
        EXPECT_NE(text.find("Subtable Type : 0A [Local x2APIC NMI]"), std::string::npos);
      }
    }
  }
}

// ACPICA's interpreter (the one in Linux) loads our FADT, DSDT, MADT and MCFG,
// decodes every _CRS and the _PRT with its resource manager, and enters S5
// through \_S5_ (acpiexec simulates the PM1 ports).
TEST_F(IaslTest, AcpiexecLoadsAndEvaluatesTheTables) {
  std::string acpiexec = FindTool("acpiexec");
  if (acpiexec.empty()) {
    SayMissing("acpiexec");
    GTEST_SKIP() << "acpiexec not found (apt-get install acpica-tools)";
  }
  auto t = BuildTables(FullPlatform(), kBase);
  ASSERT_TRUE(t.ok()) << t.status();
  auto files = WriteTables(*t);
  std::string commands = "sleep 5";
  for (const char* dev : {"PCI0", "ECAM", "COM1", "COM2", "RTC_", "KBD_", "MOU_", "PEVT"}) {
    commands += absl::StrCat("; resources \\_SB.", dev);
  }
  RunResult r = RunIn(dir_, absl::StrCat("'", acpiexec, "' -b '", commands, "' ", files["FACP"],
                                         " ", files["DSDT"], " ", files["APIC"], " ",
                                         files["MCFG"]));
  const std::string& out = r.output;
  EXPECT_EQ(r.status, 0) << out;
  // acpiexec's own hardware self-tests (aetests) poke GPE blocks and PM2_CNT, which
  // this platform does not have; only those may complain. _SRS is optional.
  std::string problems;
  std::istringstream lines(out);
  std::string line;
  static const std::regex own_tests(R"(^Unexpected AE_\w+ from Acpi\w+ \(aetests-\d+\)$)");
  static const std::regex bad("error|warning|unexpected|firmware bug|AE_", std::regex::icase);
  while (std::getline(lines, line)) {
    if (std::regex_search(line, own_tests)) continue;
    if (line == "AcpiSetCurrentResources failed: AE_NOT_FOUND") continue;
    if (std::regex_search(line, bad)) problems += line + "\n";
  }
  EXPECT_EQ(problems, "") << out;
  for (const char* want : {"ACPI: FACP", "(v06 HVVMM  HVTABLES", "ACPI: APIC", "ACPI: MCFG",
                           "Register values for sleep state S5: Sleep-A: 05, Sleep-B: 05",
                           "**** Sleep: Going to sleep (S5) ****", "Device: \\_SB.PEVT",
                           "Resource Type : Bus Number Range", "Address Maximum : FEBFFFFF",
                           "Address Maximum : 000000BFFFFFFFFF", "Address Length : 10000000"}) {
    EXPECT_NE(out.find(want), std::string::npos) << want << "\n" << out;
  }
  size_t prt = 0;
  for (size_t at = 0; (at = out.find("PCI IRQ Routing Table Package", at)) != std::string::npos;
       ++at) {
    ++prt;
  }
  EXPECT_EQ(prt, 128u);
  for (const char* irq : {"Interrupt List : 4 ", "Interrupt List : 3 ", "Interrupt List : 8 ",
                          "Interrupt List : 1 ", "Interrupt List : C "}) {
    EXPECT_NE(out.find(irq), std::string::npos) << irq;
  }
}

}  // namespace
}  // namespace hv::acpi
