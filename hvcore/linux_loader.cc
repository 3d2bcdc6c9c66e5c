#include "hvcore/linux_loader.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_format.h"
#include "common/fd.h"
#include "hvcore/boot_layout.h"

namespace hv {
namespace {

// Offsets in the zero page (struct boot_params) and its setup header.
constexpr size_t kZeroPageSize = 4096;
constexpr size_t kAcpiRsdpAddr = 0x070;
constexpr size_t kExtRamdiskImage = 0x0c0;
constexpr size_t kExtRamdiskSize = 0x0c4;
constexpr size_t kExtCmdLinePtr = 0x0c8;
constexpr size_t kE820Entries = 0x1e8;
constexpr size_t kSetupHeader = 0x1f1;
constexpr size_t kSetupSects = 0x1f1;
constexpr size_t kBootFlag = 0x1fe;
constexpr size_t kJump = 0x200;
constexpr size_t kHeaderMagic = 0x202;
constexpr size_t kVersion = 0x206;
constexpr size_t kTypeOfLoader = 0x210;
constexpr size_t kLoadFlags = 0x211;
constexpr size_t kRamdiskImage = 0x218;
constexpr size_t kRamdiskSize = 0x21c;
constexpr size_t kCmdLinePtr = 0x228;
constexpr size_t kInitrdAddrMax = 0x22c;
constexpr size_t kXloadflags = 0x236;
constexpr size_t kCmdlineSize = 0x238;
constexpr size_t kInitSize = 0x260;
constexpr size_t kE820Table = 0x2d0;
constexpr size_t kE820Max = 128;

constexpr uint32_t kHdrS = 0x53726448;
constexpr uint16_t kMinVersion = 0x020c;  // 2.12: xloadflags, the 64-bit entry
constexpr uint16_t kXlfKernel64 = 1 << 0;
constexpr uint8_t kLoadedHigh = 1 << 0;
constexpr uint8_t kCanUseHeap = 1 << 7;

// Low-memory pieces of this boot path (see boot_layout.h for the shared ones).
constexpr uint64_t kGdt = 0x500;
constexpr uint64_t kZeroPage = 0x8000;
constexpr uint64_t kPml4 = 0x9000;
constexpr uint64_t kPdpt = 0xa000;
constexpr uint64_t kPageDirs = 0xb000;  // four, for 4 GiB of 2 MiB pages

template <typename T>
T Get(const std::vector<uint8_t>& b, size_t off) {
  T v;
  memcpy(&v, &b[off], sizeof(T));
  return v;
}
template <typename T>
void Put(std::vector<uint8_t>& b, size_t off, T v) {
  memcpy(&b[off], &v, sizeof(T));
}

absl::Status BuildPageTables(const GuestMemory& mem) {
  std::vector<uint64_t> pml4(512, 0), pdpt(512, 0), pd(4 * 512);
  pml4[0] = kPdpt | 0x3;  // present, writable
  for (int i = 0; i < 4; ++i) pdpt[i] = (kPageDirs + i * 0x1000) | 0x3;
  for (uint64_t i = 0; i < pd.size(); ++i) pd[i] = (i << 21) | 0x83;  // present, writable, 2 MiB
  if (auto s = mem.Write(kPml4, pml4.data(), 4096); !s.ok()) return s;
  if (auto s = mem.Write(kPdpt, pdpt.data(), 4096); !s.ok()) return s;
  return mem.Write(kPageDirs, pd.data(), pd.size() * 8);
}

}  // namespace

bool LooksLikeBzImage(const uint8_t* header, size_t len) {
  if (len < kHeaderMagic + 4) return false;
  uint32_t magic;
  memcpy(&magic, header + kHeaderMagic, 4);
  return magic == kHdrS;
}

absl::StatusOr<LinuxBoot> LoadLinux(const GuestMemory& mem, int kernel_fd, int initrd_fd,
                                    const std::string& cmdline, const std::vector<E820Entry>& map,
                                    uint64_t rsdp) {
  struct stat st;
  if (fstat(kernel_fd, &st) != 0) return ErrnoStatus("fstat kernel");
  uint64_t file_size = st.st_size;
  if (file_size < 1024) return absl::InvalidArgumentError("bzImage: file too small");
  std::vector<uint8_t> head(std::min<uint64_t>(file_size, 64 * 1024));
  if (auto s = PreadFull(kernel_fd, head.data(), head.size(), 0); !s.ok()) return s;
  if (Get<uint32_t>(head, kHeaderMagic) != kHdrS || Get<uint16_t>(head, kBootFlag) != 0xaa55) {
    return absl::InvalidArgumentError("not a Linux bzImage (no HdrS header)");
  }
  uint16_t version = Get<uint16_t>(head, kVersion);
  if (version < kMinVersion) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "bzImage boot protocol %d.%02d is too old (need 2.12 for the 64-bit entry)", version >> 8,
        version & 0xff));
  }
  if (!(Get<uint16_t>(head, kXloadflags) & kXlfKernel64)) {
    return absl::InvalidArgumentError("bzImage has no 64-bit entry point (XLF_KERNEL_64)");
  }
  uint32_t setup_sects = head[kSetupSects] == 0 ? 4 : head[kSetupSects];
  uint64_t setup_bytes = (setup_sects + 1) * 512ull;
  if (setup_bytes >= file_size) return absl::InvalidArgumentError("bzImage: setup is the whole file");
  uint64_t kernel_bytes = file_size - setup_bytes;
  uint32_t init_size = Get<uint32_t>(head, kInitSize);
  uint64_t load_at = boot::kHighMemory;
  uint64_t needed = std::max<uint64_t>(kernel_bytes, init_size);
  auto dst = mem.Translate(load_at, needed);
  if (!dst.ok()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the kernel needs %d MiB from 1 MiB up; give the VM more memory", (needed >> 20) + 1));
  }
  if (auto s = PreadFull(kernel_fd, *dst, kernel_bytes, setup_bytes); !s.ok()) return s;

  // The zero page: the file's setup header, then what the loader fills in.
  std::vector<uint8_t> zp(kZeroPageSize, 0);
  size_t header_end = kJump + 2 + head[kJump + 1];  // the jump's target ends the header
  header_end = std::min<size_t>(header_end, 0x290);
  memcpy(&zp[kSetupHeader], &head[kSetupHeader], header_end - kSetupHeader);
  zp[kTypeOfLoader] = 0xff;  // "undefined" boot loader
  zp[kLoadFlags] = (zp[kLoadFlags] | kLoadedHigh | kCanUseHeap);

  uint32_t max_cmdline = Get<uint32_t>(head, kCmdlineSize);
  if (max_cmdline == 0) max_cmdline = 255;
  if (cmdline.size() > max_cmdline || cmdline.size() + 1 > boot::kCmdlineMax) {
    return absl::InvalidArgumentError(
        absl::StrFormat("command line of %d bytes; this kernel takes at most %d", cmdline.size(),
                        std::min<uint64_t>(max_cmdline, boot::kCmdlineMax - 1)));
  }
  if (auto s = mem.Write(boot::kCmdline, cmdline.c_str(), cmdline.size() + 1); !s.ok()) return s;
  Put<uint32_t>(zp, kCmdLinePtr, boot::kCmdline);
  Put<uint32_t>(zp, kExtCmdLinePtr, 0);

  if (initrd_fd >= 0) {
    struct stat ist;
    if (fstat(initrd_fd, &ist) != 0) return ErrnoStatus("fstat initrd");
    uint64_t size = ist.st_size;
    uint64_t low_end = mem.regions()[0].gpa + mem.regions()[0].size;
    uint64_t limit = std::min<uint64_t>(low_end, uint64_t{Get<uint32_t>(head, kInitrdAddrMax)} + 1);
    uint64_t kernel_end = load_at + needed;
    if (size > limit || ((limit - size) & ~uint64_t{0xfff}) < kernel_end) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "initrd of %d MiB does not fit between the kernel and %#x; give the VM more memory",
          size >> 20, limit));
    }
    uint64_t at = (limit - size) & ~uint64_t{0xfff};
    auto idst = mem.Translate(at, size);
    if (!idst.ok()) return idst.status();
    if (auto s = PreadFull(initrd_fd, *idst, size, 0); !s.ok()) return s;
    Put<uint32_t>(zp, kRamdiskImage, static_cast<uint32_t>(at));
    Put<uint32_t>(zp, kRamdiskSize, static_cast<uint32_t>(size));
    Put<uint32_t>(zp, kExtRamdiskImage, static_cast<uint32_t>(at >> 32));
    Put<uint32_t>(zp, kExtRamdiskSize, static_cast<uint32_t>(size >> 32));
  }

  if (map.size() > kE820Max) return absl::InternalError("memory map too long");
  zp[kE820Entries] = map.size();
  for (size_t i = 0; i < map.size(); ++i) {
    size_t at = kE820Table + i * 20;
    Put<uint64_t>(zp, at, map[i].addr);
    Put<uint64_t>(zp, at + 8, map[i].size);
    Put<uint32_t>(zp, at + 16, static_cast<uint32_t>(map[i].type));
  }
  Put<uint64_t>(zp, kAcpiRsdpAddr, rsdp);
  if (auto s = mem.Write(kZeroPage, zp.data(), zp.size()); !s.ok()) return s;

  // 64-bit entry state: the GDT and identity-mapped page tables the protocol asks for.
  const uint64_t gdt[4] = {0, 0, 0x00af9b000000ffffull, 0x00cf93000000ffffull};
  if (auto s = mem.Write(kGdt, gdt, sizeof(gdt)); !s.ok()) return s;
  if (auto s = BuildPageTables(mem); !s.ok()) return s;
  return LinuxBoot{load_at + 0x200, kZeroPage, kPml4, kGdt, sizeof(gdt) - 1};
}

}  // namespace hv
