#include "hvcore/acpi/aml.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace hv::acpi::aml {
namespace {

// Appends `v` as `n` little-endian bytes.
void PutLe(Bytes& out, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

// Appends the bytes of every term to `out`, or returns the first error.
absl::Status Append(Bytes& out, const std::vector<Term>& terms) {
  for (const Term& t : terms) {
    if (!t.ok()) return t.status();
    out.insert(out.end(), t->begin(), t->end());
  }
  return absl::OkStatus();
}

// `prefix` PkgLength `content`: the shape of every package-like object.
Term WithPkgLength(const Bytes& prefix, const Bytes& content) {
  Term length = PkgLengthFor(content.size());
  if (!length.ok()) return length.status();
  Bytes out = prefix;
  out.insert(out.end(), length->begin(), length->end());
  out.insert(out.end(), content.begin(), content.end());
  return out;
}

// `prefix` PkgLength NameString TermList: Scope, Device, Method (with `flags`
// between the name and the body, when `flags` is not empty).
Term NamedBlock(const Bytes& prefix, absl::string_view name, const Bytes& flags,
                const std::vector<Term>& body) {
  Term n = NameString(name);
  if (!n.ok()) return n.status();
  Bytes content = *n;
  content.insert(content.end(), flags.begin(), flags.end());
  if (auto s = Append(content, body); !s.ok()) return s;
  return WithPkgLength(prefix, content);
}

bool IsLeadNameChar(char c) { return (c >= 'A' && c <= 'Z') || c == '_'; }
bool IsNameChar(char c) { return IsLeadNameChar(c) || (c >= '0' && c <= '9'); }
bool IsUpperHex(char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'); }
int HexValue(char c) { return c <= '9' ? c - '0' : c - 'A' + 10; }

}  // namespace

Term PkgLengthValue(uint32_t value) {
  // Lead byte: bits 7-6 count the bytes that follow (0-3). With none, bits 5-0
  // hold the value; otherwise bits 3-0 hold its low nibble and each following
  // byte the next 8 bits.
  if (value <= 0x3f) return Bytes{static_cast<uint8_t>(value)};
  int follow = value <= 0xfff ? 1 : value <= 0xfffff ? 2 : value <= 0xfffffff ? 3 : 0;
  if (follow == 0) {
    return absl::InvalidArgumentError(absl::StrCat("PkgLength ", value, " exceeds 2^28 - 1"));
  }
  Bytes out{static_cast<uint8_t>((follow << 6) | (value & 0xf))};
  PutLe(out, value >> 4, follow);
  return out;
}

Term PkgLengthFor(size_t content_length) {
  for (uint32_t n = 1; n <= 4; ++n) {
    uint64_t total = uint64_t{content_length} + n;
    uint64_t max = n == 1 ? 0x3f : n == 2 ? 0xfff : n == 3 ? 0xfffff : 0xfffffff;
    if (total <= max) return PkgLengthValue(static_cast<uint32_t>(total));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("a package of ", content_length, " bytes is too long for AML"));
}

Term NameSeg(absl::string_view seg) {
  bool ok = !seg.empty() && seg.size() <= 4 && IsLeadNameChar(seg[0]);
  for (size_t i = 1; ok && i < seg.size(); ++i) ok = IsNameChar(seg[i]);
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bad ACPI name segment \"", seg, "\" (want 1-4 of [A-Z_][A-Z0-9_]*)"));
  }
  Bytes out(seg.begin(), seg.end());
  out.resize(4, '_');
  return out;
}

Term NameString(absl::string_view path) {
  Bytes out;
  absl::string_view rest = path;
  if (!rest.empty() && rest[0] == '\\') {
    out.push_back(kRootChar);
    rest.remove_prefix(1);
  } else {
    while (!rest.empty() && rest[0] == '^') {
      out.push_back(kParentPrefixChar);
      rest.remove_prefix(1);
    }
  }
  std::vector<Bytes> segs;
  while (!rest.empty()) {
    size_t dot = rest.find('.');
    Term seg = NameSeg(rest.substr(0, dot));
    if (!seg.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad ACPI name \"", path, "\": ", seg.status().message()));
    }
    segs.push_back(*std::move(seg));
    if (dot == absl::string_view::npos) break;
    rest.remove_prefix(dot + 1);
    if (rest.empty()) return absl::InvalidArgumentError(absl::StrCat("bad ACPI name \"", path, "\""));
  }
  if (segs.empty() && out.empty()) return absl::InvalidArgumentError("empty ACPI name");
  if (segs.size() > 255) return absl::InvalidArgumentError("ACPI name with over 255 segments");
  if (segs.empty()) {
    out.push_back(0x00);  // NullName: "\" alone, or "^"
  } else if (segs.size() == 2) {
    out.push_back(kDualNamePrefix);
  } else if (segs.size() > 2) {
    out.push_back(kMultiNamePrefix);
    out.push_back(static_cast<uint8_t>(segs.size()));
  }
  for (const Bytes& s : segs) out.insert(out.end(), s.begin(), s.end());
  return out;
}

Term Integer(uint64_t value) {
  if (value == 0) return Bytes{kZeroOp};
  if (value == 1) return Bytes{kOneOp};
  Bytes out;
  int n;
  if (value <= 0xff) {
    out.push_back(kBytePrefix);
    n = 1;
  } else if (value <= 0xffff) {
    out.push_back(kWordPrefix);
    n = 2;
  } else if (value <= 0xffffffff) {
    out.push_back(kDWordPrefix);
    n = 4;
  } else {
    out.push_back(kQWordPrefix);
    n = 8;
  }
  PutLe(out, value, n);
  return out;
}

Term String(absl::string_view s) {
  Bytes out{kStringPrefix};
  for (char c : s) {
    if (c <= 0 || static_cast<unsigned char>(c) > 0x7f) {
      return absl::InvalidArgumentError(
          absl::StrCat("AML strings are ASCII 0x01-0x7f: \"", s, "\""));
    }
    out.push_back(static_cast<uint8_t>(c));
  }
  out.push_back(0x00);
  return out;
}

Term Buffer(const Bytes& bytes) {
  Term size = Integer(bytes.size());
  if (!size.ok()) return size.status();
  Bytes content = *size;
  content.insert(content.end(), bytes.begin(), bytes.end());
  return WithPkgLength({kBufferOp}, content);
}

Term Package(const std::vector<Term>& elements) {
  if (elements.size() > 255) {
    return absl::InvalidArgumentError(
        absl::StrCat("a Package holds at most 255 elements, not ", elements.size()));
  }
  Bytes content{static_cast<uint8_t>(elements.size())};
  if (auto s = Append(content, elements); !s.ok()) return s;
  return WithPkgLength({kPackageOp}, content);
}

Term Name(absl::string_view name, const Term& value) {
  Term n = NameString(name);
  if (!n.ok()) return n.status();
  if (!value.ok()) return value.status();
  Bytes out{kNameOp};
  out.insert(out.end(), n->begin(), n->end());
  out.insert(out.end(), value->begin(), value->end());
  return out;
}

Term Scope(absl::string_view name, const std::vector<Term>& body) {
  return NamedBlock({kScopeOp}, name, {}, body);
}

Term Device(absl::string_view name, const std::vector<Term>& body) {
  return NamedBlock({kExtOpPrefix, kDeviceOp}, name, {}, body);
}

Term Method(absl::string_view name, uint8_t args, bool serialized, const std::vector<Term>& body) {
  if (args > 7) return absl::InvalidArgumentError(absl::StrCat("Method ", name, " with ", args, " args"));
  // MethodFlags: bits 2-0 ArgCount, bit 3 SerializeFlag, bits 7-4 SyncLevel (0).
  uint8_t flags = static_cast<uint8_t>(args | (serialized ? 0x08 : 0x00));
  return NamedBlock({kMethodOp}, name, {flags}, body);
}

Term Return(const Term& value) {
  if (!value.ok()) return value.status();
  Bytes out{kReturnOp};
  out.insert(out.end(), value->begin(), value->end());
  return out;
}

bool IsEisaId(absl::string_view id) {
  if (id.size() != 7) return false;
  for (int i = 0; i < 3; ++i) {
    if (id[i] < 'A' || id[i] > 'Z') return false;
  }
  for (int i = 3; i < 7; ++i) {
    if (!IsUpperHex(id[i])) return false;
  }
  return true;
}

absl::StatusOr<uint32_t> EisaIdValue(absl::string_view id) {
  if (!IsEisaId(id)) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad EISA id \"", id, "\" (want three letters A-Z and four hex digits 0-9A-F)"));
  }
  // Bytes 0-1: the three letters, 5 bits each ('A' = 1), big-endian in a 16-bit
  // field whose top bit is 0. Bytes 2-3: the four hex digits, in order.
  uint32_t c1 = id[0] - 0x40, c2 = id[1] - 0x40, c3 = id[2] - 0x40;
  uint8_t b0 = static_cast<uint8_t>((c1 << 2) | (c2 >> 3));
  uint8_t b1 = static_cast<uint8_t>(((c2 & 0x7) << 5) | c3);
  uint8_t b2 = static_cast<uint8_t>((HexValue(id[3]) << 4) | HexValue(id[4]));
  uint8_t b3 = static_cast<uint8_t>((HexValue(id[5]) << 4) | HexValue(id[6]));
  return uint32_t{b0} | uint32_t{b1} << 8 | uint32_t{b2} << 16 | uint32_t{b3} << 24;
}

Term EisaId(absl::string_view id) {
  auto v = EisaIdValue(id);
  if (!v.ok()) return v.status();
  // Always a DWord, as ASL's EISAID() macro compiles it.
  Bytes out{kDWordPrefix};
  PutLe(out, *v, 4);
  return out;
}

Term Concat(const std::vector<Term>& terms) {
  Bytes out;
  if (auto s = Append(out, terms); !s.ok()) return s;
  return out;
}

// --- Resource descriptors ---

void ResourceTemplate::Fail(absl::Status status) {
  if (status_.ok()) status_ = std::move(status);
}

ResourceTemplate& ResourceTemplate::Io(uint16_t min, uint16_t max, uint8_t alignment,
                                       uint8_t length) {
  if (min > max || length == 0) {
    Fail(absl::InvalidArgumentError(absl::StrCat("bad IO descriptor: min ", min, " max ", max,
                                                 " length ", length)));
    return *this;
  }
  // Small item 0x08 of 7 bytes: tag 0x47; information bit 0 = decodes 16 bits.
  bytes_.push_back(0x47);
  bytes_.push_back(0x01);
  PutLe(bytes_, min, 2);
  PutLe(bytes_, max, 2);
  bytes_.push_back(alignment);
  bytes_.push_back(length);
  return *this;
}

ResourceTemplate& ResourceTemplate::IrqNoFlags(const std::vector<uint8_t>& irqs) {
  uint16_t mask = 0;
  for (uint8_t irq : irqs) {
    if (irq > 15) {
      Fail(absl::InvalidArgumentError(absl::StrCat("IRQ descriptor: IRQ ", irq, " is not 0-15")));
      return *this;
    }
    mask |= static_cast<uint16_t>(1u << irq);
  }
  // Small item 0x04 of 2 bytes: tag 0x22, then the 16-bit mask of IRQs.
  bytes_.push_back(0x22);
  PutLe(bytes_, mask, 2);
  return *this;
}

ResourceTemplate& ResourceTemplate::Memory32Fixed(bool read_write, uint32_t base,
                                                  uint32_t length) {
  if (length == 0 || uint64_t{base} + length - 1 > 0xffffffffull) {
    Fail(absl::InvalidArgumentError(
        absl::StrCat("bad Memory32Fixed: base ", base, " length ", length)));
    return *this;
  }
  // Large item 0x06: tag 0x86, length 9, information bit 0 = read-write.
  bytes_.push_back(0x86);
  PutLe(bytes_, 9, 2);
  bytes_.push_back(read_write ? 0x01 : 0x00);
  PutLe(bytes_, base, 4);
  PutLe(bytes_, length, 4);
  return *this;
}

void ResourceTemplate::AddressSpace(int width, SpaceType type, bool producer,
                                    uint8_t type_flags, uint64_t min, uint64_t max) {
  uint64_t limit = width == 8 ? ~0ull : (1ull << (8 * width)) - 1;
  if (min > max || max > limit || (min == 0 && max == ~0ull)) {
    Fail(absl::InvalidArgumentError(absl::StrCat(
        "bad address space descriptor [", min, ", ", max, "] for ", 8 * width, "-bit fields")));
    return;
  }
  // Large items 0x08 (Word), 0x07 (DWord), 0x0a (QWord): tag, 16-bit length of
  // what follows it, resource type, general flags, type-specific flags, then
  // granularity, minimum, maximum, translation offset and length, each `width`
  // bytes. No ResourceSource.
  uint8_t tag = width == 2 ? 0x88 : width == 4 ? 0x87 : 0x8a;
  bytes_.push_back(tag);
  PutLe(bytes_, 3 + 5 * width, 2);
  bytes_.push_back(static_cast<uint8_t>(type));
  // General flags: bit 3 _MAF (max fixed), bit 2 _MIF (min fixed), bit 1 _DEC
  // (0: positive decode), bit 0: 1 = consumer, 0 = producer and consumer.
  bytes_.push_back(static_cast<uint8_t>(0x0c | (producer ? 0x00 : 0x01)));
  bytes_.push_back(type_flags);
  PutLe(bytes_, 0, width);  // _GRA: 0, the range is fixed
  PutLe(bytes_, min, width);
  PutLe(bytes_, max, width);
  PutLe(bytes_, 0, width);  // _TRA
  PutLe(bytes_, max - min + 1, width);
}

ResourceTemplate& ResourceTemplate::WordBusNumber(bool producer, uint16_t min, uint16_t max) {
  AddressSpace(2, SpaceType::kBusNumber, producer, 0x00, min, max);
  return *this;
}

ResourceTemplate& ResourceTemplate::WordIo(bool producer, uint16_t min, uint16_t max) {
  // I/O type-specific flags: bits 1-0 _RNG = 3 (ISA and non-ISA ranges),
  // _TTP = 0 (type static), _TRS = 0.
  AddressSpace(2, SpaceType::kIo, producer, 0x03, min, max);
  return *this;
}

ResourceTemplate& ResourceTemplate::DWordMemory(bool producer, Cacheability cache,
                                                bool read_write, uint32_t min, uint32_t max) {
  // Memory type-specific flags: bit 0 _RW, bits 2-1 _MEM, bits 4-3 _MTP = 0
  // (AddressRangeMemory), bit 5 _TTP = 0.
  uint8_t flags = static_cast<uint8_t>((static_cast<uint8_t>(cache) << 1) | (read_write ? 1 : 0));
  AddressSpace(4, SpaceType::kMemory, producer, flags, min, max);
  return *this;
}

ResourceTemplate& ResourceTemplate::QWordMemory(bool producer, Cacheability cache,
                                                bool read_write, uint64_t min, uint64_t max) {
  uint8_t flags = static_cast<uint8_t>((static_cast<uint8_t>(cache) << 1) | (read_write ? 1 : 0));
  AddressSpace(8, SpaceType::kMemory, producer, flags, min, max);
  return *this;
}

Term ResourceTemplate::RawBytes() const {
  if (!status_.ok()) return status_;
  Bytes out = bytes_;
  // End Tag: small item 0x0f of 1 byte, tag 0x79; checksum 0 means "correct".
  out.push_back(0x79);
  out.push_back(0x00);
  return out;
}

Term ResourceTemplate::Build() const {
  Term raw = RawBytes();
  if (!raw.ok()) return raw.status();
  return Buffer(*raw);
}

}  // namespace hv::acpi::aml
