#include "hvcore/acpi/aml.h"

#include <string>

#include "gtest/gtest.h"

namespace hv::acpi::aml {
namespace {

Bytes B(std::initializer_list<int> v) {
  Bytes out;
  for (int x : v) out.push_back(static_cast<uint8_t>(x));
  return out;
}

Bytes Chars(const std::string& s) { return Bytes(s.begin(), s.end()); }

Bytes Cat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const Bytes& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

// Unwraps a term that must have encoded.
Bytes Ok(const Term& t) {
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *t : Bytes{};
}

TEST(PkgLengthTest, ValueBoundaries) {
  EXPECT_EQ(Ok(PkgLengthValue(0)), B({0x00}));
  EXPECT_EQ(Ok(PkgLengthValue(63)), B({0x3f}));
  EXPECT_EQ(Ok(PkgLengthValue(64)), B({0x40, 0x04}));
  EXPECT_EQ(Ok(PkgLengthValue(0x123)), B({0x43, 0x12}));
  EXPECT_EQ(Ok(PkgLengthValue(4095)), B({0x4f, 0xff}));
  EXPECT_EQ(Ok(PkgLengthValue(4096)), B({0x80, 0x00, 0x01}));
  EXPECT_EQ(Ok(PkgLengthValue(0xfffff)), B({0x8f, 0xff, 0xff}));
  EXPECT_EQ(Ok(PkgLengthValue(0x100000)), B({0xc0, 0x00, 0x00, 0x01}));
  EXPECT_EQ(Ok(PkgLengthValue(0xabcdef1)), B({0xc1, 0xef, 0xcd, 0xab}));
  EXPECT_EQ(Ok(PkgLengthValue(0xfffffff)), B({0xcf, 0xff, 0xff, 0xff}));
  EXPECT_FALSE(PkgLengthValue(0x10000000).ok());
}

TEST(PkgLengthTest, CountsItsOwnBytes) {
  // 62 bytes of content + 1 length byte = 63: still one byte.
  EXPECT_EQ(Ok(PkgLengthFor(62)), B({0x3f}));
  // 63 + 1 = 64 does not fit in one byte; with two bytes the value is 65.
  EXPECT_EQ(Ok(PkgLengthFor(63)), B({0x41, 0x04}));
  EXPECT_EQ(Ok(PkgLengthFor(4093)), B({0x4f, 0xff}));       // 4093 + 2 = 4095
  EXPECT_EQ(Ok(PkgLengthFor(4094)), B({0x81, 0x00, 0x01}));  // 4094 + 3 = 4097
  EXPECT_EQ(Ok(PkgLengthFor(0xffffc)), B({0x8f, 0xff, 0xff}));  // + 3 = 0xfffff
  EXPECT_EQ(Ok(PkgLengthFor(0xffffd)), B({0xc1, 0x00, 0x00, 0x01}));  // + 4 = 0x100001
  EXPECT_EQ(Ok(PkgLengthFor(0xffffffb)), B({0xcf, 0xff, 0xff, 0xff}));
  EXPECT_FALSE(PkgLengthFor(0xffffffc).ok());
}

TEST(IntegerTest, ShortestEncoding) {
  EXPECT_EQ(Ok(Integer(0)), B({0x00}));  // Zero
  EXPECT_EQ(Ok(Integer(1)), B({0x01}));  // One
  EXPECT_EQ(Ok(Integer(2)), B({0x0a, 0x02}));
  EXPECT_EQ(Ok(Integer(0xff)), B({0x0a, 0xff}));
  EXPECT_EQ(Ok(Integer(0x100)), B({0x0b, 0x00, 0x01}));
  EXPECT_EQ(Ok(Integer(0xffff)), B({0x0b, 0xff, 0xff}));
  EXPECT_EQ(Ok(Integer(0x10000)), B({0x0c, 0x00, 0x00, 0x01, 0x00}));
  EXPECT_EQ(Ok(Integer(0xffffffff)), B({0x0c, 0xff, 0xff, 0xff, 0xff}));
  EXPECT_EQ(Ok(Integer(0x100000000)), B({0x0e, 0, 0, 0, 0, 1, 0, 0, 0}));
  EXPECT_EQ(Ok(Integer(0x0123456789abcdef)),
            B({0x0e, 0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01}));
  EXPECT_EQ(Ok(Integer(~0ull)), B({0x0e, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}));
}

TEST(EisaIdTest, CompressesPnpIds) {
  EXPECT_EQ(*EisaIdValue("PNP0A03"), 0x030ad041u);
  EXPECT_EQ(*EisaIdValue("PNP0A08"), 0x080ad041u);
  EXPECT_EQ(*EisaIdValue("PNP0501"), 0x0105d041u);
  EXPECT_EQ(*EisaIdValue("PNP0B00"), 0x000bd041u);
  EXPECT_EQ(*EisaIdValue("PNP0303"), 0x0303d041u);
  EXPECT_EQ(*EisaIdValue("PNP0F13"), 0x130fd041u);
  EXPECT_EQ(*EisaIdValue("PNP0C02"), 0x020cd041u);
  // Letters at both ends of the alphabet: A = 1, Z = 26.
  EXPECT_EQ(*EisaIdValue("AZA0000"), 0x00004107u);  // 0 00001 11010 00001 = 07 41
  EXPECT_EQ(Ok(EisaId("PNP0A03")), B({0x0c, 0x41, 0xd0, 0x0a, 0x03}));
}

TEST(EisaIdTest, RefusesWhatIsNotAPnpId) {
  for (const char* bad : {"", "PNP0A0", "PNP0A030", "pnp0a03", "PNP0a03", "P1P0A03", "PNP0G03",
                          "QEMU0001", "@NP0A03"}) {
    EXPECT_FALSE(IsEisaId(bad)) << bad;
    EXPECT_FALSE(EisaId(bad).ok()) << bad;
  }
  EXPECT_TRUE(IsEisaId("PNP0A03"));
}

TEST(NameTest, SegmentsAndPaths) {
  EXPECT_EQ(Ok(NameString("_HID")), Chars("_HID"));
  EXPECT_EQ(Ok(NameString("COM")), Chars("COM_"));
  EXPECT_EQ(Ok(NameString("A")), Chars("A___"));
  EXPECT_EQ(Ok(NameString("\\_SB")), Cat({B({0x5c}), Chars("_SB_")}));
  EXPECT_EQ(Ok(NameString("\\_SB.PCI0")), Cat({B({0x5c, 0x2e}), Chars("_SB_PCI0")}));
  EXPECT_EQ(Ok(NameString("\\_SB.PCI0.ISA")), Cat({B({0x5c, 0x2f, 0x03}), Chars("_SB_PCI0ISA_")}));
  EXPECT_EQ(Ok(NameString("_SB.PCI0")), Cat({B({0x2e}), Chars("_SB_PCI0")}));
  EXPECT_EQ(Ok(NameString("^^COM1")), Cat({B({0x5e, 0x5e}), Chars("COM1")}));
  EXPECT_EQ(Ok(NameString("\\")), B({0x5c, 0x00}));
  for (const char* bad : {"", "1ABC", "ABCDE", "com1", "A-B", "\\_SB.", ".X", "A..B", "\\^A",
                          "\\\\A"}) {
    EXPECT_FALSE(NameString(bad).ok()) << bad;
  }
}

TEST(DataTest, StringBufferPackage) {
  EXPECT_EQ(Ok(String("QEMU0001")), Cat({B({0x0d}), Chars("QEMU0001"), B({0x00})}));
  EXPECT_EQ(Ok(String("")), B({0x0d, 0x00}));
  EXPECT_FALSE(String("caf\xc3\xa9").ok());
  // Buffer: PkgLength (1 + BufferSize 2 + 3 bytes = 6), BufferSize, bytes.
  EXPECT_EQ(Ok(Buffer({1, 2, 3})), B({0x11, 0x06, 0x0a, 0x03, 1, 2, 3}));
  EXPECT_EQ(Ok(Buffer({})), B({0x11, 0x02, 0x00}));
  // Package: PkgLength, NumElements, elements.
  EXPECT_EQ(Ok(Package({Integer(5), Integer(0)})), B({0x12, 0x05, 0x02, 0x0a, 0x05, 0x00}));
  EXPECT_EQ(Ok(Package({})), B({0x12, 0x02, 0x00}));
  std::vector<Term> many(255, Integer(0));
  Bytes big = Ok(Package(many));
  EXPECT_EQ(big[0], 0x12);
  EXPECT_EQ(big[1], 0x40 | ((255 + 1 + 2) & 0xf));  // 2-byte PkgLength, value 258
  EXPECT_EQ(big[2], (255 + 1 + 2) >> 4);
  EXPECT_EQ(big[3], 255);
  EXPECT_EQ(big.size(), 1u + 258u);
  many.push_back(Integer(0));
  EXPECT_FALSE(Package(many).ok());
}

TEST(NamedObjectTest, NameMethodScopeDevice) {
  EXPECT_EQ(Ok(Name("_UID", Integer(1))), Cat({B({0x08}), Chars("_UID"), B({0x01})}));
  EXPECT_EQ(Ok(Name("\\_S5_", Package({Integer(5)}))),
            Cat({B({0x08, 0x5c}), Chars("_S5_"), B({0x12, 0x04, 0x01, 0x0a, 0x05})}));
  // Method (_STA, 0, NotSerialized) { Return (0x0F) }
  EXPECT_EQ(Ok(Method("_STA", 0, false, {Return(Integer(0x0f))})),
            Cat({B({0x14, 0x09}), Chars("_STA"), B({0x00, 0xa4, 0x0a, 0x0f})}));
  EXPECT_EQ(Ok(Method("FOO", 2, true, {})), Cat({B({0x14, 0x06}), Chars("FOO_"), B({0x0a})}));
  EXPECT_FALSE(Method("FOO", 8, false, {}).ok());
  EXPECT_EQ(Ok(Scope("\\_SB", {})), Cat({B({0x10, 0x06, 0x5c}), Chars("_SB_")}));
  EXPECT_EQ(Ok(Device("COM1", {Name("_UID", Integer(1))})),
            Cat({B({0x5b, 0x82, 0x0b}), Chars("COM1"), B({0x08}), Chars("_UID"), B({0x01})}));
}

TEST(NamedObjectTest, LongBodiesGetLongerPkgLengths) {
  std::vector<Term> body;
  for (int i = 0; i < 100; ++i) body.push_back(Name("X", Integer(0x1234)));  // 8 bytes each
  Bytes d = Ok(Device("BIG", body));
  ASSERT_GE(d.size(), 5u);
  EXPECT_EQ(d[0], 0x5b);
  EXPECT_EQ(d[1], 0x82);
  // 4 (name) + 800 (body) + 2 (PkgLength) = 806 = 0x326.
  EXPECT_EQ(d[2], 0x40 | 0x6);
  EXPECT_EQ(d[3], 0x32);
  EXPECT_EQ(d.size(), 2u + 806u);
}

TEST(NamedObjectTest, ErrorsPropagateToTheTop) {
  Term t = Scope("\\_SB", {Device("COM1", {Name("_HID", EisaId("PNP05"))})});
  ASSERT_FALSE(t.ok());
  EXPECT_NE(std::string(t.status().message()).find("PNP05"), std::string::npos);
  EXPECT_FALSE(Device("toolong", {}).ok());
  EXPECT_FALSE(Concat({Integer(1), String("\x80")}).ok());
  EXPECT_EQ(Ok(Concat({Integer(1), Integer(0)})), B({0x01, 0x00}));
}

TEST(ResourceTemplateTest, SmallDescriptors) {
  ResourceTemplate rt;
  rt.Io(0x3f8, 0x3f8, 1, 8).IrqNoFlags({4});
  Bytes raw = Ok(rt.RawBytes());
  EXPECT_EQ(raw, B({0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08,  // IO (Decode16, ...)
                    0x22, 0x10, 0x00,                                // IRQNoFlags () {4}
                    0x79, 0x00}));                                   // End Tag
  // As a Buffer: 0x11, PkgLength 16, BufferSize 13, the bytes.
  Bytes buf = Ok(rt.Build());
  EXPECT_EQ(buf, Cat({B({0x11, 0x10, 0x0a, 0x0d}), raw}));

  ResourceTemplate irqs;
  irqs.IrqNoFlags({1, 12, 15});
  EXPECT_EQ(Ok(irqs.RawBytes()), B({0x22, 0x02, 0x90, 0x79, 0x00}));
  ResourceTemplate mem;
  mem.Memory32Fixed(true, 0xe0000000, 0x100000);
  EXPECT_EQ(Ok(mem.RawBytes()),
            B({0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0x00, 0xe0, 0x00, 0x00, 0x10, 0x00, 0x79, 0}));
  EXPECT_EQ(Ok(ResourceTemplate().RawBytes()), B({0x79, 0x00}));
}

TEST(ResourceTemplateTest, AddressSpaceDescriptors) {
  ResourceTemplate bus;
  bus.WordBusNumber(true, 0, 0xff);
  EXPECT_EQ(Ok(bus.RawBytes()), B({0x88, 0x0d, 0x00, 0x02, 0x0c, 0x00,  // bus, producer, MIF MAF
                                   0x00, 0x00, 0x00, 0x00, 0xff, 0x00,  // gran, min, max
                                   0x00, 0x00, 0x00, 0x01,              // tra, len 0x100
                                   0x79, 0x00}));
  ResourceTemplate io;
  io.WordIo(true, 0x0d00, 0xffff);
  EXPECT_EQ(Ok(io.RawBytes()), B({0x88, 0x0d, 0x00, 0x01, 0x0c, 0x03, 0x00, 0x00, 0x00, 0x0d,
                                  0xff, 0xff, 0x00, 0x00, 0x00, 0xf3, 0x79, 0x00}));
  ResourceTemplate m32;
  m32.DWordMemory(true, ResourceTemplate::Cacheability::kNonCacheable, true, 0xc0000000,
                  0xfebfffff);
  EXPECT_EQ(Ok(m32.RawBytes()),
            B({0x87, 0x17, 0x00, 0x00, 0x0c, 0x01,  // memory, producer, NonCacheable RW
               0, 0, 0, 0, 0x00, 0x00, 0x00, 0xc0, 0xff, 0xff, 0xbf, 0xfe,  // gran, min, max
               0, 0, 0, 0, 0x00, 0x00, 0xc0, 0x3e,                         // tra, len
               0x79, 0x00}));
  ResourceTemplate m64;
  m64.QWordMemory(false, ResourceTemplate::Cacheability::kPrefetchable, false, 0x800000000,
                  0x8ffffffff);
  Bytes q = Ok(m64.RawBytes());
  ASSERT_EQ(q.size(), 3u + 43u + 2u);
  EXPECT_EQ(q[0], 0x8a);
  EXPECT_EQ(q[1], 43);
  EXPECT_EQ(q[3], 0x00);  // memory
  EXPECT_EQ(q[4], 0x0d);  // consumer, MIF, MAF
  EXPECT_EQ(q[5], 0x06);  // Prefetchable, ReadOnly
  EXPECT_EQ(q[14 + 4], 0x08);  // min 0x8_0000_0000: byte 4 of the field at offset 14
  EXPECT_EQ(q[38 + 4], 0x01);  // length 0x1_0000_0000
}

TEST(ResourceTemplateTest, RefusesBadDescriptors) {
  EXPECT_FALSE(ResourceTemplate().IrqNoFlags({16}).RawBytes().ok());
  EXPECT_FALSE(ResourceTemplate().Io(0x3f8, 0x3f0, 1, 8).RawBytes().ok());
  EXPECT_FALSE(ResourceTemplate().Io(0x3f8, 0x3f8, 1, 0).RawBytes().ok());
  EXPECT_FALSE(ResourceTemplate().WordIo(true, 2, 1).Build().ok());
  EXPECT_FALSE(ResourceTemplate().Memory32Fixed(true, 0xfff00000, 0x200000).Build().ok());
  EXPECT_FALSE(ResourceTemplate()
                   .QWordMemory(true, ResourceTemplate::Cacheability::kCacheable, true, 0, ~0ull)
                   .Build()
                   .ok());
  // The first error is kept even if later descriptors are fine.
  ResourceTemplate rt;
  rt.IrqNoFlags({20}).Io(0x60, 0x60, 1, 1);
  EXPECT_NE(std::string(rt.Build().status().message()).find("20"), std::string::npos);
}

}  // namespace
}  // namespace hv::acpi::aml
