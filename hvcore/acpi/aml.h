// A small encoder for ACPI Machine Language (ACPI 6.3, chapter 20) and resource
// descriptors (chapter 6.4): enough to write hvcore's DSDT.
//
// Every encoder returns a Term: the encoded bytes, or the first error met while
// encoding it or any part of it (a bad name, an over-long package, ...). Parts are
// passed as Terms, so a whole tree is written as one expression and checked once:
//
//   Term dsdt = Scope("\\_SB", {Device("COM1", {Name("_HID", EisaId("PNP0501")), ...})});
//   if (!dsdt.ok()) return dsdt.status();
#ifndef HV_HVCORE_ACPI_AML_H_
#define HV_HVCORE_ACPI_AML_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace hv::acpi::aml {

using Bytes = std::vector<uint8_t>;
using Term = absl::StatusOr<Bytes>;

// Opcodes (ACPI 6.3, 20.3).
inline constexpr uint8_t kZeroOp = 0x00;
inline constexpr uint8_t kOneOp = 0x01;
inline constexpr uint8_t kNameOp = 0x08;
inline constexpr uint8_t kBytePrefix = 0x0a;
inline constexpr uint8_t kWordPrefix = 0x0b;
inline constexpr uint8_t kDWordPrefix = 0x0c;
inline constexpr uint8_t kStringPrefix = 0x0d;
inline constexpr uint8_t kQWordPrefix = 0x0e;
inline constexpr uint8_t kScopeOp = 0x10;
inline constexpr uint8_t kBufferOp = 0x11;
inline constexpr uint8_t kPackageOp = 0x12;
inline constexpr uint8_t kMethodOp = 0x14;
inline constexpr uint8_t kDualNamePrefix = 0x2e;
inline constexpr uint8_t kMultiNamePrefix = 0x2f;
inline constexpr uint8_t kExtOpPrefix = 0x5b;
inline constexpr uint8_t kDeviceOp = 0x82;  // after kExtOpPrefix
inline constexpr uint8_t kRootChar = 0x5c;  // '\'
inline constexpr uint8_t kParentPrefixChar = 0x5e;  // '^'
inline constexpr uint8_t kReturnOp = 0xa4;

// PkgLength (20.2.4) whose value is `value`: the value counts the PkgLength's own
// bytes and everything after it up to the end of the package. 1 byte up to 63,
// 2 up to 4095, 3 up to 2^20 - 1, 4 up to 2^28 - 1; larger is an error.
Term PkgLengthValue(uint32_t value);
// The PkgLength that precedes `content_length` bytes of content (it picks the
// shortest encoding that, counting itself, still fits).
Term PkgLengthFor(size_t content_length);

// One NameSeg: 1 to 4 characters, [A-Z_] then [A-Z0-9_], padded with '_'.
Term NameSeg(absl::string_view seg);
// A NameString (20.2.2): an optional leading '\' or any number of '^', then
// NameSegs separated by '.'. "\\_SB.PCI0", "^COM1", "_HID", "\\" (the root).
Term NameString(absl::string_view path);

// Data objects (20.2.3): the shortest of Zero, One, Byte, Word, DWord, QWord.
Term Integer(uint64_t value);
// A String: ASCII 0x01..0x7f, NUL-terminated in the encoding.
Term String(absl::string_view s);
// Buffer (BufferSize = bytes.size()) holding `bytes`.
Term Buffer(const Bytes& bytes);
// Package of up to 255 elements (each a data object or a NameString).
Term Package(const std::vector<Term>& elements);

// Name (name, value).
Term Name(absl::string_view name, const Term& value);
// Scope (name) { body }.
Term Scope(absl::string_view name, const std::vector<Term>& body);
// Device (name) { body }.
Term Device(absl::string_view name, const std::vector<Term>& body);
// Method (name, args, NotSerialized/Serialized) { body }.
Term Method(absl::string_view name, uint8_t args, bool serialized, const std::vector<Term>& body);
// Return (value).
Term Return(const Term& value);

// EISAID compression (6.1.5) of a PNP id "AAA####" (three letters A-Z, four
// upper-case hex digits), as the 32-bit value whose little-endian bytes are the
// compressed id. "PNP0A03" -> 0x030ad041.
absl::StatusOr<uint32_t> EisaIdValue(absl::string_view id);
// EisaId ("PNP0A03"): the DWord integer.
Term EisaId(absl::string_view id);
// True if `id` has the "AAA####" form that EisaId accepts.
bool IsEisaId(absl::string_view id);

// Concatenation of terms (a TermList), first error wins.
Term Concat(const std::vector<Term>& terms);

// Resource descriptors (6.4) for ResourceTemplate buffers.
class ResourceTemplate {
 public:
  // Address Space Resource Type (6.4.3.5.5).
  enum class SpaceType : uint8_t { kMemory = 0, kIo = 1, kBusNumber = 2 };
  // Memory resource flag _MEM (6.4.3.5.5, Table 6.50).
  enum class Cacheability : uint8_t {
    kNonCacheable = 0,
    kCacheable = 1,
    kWriteCombining = 2,
    kPrefetchable = 3,
  };

  // IO (Decode16, min, max, alignment, length): small item 0x47.
  ResourceTemplate& Io(uint16_t min, uint16_t max, uint8_t alignment, uint8_t length);
  // IRQNoFlags () { irqs }: the 2-byte IRQ descriptor (0x22): edge-triggered,
  // active high, exclusive. ISA IRQs 0..15.
  ResourceTemplate& IrqNoFlags(const std::vector<uint8_t>& irqs);
  // Memory32Fixed (ReadWrite or ReadOnly, base, length): large item 0x86.
  ResourceTemplate& Memory32Fixed(bool read_write, uint32_t base, uint32_t length);

  // Word/DWord/QWord Address Space descriptors (large items 0x88/0x87/0x8a)
  // covering [min, max], with _MIF and _MAF set, positive decode, granularity 0
  // and no translation. `producer` is ResourceProducer (a bridge window),
  // otherwise ResourceConsumer.
  ResourceTemplate& WordBusNumber(bool producer, uint16_t min, uint16_t max);
  ResourceTemplate& WordIo(bool producer, uint16_t min, uint16_t max);
  ResourceTemplate& DWordMemory(bool producer, Cacheability cache, bool read_write, uint32_t min,
                                uint32_t max);
  ResourceTemplate& QWordMemory(bool producer, Cacheability cache, bool read_write, uint64_t min,
                                uint64_t max);

  // The descriptors so far, ended by an End Tag (0x79) with checksum 0 ("the
  // checksum is correct by definition"), as a Buffer term.
  Term Build() const;
  // The same bytes, not wrapped in a Buffer.
  Term RawBytes() const;

 private:
  // Address space descriptor of `width` bytes per field (2, 4 or 8).
  void AddressSpace(int width, SpaceType type, bool producer, uint8_t type_flags, uint64_t min,
                    uint64_t max);
  void Fail(absl::Status status);

  Bytes bytes_;
  absl::Status status_;
};

}  // namespace hv::acpi::aml

#endif  // HV_HVCORE_ACPI_AML_H_
