#include "common/capnp_text_locator.h"

#include <algorithm>
#include <cstdint>
#include <ostream>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace hv {

void PrintTo(const TextLocation& loc, std::ostream* os) {
  *os << loc.line << ":" << loc.column;
}

namespace {

TextLocation At(int line, int column) {
  TextLocation loc;
  loc.line = line;
  loc.column = column;
  return loc;
}

constexpr TextLocation kUnknown{};

// The example from the VM file documentation. Line numbers are on the right.
const char kExample[] =
    "using import \"/hv/vm.capnp\".Vm;\n"                                               // 1
    "# comment\n"                                                                      // 2
    "const vm :Vm = (\n"                                                               // 3
    "  name = \"demo\",\n"                                                             // 4
    "  cpus = 2,\n"                                                                    // 5
    "  memory = \"1G\",\n"                                                             // 6
    "  boot = (kernel = \"hello.elf\", cmdline = \"console=ttyS0 \\\"quoted\\\"\"),\n"  // 7
    "  devices = [\n"                                                                  // 8
    "    (slot = 0, emulation = \"hostbridge\"),\n"                                    // 9
    "    (slot = 3, function = 1, emulation = \"virtio-blk\", path = \"disk.img\",\n"  // 10
    "     options = [(key = \"ro\"), (key = \"sectorsize\", value = \"4096\")]),\n"    // 11
    "  ],\n"                                                                           // 12
    "  lpc = (com1 = (stdio = void), com2 = (socket = \"/tmp/c2\")),\n"               // 13
    ");\n";                                                                            // 14

// Every path the tests below look up in kExample (or variants of it).
const std::vector<std::string>& ExamplePaths() {
  static const std::vector<std::string> paths = {
      "",
      "name",
      "cpus",
      "memory",
      "acpi",
      "boot",
      "boot.kernel",
      "boot.cmdline",
      "boot.initrd",
      "devices",
      "devices[0]",
      "devices[0].slot",
      "devices[0].function",
      "devices[0].emulation",
      "devices[1]",
      "devices[1].slot",
      "devices[1].function",
      "devices[1].emulation",
      "devices[1].path",
      "devices[1].options",
      "devices[1].options[0]",
      "devices[1].options[0].key",
      "devices[1].options[0].value",
      "devices[1].options[1]",
      "devices[1].options[1].key",
      "devices[1].options[1].value",
      "devices[2]",
      "devices[2].slot",
      "lpc",
      "lpc.com1",
      "lpc.com1.stdio",
      "lpc.com2",
      "lpc.com2.socket",
      "lpc.com3",
  };
  return paths;
}

TEST(CapnpTextLocatorTest, ExampleConstAndTopLevelFields) {
  CapnpTextLocator loc(kExample, "vm");
  EXPECT_TRUE(loc.complete());
  EXPECT_EQ(loc.ConstLocation(), At(3, 1));
  EXPECT_EQ(loc.Find(""), At(3, 1));
  EXPECT_EQ(loc.Find("name"), At(4, 3));
  EXPECT_EQ(loc.Find("cpus"), At(5, 3));
  EXPECT_EQ(loc.Find("memory"), At(6, 3));
  EXPECT_EQ(loc.Find("boot"), At(7, 3));
  EXPECT_EQ(loc.Find("devices"), At(8, 3));
  EXPECT_EQ(loc.Find("lpc"), At(13, 3));
}

TEST(CapnpTextLocatorTest, ExampleNestedStructFields) {
  CapnpTextLocator loc(kExample, "vm");
  EXPECT_EQ(loc.Find("boot.kernel"), At(7, 11));
  // After a string holding escaped quotes.
  EXPECT_EQ(loc.Find("boot.cmdline"), At(7, 33));
}

TEST(CapnpTextLocatorTest, ExampleListElementsAreTheirOpeningParenthesis) {
  CapnpTextLocator loc(kExample, "vm");
  EXPECT_EQ(loc.Find("devices[0]"), At(9, 5));
  EXPECT_EQ(loc.Find("devices[1]"), At(10, 5));
  EXPECT_EQ(loc.Find("devices[1].options[0]"), At(11, 17));
  EXPECT_EQ(loc.Find("devices[1].options[1]"), At(11, 31));
}

TEST(CapnpTextLocatorTest, ExampleFieldsOfListElements) {
  CapnpTextLocator loc(kExample, "vm");
  EXPECT_EQ(loc.Find("devices[0].slot"), At(9, 6));
  EXPECT_EQ(loc.Find("devices[0].emulation"), At(9, 16));
  EXPECT_EQ(loc.Find("devices[1].slot"), At(10, 6));
  EXPECT_EQ(loc.Find("devices[1].function"), At(10, 16));
  EXPECT_EQ(loc.Find("devices[1].emulation"), At(10, 30));
  EXPECT_EQ(loc.Find("devices[1].path"), At(10, 56));
  EXPECT_EQ(loc.Find("devices[1].options"), At(11, 6));
  EXPECT_EQ(loc.Find("devices[1].options[0].key"), At(11, 18));
  EXPECT_EQ(loc.Find("devices[1].options[1].key"), At(11, 32));
  EXPECT_EQ(loc.Find("devices[1].options[1].value"), At(11, 52));
}

TEST(CapnpTextLocatorTest, ExampleUnionMembersAreFields) {
  CapnpTextLocator loc(kExample, "vm");
  EXPECT_EQ(loc.Find("lpc.com1"), At(13, 10));
  EXPECT_EQ(loc.Find("lpc.com1.stdio"), At(13, 18));
  EXPECT_EQ(loc.Find("lpc.com2"), At(13, 33));
  EXPECT_EQ(loc.Find("lpc.com2.socket"), At(13, 41));
}

TEST(CapnpTextLocatorTest, DefaultedFieldsFallBackToTheEnclosingElement) {
  CapnpTextLocator loc(kExample, "vm");
  EXPECT_EQ(loc.Find("devices[0].function"), At(9, 5));
  EXPECT_EQ(loc.Find("devices[0].sandbox"), At(9, 5));
  EXPECT_EQ(loc.Find("devices[1].options[0].value"), At(11, 17));
  EXPECT_EQ(loc.Find("boot.initrd"), At(7, 3));
  EXPECT_EQ(loc.Find("lpc.com3"), At(13, 3));
  EXPECT_EQ(loc.Find("lpc.com3.socket"), At(13, 3));
  // Not written at the top level: the const itself.
  EXPECT_EQ(loc.Find("acpi"), At(3, 1));
  EXPECT_EQ(loc.Find("cpuPins[0].vcpu"), At(3, 1));
}

TEST(CapnpTextLocatorTest, IndexPastTheEndFallsBackToTheList) {
  CapnpTextLocator loc(kExample, "vm");
  EXPECT_EQ(loc.Find("devices[2]"), At(8, 3));
  EXPECT_EQ(loc.Find("devices[2].slot"), At(8, 3));
  EXPECT_EQ(loc.Find("devices[1].options[2].key"), At(11, 6));
}

TEST(CapnpTextLocatorTest, IndexingAScalarOrAStructFallsBackToIt) {
  CapnpTextLocator loc(kExample, "vm");
  EXPECT_EQ(loc.Find("name[0]"), At(4, 3));
  EXPECT_EQ(loc.Find("cpus.x"), At(5, 3));
  EXPECT_EQ(loc.Find("boot[0]"), At(7, 3));
  EXPECT_EQ(loc.Find("devices.slot"), At(8, 3));
}

TEST(CapnpTextLocatorTest, MalformedPathsFallBackToTheLongestValidPrefix) {
  CapnpTextLocator loc(kExample, "vm");
  EXPECT_EQ(loc.Find("devices["), At(8, 3));
  EXPECT_EQ(loc.Find("devices[]"), At(8, 3));
  EXPECT_EQ(loc.Find("devices[x]"), At(8, 3));
  EXPECT_EQ(loc.Find("devices[-1]"), At(8, 3));
  EXPECT_EQ(loc.Find("devices[1"), At(8, 3));
  EXPECT_EQ(loc.Find("devices[99999999999999999999999]"), At(8, 3));
  EXPECT_EQ(loc.Find("devices[1]slot"), At(10, 5));
  EXPECT_EQ(loc.Find("devices[1]..slot"), At(10, 5));
  EXPECT_EQ(loc.Find("devices."), At(8, 3));
  EXPECT_EQ(loc.Find(".name"), At(3, 1));
  EXPECT_EQ(loc.Find("[0]"), At(3, 1));
  EXPECT_EQ(loc.Find(std::string("na\0me", 6)), At(3, 1));
}

TEST(CapnpTextLocatorTest, UsingAliasFileIdAndAnnotationsAreSkipped) {
  const char text[] =
      "@0xbf5147cbbecf40c1;\n"                        // 1
      "using Cxx = import \"/capnp/c++.capnp\";\n"    // 2
      "$Cxx.namespace(\"hv::vm\");\n"                 // 3
      "using Vm = import \"/hv/vm.capnp\".Vm;\n"      // 4
      "struct Local { x @0 :Int32 = 1; }\n"           // 5
      "annotation note(*) :Text;\n"                   // 6
      "const vm :Vm = (name = \"a\", cpus = 4) $note(\"x\");\n"  // 7
      "const after :Int32 = 5;\n";                    // 8
  CapnpTextLocator loc(text, "vm");
  EXPECT_TRUE(loc.complete());
  EXPECT_EQ(loc.ConstLocation(), At(7, 1));
  EXPECT_EQ(loc.Find("name"), At(7, 17));
  EXPECT_EQ(loc.Find("cpus"), At(7, 29));
}

TEST(CapnpTextLocatorTest, ComplexTypesBeforeTheEqualsSign) {
  const char text[] =
      "const vm :import \"/hv/vm.capnp\".Vm = (name = \"a\");\n"  // 1
      "const vms :List(import \"/hv/vm.capnp\".Vm) = [\n"        // 2
      "  (name = \"a\"),\n"                                       // 3
      "  (name = \"b\", cpus = 2),\n"                             // 4
      "];\n";                                                     // 5
  CapnpTextLocator vm(text, "vm");
  EXPECT_TRUE(vm.complete());
  EXPECT_EQ(vm.Find("name"), At(1, 39));
  // A list-valued constant: paths start with an index.
  CapnpTextLocator vms(text, "vms");
  EXPECT_TRUE(vms.complete());
  EXPECT_EQ(vms.ConstLocation(), At(2, 1));
  EXPECT_EQ(vms.Find("[0]"), At(3, 3));
  EXPECT_EQ(vms.Find("[1].cpus"), At(4, 16));
  EXPECT_EQ(vms.Find("[1].memory"), At(4, 3));
  EXPECT_EQ(vms.Find("[2].name"), At(2, 1));
}

TEST(CapnpTextLocatorTest, CommentsContainingBracketsAndQuotesAreIgnored) {
  const char text[] =
      "# const vm :Vm = (name = \"in a comment\");\n"  // 1
      "const vm :Vm = ( # ( [ \" unbalanced\n"          // 2
      "  # ) ] \" more\n"                               // 3
      "  name = # \"(\n"                                // 4
      "    \"demo\", # ],\n"                            // 5
      "  devices = [ # (\n"                             // 6
      "    # (slot = 9),\n"                             // 7
      "    (slot = 0), # \"\n"                          // 8
      "    (slot = 1) # ) ] )\n"                        // 9
      "  ], cpus = 2 # end\n"                           // 10
      ");\n";                                           // 11
  CapnpTextLocator loc(text, "vm");
  EXPECT_TRUE(loc.complete());
  EXPECT_EQ(loc.ConstLocation(), At(2, 1));
  EXPECT_EQ(loc.Find("name"), At(4, 3));
  EXPECT_EQ(loc.Find("devices[0]"), At(8, 5));
  EXPECT_EQ(loc.Find("devices[1].slot"), At(9, 6));
  EXPECT_EQ(loc.Find("devices[2]"), At(6, 3));
  EXPECT_EQ(loc.Find("cpus"), At(10, 6));
}

TEST(CapnpTextLocatorTest, StringsContainingSpecialCharactersAreOpaque) {
  const char text[] =
      "const vm :Vm = (\n"                                              // 1
      "  name = \"# not a comment\",\n"                                 // 2
      "  memory = \"(, = [ ] ) cpus = 9\",\n"                           // 3
      "  uuid = \"\\\"quoted, \\\" = ( \\\\\",\n"                       // 4
      "  boot = (cmdline = \"\\\\\", kernel = \"\\x41\\n\\t\\\"\"),\n"  // 5
      "  cpus = 2,\n"                                                   // 6
      ");\n";                                                           // 7
  CapnpTextLocator loc(text, "vm");
  EXPECT_TRUE(loc.complete());
  EXPECT_EQ(loc.Find("name"), At(2, 3));
  EXPECT_EQ(loc.Find("memory"), At(3, 3));
  EXPECT_EQ(loc.Find("uuid"), At(4, 3));
  EXPECT_EQ(loc.Find("boot.cmdline"), At(5, 11));
  EXPECT_EQ(loc.Find("boot.kernel"), At(5, 27));
  EXPECT_EQ(loc.Find("cpus"), At(6, 3));
}

TEST(CapnpTextLocatorTest, AdjacentStringsConcatenate) {
  const char text[] =
      "const vm :Vm = (\n"              // 1
      "  boot = (cmdline = \"a \"\n"     // 2
      "    # a comment between parts\n"  // 3
      "    \"b \" \"c\",\n"              // 4
      "    kernel = \"k\"),\n"           // 5
      "  name = \"x\" \"y\"\n"           // 6
      ");\n";                            // 7
  CapnpTextLocator loc(text, "vm");
  EXPECT_TRUE(loc.complete());
  EXPECT_EQ(loc.Find("boot.cmdline"), At(2, 11));
  EXPECT_EQ(loc.Find("boot.kernel"), At(5, 5));
  EXPECT_EQ(loc.Find("name"), At(6, 3));
}

TEST(CapnpTextLocatorTest, NumbersIdentifiersDataAndReferences) {
  const char text[] =
      "const vm :T = (\n"                                    // 1
      "  a = -1, b = 0x1F, c = 017, d = 1.5e-3, e = -inf,\n"  // 2
      "  f = 2E+10, g = true, h = someEnum, i = void,\n"      // 3
      "  j = 0x\"de ad be ef\", k = .otherConst,\n"           // 4
      "  l = Outer.Inner.value, m = import \"x.capnp\",\n"    // 5
      "  n = embed \"blob.bin\", o = [1, -2, 0x3, 4.5, nan],\n"  // 6
      "  p = [\"s\", 0x\"00\", (q = 1), [r], []],\n"           // 7
      "  z = 1\n"                                             // 8
      ");\n";                                                 // 9
  CapnpTextLocator loc(text, "vm");
  EXPECT_TRUE(loc.complete());
  EXPECT_EQ(loc.Find("b"), At(2, 11));
  EXPECT_EQ(loc.Find("c"), At(2, 21));
  EXPECT_EQ(loc.Find("d"), At(2, 30));
  EXPECT_EQ(loc.Find("e"), At(2, 42));
  EXPECT_EQ(loc.Find("f"), At(3, 3));
  EXPECT_EQ(loc.Find("g"), At(3, 14));
  EXPECT_EQ(loc.Find("i"), At(3, 38));
  EXPECT_EQ(loc.Find("k"), At(4, 24));
  EXPECT_EQ(loc.Find("m"), At(5, 26));
  EXPECT_EQ(loc.Find("n"), At(6, 3));
  EXPECT_EQ(loc.Find("o[0]"), At(6, 30));
  EXPECT_EQ(loc.Find("o[1]"), At(6, 33));  // the minus sign
  EXPECT_EQ(loc.Find("o[4]"), At(6, 47));
  EXPECT_EQ(loc.Find("p[1]"), At(7, 13));
  EXPECT_EQ(loc.Find("p[2].q"), At(7, 22));
  EXPECT_EQ(loc.Find("p[3]"), At(7, 30));
  EXPECT_EQ(loc.Find("p[4]"), At(7, 35));
  EXPECT_EQ(loc.Find("z"), At(8, 3));
  // A struct given as a reference to another constant: its fields aren't written.
  EXPECT_EQ(loc.Find("k.x"), At(4, 24));
}

TEST(CapnpTextLocatorTest, OnlyTheNamedConstIsIndexed) {
  const char text[] =
      "const vmx :Vm = (name = \"x\");\n"                                  // 1
      "const other :Text = \"const vm :Vm = (name = \\\"fake\\\");\";\n"  // 2
      "struct S {\n"                                                      // 3
      "  const vm :Vm = (name = \"nested\");\n"                           // 4
      "}\n"                                                               // 5
      "const v :Vm = (name = \"v\");\n"                                   // 6
      "const vm :Vm = (\n"                                                // 7
      "  cpus = 1, name = \"real\");\n"                                   // 8
      "const vm2 :Vm = (name = \"two\", memory = \"1G\");\n";             // 9
  CapnpTextLocator vm(text, "vm");
  EXPECT_TRUE(vm.complete());
  EXPECT_EQ(vm.ConstLocation(), At(7, 1));
  EXPECT_EQ(vm.Find("name"), At(8, 13));
  EXPECT_EQ(vm.Find("memory"), At(7, 1));

  CapnpTextLocator vm2(text, "vm2");
  EXPECT_EQ(vm2.ConstLocation(), At(9, 1));
  EXPECT_EQ(vm2.Find("name"), At(9, 18));
  EXPECT_EQ(vm2.Find("memory"), At(9, 32));

  CapnpTextLocator vmx(text, "vmx");
  EXPECT_EQ(vmx.Find("name"), At(1, 18));
}

TEST(CapnpTextLocatorTest, MissingConstIsUnknown) {
  CapnpTextLocator loc(kExample, "other");
  EXPECT_FALSE(loc.complete());
  EXPECT_EQ(loc.ConstLocation(), kUnknown);
  EXPECT_EQ(loc.Find(""), kUnknown);
  EXPECT_EQ(loc.Find("name"), kUnknown);
  EXPECT_EQ(loc.Find("devices[1].slot"), kUnknown);
  EXPECT_FALSE(loc.Find("name").known());

  EXPECT_EQ(CapnpTextLocator("", "vm").Find("name"), kUnknown);
  EXPECT_EQ(CapnpTextLocator(kExample, "").Find("name"), kUnknown);
  // The name of a field, not of a const.
  EXPECT_EQ(CapnpTextLocator(kExample, "name").ConstLocation(), kUnknown);
}

TEST(CapnpTextLocatorTest, ConstWithoutValueIsLocatedButNotIndexed) {
  CapnpTextLocator loc("struct Vm {}\nconst vm :Vm;\nconst x :Vm = (name = \"x\");\n", "vm");
  EXPECT_FALSE(loc.complete());
  EXPECT_EQ(loc.ConstLocation(), At(2, 1));
  EXPECT_EQ(loc.Find("name"), At(2, 1));
}

TEST(CapnpTextLocatorTest, ColumnsCountBytesLikeCapnp) {
  // capnp reports columns in bytes: a tab and each byte of "é" count 1.
  const char text[] = "const vm :Vm = (\tname = \"\xc3\xa9\xc3\xa9\", cpus = 2);\n";
  CapnpTextLocator loc(text, "vm");
  EXPECT_TRUE(loc.complete());
  EXPECT_EQ(loc.Find("name"), At(1, 18));
  EXPECT_EQ(loc.Find("cpus"), At(1, 33));
}

TEST(CapnpTextLocatorTest, CrLfLineEndings) {
  const char text[] = "# x\r\nconst vm :Vm = (\r\n  name = \"a\",\r\n  cpus = 2\r\n);\r\n";
  CapnpTextLocator loc(text, "vm");
  EXPECT_TRUE(loc.complete());
  EXPECT_EQ(loc.ConstLocation(), At(2, 1));
  EXPECT_EQ(loc.Find("name"), At(3, 3));
  EXPECT_EQ(loc.Find("cpus"), At(4, 3));
}

TEST(CapnpTextLocatorTest, CopiesShareTheIndex) {
  CapnpTextLocator original(kExample, "vm");
  CapnpTextLocator copy = original;
  CapnpTextLocator moved = std::move(original);
  EXPECT_EQ(copy.Find("devices[1].slot"), At(10, 6));
  EXPECT_EQ(moved.Find("devices[1].slot"), At(10, 6));
  copy = CapnpTextLocator("", "vm");
  EXPECT_EQ(copy.Find("name"), kUnknown);
  EXPECT_EQ(moved.Find("name"), At(4, 3));
}

TEST(CapnpTextLocatorTest, TextCutInsideTheValueKeepsWhatCameBefore) {
  const std::string full = kExample;
  // Cut just after "(slot = 3, function = 1, " on line 10.
  const std::string cut = full.substr(0, full.find("emulation = \"virtio-blk\""));
  CapnpTextLocator loc(cut, "vm");
  EXPECT_FALSE(loc.complete());
  EXPECT_EQ(loc.ConstLocation(), At(3, 1));
  EXPECT_EQ(loc.Find("name"), At(4, 3));
  EXPECT_EQ(loc.Find("boot.cmdline"), At(7, 33));
  EXPECT_EQ(loc.Find("devices[0].slot"), At(9, 6));
  EXPECT_EQ(loc.Find("devices[1].function"), At(10, 16));
  EXPECT_EQ(loc.Find("devices[1].path"), At(10, 5));
  EXPECT_EQ(loc.Find("lpc.com1"), At(3, 1));
}

TEST(CapnpTextLocatorTest, UnexpectedTokensStopIndexingGracefully) {
  const char text[] =
      "const vm :Vm = (\n"
      "  name = \"a\",\n"
      "  cpus = 2 3,\n"  // two values
      "  memory = \"1G\",\n"
      ");\n";
  CapnpTextLocator loc(text, "vm");
  EXPECT_FALSE(loc.complete());
  EXPECT_EQ(loc.Find("name"), At(2, 3));
  EXPECT_EQ(loc.Find("cpus"), At(3, 3));
  EXPECT_EQ(loc.Find("memory"), At(1, 1));

  // Bytes capnp doesn't allow outside strings and comments.
  CapnpTextLocator junk("const vm :Vm = (name = \"a\", \x01\xff cpus = 2);", "vm");
  EXPECT_FALSE(junk.complete());
  EXPECT_EQ(junk.Find("name"), At(1, 17));
  EXPECT_EQ(junk.Find("cpus"), At(1, 1));

  // An unterminated string.
  CapnpTextLocator open("const vm :Vm = (name = \"a\", memory = \"1G);\n", "vm");
  EXPECT_FALSE(open.complete());
  EXPECT_EQ(open.Find("name"), At(1, 17));
  EXPECT_EQ(open.Find("memory"), At(1, 29));
}

// True if `got` is where `full` locates `path` or one of its prefixes, or the
// const, or unknown: what a locator over a damaged copy of the text may answer.
bool IsFallbackOf(const CapnpTextLocator& full, const std::string& path, TextLocation got) {
  if (got == kUnknown || got == full.ConstLocation()) return true;
  for (size_t n = 0; n <= path.size(); ++n) {
    if ((n == path.size() || path[n] == '.' || path[n] == '[') &&
        full.Find(path.substr(0, n)) == got) {
      return true;
    }
  }
  return false;
}

TEST(CapnpTextLocatorTest, EveryPrefixOfTheExampleFallsBackConsistently) {
  const std::string text = kExample;
  const CapnpTextLocator full(text, "vm");
  const size_t value_end = text.rfind(')') + 1;
  for (size_t n = 0; n <= text.size(); ++n) {
    SCOPED_TRACE("prefix length " + std::to_string(n));
    const CapnpTextLocator prefix(text.substr(0, n), "vm");
    EXPECT_EQ(prefix.complete(), n >= value_end);
    for (const std::string& path : ExamplePaths()) {
      const TextLocation got = prefix.Find(path);
      EXPECT_TRUE(IsFallbackOf(full, path, got)) << path;
      if (n >= value_end) {
        EXPECT_EQ(got, full.Find(path)) << path;
      }
    }
  }
}

std::string RandomBytes(std::mt19937& rng, size_t max_len) {
  std::uniform_int_distribution<size_t> len(0, max_len);
  std::uniform_int_distribution<int> byte(0, 255);
  std::string s(len(rng), '\0');
  for (char& c : s) c = static_cast<char>(byte(rng));
  return s;
}

// Pieces of capnp syntax, so that random texts get past the tokenizer and nest.
std::string RandomCapnpish(std::mt19937& rng, size_t max_pieces) {
  static const char* const kPieces[] = {
      "const", " vm", " :Vm", " = ", "(", ")", "[", "]", "{", "}", ",", ";", "=", ".",
      "-", "name", "devices", "slot", " ", "\n", "# c\n", "\"s\"", "\"\\\"", "\\",
      "\"", "0x\"00\"", "0x", "12", "1.5e-3", "import", "embed", "$", "@0x1;", "\xff",
      "\0",
  };
  constexpr size_t kCount = sizeof(kPieces) / sizeof(kPieces[0]);
  std::uniform_int_distribution<size_t> count(0, max_pieces);
  std::uniform_int_distribution<size_t> pick(0, kCount - 1);
  std::string s;
  for (size_t n = count(rng); n > 0; --n) {
    const char* piece = kPieces[pick(rng)];
    if (*piece == '\0') {
      s.push_back('\0');
    } else {
      s += piece;
    }
  }
  return s;
}

void ExpectSaneLookups(const CapnpTextLocator& loc, const std::string& text) {
  const int lines = 1 + static_cast<int>(std::count(text.begin(), text.end(), '\n'));
  const TextLocation c = loc.ConstLocation();
  EXPECT_GE(c.line, 0);
  EXPECT_LE(c.line, lines);
  for (const std::string& path : ExamplePaths()) {
    const TextLocation got = loc.Find(path);
    EXPECT_GE(got.line, 0);
    EXPECT_LE(got.line, lines);
    EXPECT_GE(got.column, 0);
    EXPECT_LE(static_cast<size_t>(got.column), text.size() + 1);
    EXPECT_EQ(got.line == 0, got.column == 0);
  }
}

TEST(CapnpTextLocatorTest, RandomBytesNeverCrash) {
  std::mt19937 rng(20240611);
  for (int i = 0; i < 2000; ++i) {
    const std::string text = RandomBytes(rng, 400);
    ExpectSaneLookups(CapnpTextLocator(text, "vm"), text);
    // The same after a valid header.
    const std::string prefixed = "const vm :Vm = (" + text;
    ExpectSaneLookups(CapnpTextLocator(prefixed, "vm"), prefixed);
  }
}

TEST(CapnpTextLocatorTest, RandomCapnpLikeTextNeverCrashes) {
  std::mt19937 rng(7);
  for (int i = 0; i < 3000; ++i) {
    const std::string text = RandomCapnpish(rng, 200);
    ExpectSaneLookups(CapnpTextLocator(text, "vm"), text);
  }
}

TEST(CapnpTextLocatorTest, RandomMutationsOfTheExampleNeverCrash) {
  std::mt19937 rng(42);
  const std::string original = kExample;
  for (int i = 0; i < 3000; ++i) {
    std::string text = original;
    std::uniform_int_distribution<int> edits(1, 4);
    for (int e = edits(rng); e > 0; --e) {
      std::uniform_int_distribution<size_t> where(0, text.size());
      const size_t at = where(rng);
      switch (rng() % 3) {
        case 0:  // delete a byte
          if (at < text.size()) text.erase(at, 1);
          break;
        case 1:  // insert a byte
          text.insert(at, 1, "()[]{},;=.\"#\\\n x0"[rng() % 17]);
          break;
        default:  // overwrite a byte
          if (at < text.size()) text[at] = static_cast<char>(rng() % 256);
          break;
      }
    }
    ExpectSaneLookups(CapnpTextLocator(text, "vm"), text);
  }
}

TEST(CapnpTextLocatorTest, DeepNestingStopsInsteadOfOverflowingTheStack) {
  for (const char* open : {"(", "[", "(a = ", "x("}) {
    std::string text = "const vm :Vm = ";
    for (int i = 0; i < 200000; ++i) text += open;
    CapnpTextLocator loc(text, "vm");
    EXPECT_FALSE(loc.complete()) << open;
    EXPECT_EQ(loc.ConstLocation(), At(1, 1));
    ExpectSaneLookups(loc, text);
  }
  // Nesting that a real file might have is fine.
  std::string text = "const vm :Vm = ";
  for (int i = 0; i < 50; ++i) text += "(a = ";
  text += "1";
  for (int i = 0; i < 50; ++i) text += ")";
  CapnpTextLocator loc(text + ";", "vm");
  EXPECT_TRUE(loc.complete());
  std::string path = "a";
  for (int i = 1; i < 50; ++i) path += ".a";
  EXPECT_EQ(loc.Find(path), At(1, 16 + 5 * 49 + 1));
}

TEST(CapnpTextLocatorTest, LongListsAreIndexed) {
  std::string text = "const vm :Vm = (devices = [\n";
  for (int i = 0; i < 1000; ++i) text += "  (slot = " + std::to_string(i % 32) + "),\n";
  text += "]);\n";
  CapnpTextLocator loc(text, "vm");
  EXPECT_TRUE(loc.complete());
  EXPECT_EQ(loc.Find("devices[0].slot"), At(2, 4));
  EXPECT_EQ(loc.Find("devices[999]"), At(1001, 3));
  EXPECT_EQ(loc.Find("devices[1000]"), At(1, 17));
}

}  // namespace
}  // namespace hv
