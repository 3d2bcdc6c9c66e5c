#include "devproc/ahci/ahci_options.h"

#include <algorithm>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace hv::ahci {
namespace {

bool Printable(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c >= 0x20 && c < 0x7f; });
}

absl::Status ParseFlag(const std::string& key, const std::string& value, bool* out) {
  if (value.empty() || value == "on" || value == "true" || value == "yes" || value == "1") {
    *out = true;
    return absl::OkStatus();
  }
  if (value == "off" || value == "false" || value == "no" || value == "0") {
    *out = false;
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(key, "=", value, ": expected on or off"));
}

bool ValidSectorSize(uint32_t n) { return n >= 512 && n <= 65536 && (n & (n - 1)) == 0; }

absl::Status ParseText(const std::string& key, const std::string& value, size_t max,
                       std::string* out) {
  if (value.size() > max) {
    return absl::InvalidArgumentError(
        absl::StrCat(key, "=", value, ": ", value.size(), " bytes; at most ", max));
  }
  if (!Printable(value)) {
    return absl::InvalidArgumentError(absl::StrCat(key, "=", value, ": must be printable ASCII"));
  }
  *out = value;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<AhciPortOptions> ParseAhciPortOptions(
    bool cdrom, const std::vector<std::pair<std::string, std::string>>& options) {
  AhciPortOptions o;
  o.cdrom = cdrom;
  o.read_only = cdrom;
  std::set<std::string> seen;
  for (const auto& [key, value] : options) {
    std::string canonical = key == "sync" ? "direct" : key == "serial" ? "ser" : key;
    if (!seen.insert(canonical).second) {
      return absl::InvalidArgumentError(absl::StrCat("option '", key, "' is given twice"));
    }
    absl::Status s;
    if (canonical == "ro") {
      s = ParseFlag(key, value, &o.read_only);
      if (s.ok() && cdrom && !o.read_only) {
        s = absl::InvalidArgumentError("ro=off: a CD-ROM is always read-only");
      }
    } else if (canonical == "nocache") {
      s = ParseFlag(key, value, &o.no_cache);
    } else if (canonical == "direct") {
      s = ParseFlag(key, value, &o.sync_writes);
    } else if (canonical == "nodelete") {
      s = ParseFlag(key, value, &o.no_delete);
    } else if (canonical == "sectorsize") {
      std::vector<std::string> parts = absl::StrSplit(value, '/');
      uint32_t logical = 0, physical = 0;
      bool ok = parts.size() <= 2 && absl::SimpleAtoi(parts[0], &logical) &&
                ValidSectorSize(logical);
      if (ok && parts.size() == 2) {
        ok = absl::SimpleAtoi(parts[1], &physical) && ValidSectorSize(physical) &&
             physical >= logical;
      }
      if (!ok) {
        s = absl::InvalidArgumentError(absl::StrCat(
            "sectorsize=", value,
            ": want LOGICAL[/PHYSICAL], powers of two from 512 to 65536, physical >= logical"));
      } else if (cdrom) {
        s = absl::InvalidArgumentError("sectorsize: a CD-ROM has 2048-byte sectors");
      } else {
        o.logical_sector_size = logical;
        o.physical_sector_size = physical;
      }
    } else if (canonical == "ser") {
      s = ParseText(key, value, 20, &o.serial);
    } else if (canonical == "model") {
      s = ParseText(key, value, 40, &o.model);
    } else if (canonical == "rev") {
      s = ParseText(key, value, 8, &o.revision);
    } else if (canonical == "nmrr") {
      uint32_t rate = 0;
      if (!absl::SimpleAtoi(value, &rate) || rate > 0xfffe) {
        s = absl::InvalidArgumentError(
            absl::StrCat("nmrr=", value, ": want 0 (not reported), 1 (solid state) or an RPM"));
      } else {
        o.rotation_rate = rate;
      }
    } else {
      s = absl::InvalidArgumentError(absl::StrCat(
          "unknown ahci port option '", key,
          "' (known: ro, nocache, direct, sync, nodelete, sectorsize, ser, model, rev, nmrr)"));
    }
    if (!s.ok()) return s;
  }
  return o;
}

std::string DefaultAhciSerial(std::string_view path, int port) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a
  for (unsigned char c : path) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return absl::StrFormat("HV%02d-%04X-%04X-%04X", port, (h >> 32) & 0xffff, (h >> 16) & 0xffff,
                         h & 0xffff);
}

}  // namespace hv::ahci
