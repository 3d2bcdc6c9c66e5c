#include "hvcore/pvh_loader.h"

#include <elf.h>
#include <sys/stat.h>

#include <cstring>

#include "absl/strings/str_format.h"
#include "common/fd.h"
#include "hvcore/boot_layout.h"

namespace hv {
namespace {

constexpr uint32_t kXenElfnotePhys32Entry = 18;

// Layouts from Xen's public/arch-x86/hvm/start_info.h (version 1).
struct HvmStartInfo {
  uint32_t magic;
  uint32_t version;
  uint32_t flags;
  uint32_t nr_modules;
  uint64_t modlist_paddr;
  uint64_t cmdline_paddr;
  uint64_t rsdp_paddr;
  uint64_t memmap_paddr;
  uint32_t memmap_entries;
  uint32_t reserved;
};
struct HvmModlistEntry {
  uint64_t paddr;
  uint64_t size;
  uint64_t cmdline_paddr;
  uint64_t reserved;
};
struct HvmMemmapEntry {
  uint64_t addr;
  uint64_t size;
  uint32_t type;
  uint32_t reserved;
};
static_assert(sizeof(HvmStartInfo) == 56 && sizeof(HvmMemmapEntry) == 24);

absl::StatusOr<uint64_t> FileSize(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) return ErrnoStatus("fstat");
  return st.st_size;
}

// Finds the PHYS32_ENTRY note in a note segment's bytes.
bool FindPvhEntry(const std::vector<uint8_t>& notes, uint32_t* entry) {
  size_t pos = 0;
  auto align4 = [](uint64_t v) { return (v + 3) & ~uint64_t{3}; };
  while (pos + 12 <= notes.size()) {
    uint32_t namesz, descsz, type;
    memcpy(&namesz, &notes[pos], 4);
    memcpy(&descsz, &notes[pos + 4], 4);
    memcpy(&type, &notes[pos + 8], 4);
    uint64_t name_at = pos + 12;
    uint64_t desc_at = name_at + align4(namesz);
    uint64_t next = desc_at + align4(descsz);
    if (next > notes.size()) return false;
    if (type == kXenElfnotePhys32Entry && namesz == 4 && memcmp(&notes[name_at], "Xen", 4) == 0 &&
        (descsz == 4 || descsz == 8)) {
      memcpy(entry, &notes[desc_at], 4);  // little-endian: the low 32 bits either way
      return true;
    }
    pos = next;
  }
  return false;
}

template <typename Ehdr, typename Phdr>
absl::StatusOr<uint32_t> LoadElfSegments(const GuestMemory& mem, int fd, uint64_t file_size) {
  Ehdr eh;
  if (auto s = PreadFull(fd, &eh, sizeof(eh), 0); !s.ok()) return s;
  if (eh.e_machine != EM_X86_64 && eh.e_machine != EM_386) {
    return absl::InvalidArgumentError("ELF kernel is not for x86");
  }
  if (eh.e_phentsize != sizeof(Phdr) || eh.e_phnum == 0 || eh.e_phnum > 64) {
    return absl::InvalidArgumentError("ELF kernel has a bad program header table");
  }
  bool found_entry = false;
  uint32_t entry = 0;
  for (int i = 0; i < eh.e_phnum; ++i) {
    Phdr ph;
    if (auto s = PreadFull(fd, &ph, sizeof(ph), eh.e_phoff + i * sizeof(Phdr)); !s.ok()) return s;
    if (ph.p_offset > file_size || ph.p_filesz > file_size - ph.p_offset) {
      return absl::InvalidArgumentError(absl::StrFormat("ELF segment %d lies outside the file", i));
    }
    if (ph.p_type == PT_LOAD) {
      if (ph.p_filesz > ph.p_memsz) {
        return absl::InvalidArgumentError(absl::StrFormat("ELF segment %d: filesz > memsz", i));
      }
      auto dst = mem.Translate(ph.p_paddr, ph.p_memsz);
      if (!dst.ok()) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "ELF segment %d at %#x (+%#x) does not fit guest RAM", i, ph.p_paddr, ph.p_memsz));
      }
      if (auto s = PreadFull(fd, *dst, ph.p_filesz, ph.p_offset); !s.ok()) return s;
      memset(*dst + ph.p_filesz, 0, ph.p_memsz - ph.p_filesz);
    } else if (ph.p_type == PT_NOTE && !found_entry && ph.p_filesz <= (1 << 20)) {
      std::vector<uint8_t> notes(ph.p_filesz);
      if (auto s = PreadFull(fd, notes.data(), notes.size(), ph.p_offset); !s.ok()) return s;
      found_entry = FindPvhEntry(notes, &entry);
    }
  }
  if (!found_entry) {
    return absl::InvalidArgumentError(
        "ELF kernel has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); is it built for PVH?");
  }
  return entry;
}

}  // namespace

bool LooksLikeElf(const uint8_t* header, size_t len) {
  return len >= SELFMAG && memcmp(header, ELFMAG, SELFMAG) == 0;
}

absl::StatusOr<PvhBoot> LoadPvh(const GuestMemory& mem, int kernel_fd, int initrd_fd,
                                const std::string& cmdline, const std::vector<E820Entry>& map,
                                uint64_t rsdp) {
  auto size = FileSize(kernel_fd);
  if (!size.ok()) return size.status();
  unsigned char ident[EI_NIDENT];
  if (auto s = PreadFull(kernel_fd, ident, sizeof(ident), 0); !s.ok()) return s;
  if (!LooksLikeElf(ident, sizeof(ident))) return absl::InvalidArgumentError("not an ELF file");
  absl::StatusOr<uint32_t> entry;
  if (ident[EI_CLASS] == ELFCLASS64) {
    entry = LoadElfSegments<Elf64_Ehdr, Elf64_Phdr>(mem, kernel_fd, *size);
  } else if (ident[EI_CLASS] == ELFCLASS32) {
    entry = LoadElfSegments<Elf32_Ehdr, Elf32_Phdr>(mem, kernel_fd, *size);
  } else {
    return absl::InvalidArgumentError("unknown ELF class");
  }
  if (!entry.ok()) return entry.status();

  HvmStartInfo info = {};
  info.magic = kPvhStartInfoMagic;
  info.version = 1;
  info.rsdp_paddr = rsdp;

  if (cmdline.size() + 1 > boot::kCmdlineMax) {
    return absl::InvalidArgumentError(
        absl::StrFormat("command line of %d bytes is longer than %d", cmdline.size(),
                        boot::kCmdlineMax - 1));
  }
  if (auto s = mem.Write(boot::kCmdline, cmdline.c_str(), cmdline.size() + 1); !s.ok()) return s;
  info.cmdline_paddr = boot::kCmdline;

  if (map.size() > boot::kMemMapMax) return absl::InternalError("memory map too long");
  std::vector<HvmMemmapEntry> table;
  for (const auto& e : map) table.push_back({e.addr, e.size, static_cast<uint32_t>(e.type), 0});
  if (auto s = mem.Write(boot::kMemMap, table.data(), table.size() * sizeof(table[0])); !s.ok()) {
    return s;
  }
  info.memmap_paddr = boot::kMemMap;
  info.memmap_entries = table.size();

  if (initrd_fd >= 0) {
    auto initrd_size = FileSize(initrd_fd);
    if (!initrd_size.ok()) return initrd_size.status();
    // Top of the first RAM region, page aligned, below the PCI hole.
    uint64_t top = mem.regions()[0].gpa + mem.regions()[0].size;
    if (*initrd_size + boot::kHighMemory + (16 << 20) > top) {
      return absl::InvalidArgumentError("initrd does not fit in guest RAM below 3 GiB");
    }
    uint64_t at = (top - *initrd_size) & ~uint64_t{0xfff};
    auto dst = mem.Translate(at, *initrd_size);
    if (!dst.ok()) return dst.status();
    if (auto s = PreadFull(initrd_fd, *dst, *initrd_size, 0); !s.ok()) return s;
    HvmModlistEntry module = {at, *initrd_size, 0, 0};
    if (auto s = mem.Write(boot::kModList, &module, sizeof(module)); !s.ok()) return s;
    info.nr_modules = 1;
    info.modlist_paddr = boot::kModList;
  }
  if (auto s = mem.Write(boot::kStartInfo, &info, sizeof(info)); !s.ok()) return s;
  return PvhBoot{*entry, boot::kStartInfo};
}

}  // namespace hv
