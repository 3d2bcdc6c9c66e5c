// bhyve's AHCI port options (`-s N,ahci,hd:PATH,opt,...`, `ahci-hd`, `ahci-cd`):
// parsed once here for the broker (which opens the file) and the device (which
// builds IDENTIFY data from them).
#ifndef HV_DEVPROC_AHCI_AHCI_OPTIONS_H_
#define HV_DEVPROC_AHCI_AHCI_OPTIONS_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace hv::ahci {

inline constexpr int kMaxPorts = 32;

struct AhciPortOptions {
  bool cdrom = false;
  bool read_only = false;    // ro (always for a CD)
  bool no_cache = false;     // nocache: the broker opens with O_DIRECT
  bool sync_writes = false;  // direct / sync: the broker opens with O_DSYNC
  bool no_delete = false;    // nodelete: no TRIM
  uint32_t logical_sector_size = 0;   // sectorsize=L[/P]; 0: 512
  uint32_t physical_sector_size = 0;  // 0: the logical size
  std::string serial;        // ser= (20 bytes at most); empty: derived from the path
  std::string model;         // model= (40 bytes at most)
  std::string revision;      // rev= (8 bytes at most)
  uint16_t rotation_rate = 0;  // nmrr=: IDENTIFY word 217 (1: solid state)
};

// `options` as key/value pairs ("ro" has an empty value). Errors name the option.
absl::StatusOr<AhciPortOptions> ParseAhciPortOptions(
    bool cdrom, const std::vector<std::pair<std::string, std::string>>& options);

// A stable 20-byte-or-less serial for a port whose ser= is not given.
std::string DefaultAhciSerial(std::string_view path, int port);

}  // namespace hv::ahci

#endif  // HV_DEVPROC_AHCI_AHCI_OPTIONS_H_
