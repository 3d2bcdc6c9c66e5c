// Finds where the fields of a Cap'n Proto text constant are written.
//
// capnp::SchemaParser parses a VM file (a text schema holding `const vm :Vm = (...);`)
// and yields the value, but not where each field is in the text. hvbroker validates
// the value afterwards and must report errors as `vm.capnp:9:5: devices[1].slot: ...`.
// CapnpTextLocator scans the text once (a tokenizer and a small recursive-descent
// parser for capnp value literals) and answers "where is field path P written?".
//
//   CapnpTextLocator loc(text, "vm");
//   TextLocation at = loc.Find("devices[1].slot");   // the `slot` of `slot = 3`
//
// It never fails hard: on text it can't follow it keeps what it indexed before the
// problem, and lookups of anything else fall back to the nearest enclosing thing it
// knows, then to the const, then to {0, 0}.
#ifndef HV_COMMON_CAPNP_TEXT_LOCATOR_H_
#define HV_COMMON_CAPNP_TEXT_LOCATOR_H_

#include <memory>
#include <string>
#include <string_view>

namespace hv {

// A position in the text: 1-based line and 1-based column, both counted as capnp's
// own error messages count them (the column is a byte offset in the line: a tab or
// each byte of a UTF-8 character counts 1). {0, 0} means unknown.
struct TextLocation {
  int line = 0;
  int column = 0;

  bool known() const { return line > 0; }
  friend bool operator==(const TextLocation& a, const TextLocation& b) {
    return a.line == b.line && a.column == b.column;
  }
  friend bool operator!=(const TextLocation& a, const TextLocation& b) { return !(a == b); }
};

class CapnpTextLocator {
 public:
  // Scans `text` for the top-level declaration `const <const_name> :<Type> = <value>`
  // (other declarations and other constants are skipped) and indexes every field
  // assignment and list element of the value. Never fails: on text it can't scan
  // (truncated, garbage) it stops indexing at that point.
  CapnpTextLocator(std::string text, std::string const_name);

  // Where the field at `path` is written. Paths are field names joined by `.` with
  // `[i]` list indexes: "name", "boot.kernel", "devices[1].slot",
  // "devices[1].options[0].key", "lpc.com2.socket" (a union member is a field).
  //   - A field is located at its name (the `slot` of `slot = 3`).
  //   - A list element ("devices[2]") is located at the start of its value (the `(`
  //     of a struct element, the `"` of a string, the `-` of `-1`).
  //   - If the path isn't written in the text (a default, an index past the end, a
  //     field of a value given as a reference to another constant, a malformed path)
  //     the result is the location of the longest written prefix of the path, e.g.
  //     "devices[1].function" -> "devices[1]"; if none of it is written,
  //     ConstLocation(). The empty path is ConstLocation().
  TextLocation Find(std::string_view path) const;

  // Where the `const` keyword of the named constant is; {0, 0} if it wasn't found.
  TextLocation ConstLocation() const;

  // True if the constant was found and its whole value scanned. False means some
  // lookups may fall back further than necessary (the text was truncated, or held
  // something the scanner doesn't understand). For tests and diagnostics.
  bool complete() const;

 private:
  struct Index;                         // the scanned tree; defined in the .cc
  std::shared_ptr<const Index> index_;  // immutable, so copies share it; null once moved from
};

}  // namespace hv

#endif  // HV_COMMON_CAPNP_TEXT_LOCATOR_H_
