#include "kdriver/kvm.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <cerrno>
#include <algorithm>
#include <cstddef>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace hv::kvm {
namespace {

absl::Status IoctlStatus(const char* name, int result) {
  if (result >= 0) return absl::OkStatus();
  return ErrnoStatus(name, errno);
}

#define HV_IOCTL(fd, request, ...) IoctlStatus(#request, ioctl(fd, request, ##__VA_ARGS__))

// <linux/kvm.h> declares the variable-length tables (kvm_cpuid2, kvm_msrs,
// kvm_irq_routing) with __DECLARE_FLEX_ARRAY, which in C++ puts a one-byte empty
// struct before the array: g++ sees `entries` at offset 12 or 16 instead of 8 and
// computes the ioctl numbers from the wrong sizeof. So these tables are laid out
// here by hand as the kernel (a C program) sees them: an 8-byte header, then the
// entries; and the ioctl numbers are computed from that header.
struct TableHeader {
  uint32_t count;    // nent / nmsrs / nr
  uint32_t padding;  // padding / pad / flags
};
static_assert(sizeof(TableHeader) == 8);
#undef KVM_GET_SUPPORTED_CPUID
#undef KVM_SET_CPUID2
#undef KVM_SET_MSRS
#undef KVM_SET_GSI_ROUTING
#define KVM_GET_SUPPORTED_CPUID _IOWR(KVMIO, 0x05, TableHeader)
#define KVM_SET_CPUID2 _IOW(KVMIO, 0x90, TableHeader)
#define KVM_SET_MSRS _IOW(KVMIO, 0x89, TableHeader)
#define KVM_SET_GSI_ROUTING _IOW(KVMIO, 0x6a, TableHeader)

}  // namespace

unsigned long SetGsiRoutingIoctlNumber() { return KVM_SET_GSI_ROUTING; }

namespace {

// An 8-byte header followed by `count` entries, 8-byte aligned.
template <typename Entry>
class KernelTable {
 public:
  explicit KernelTable(size_t count)
      : words_((sizeof(TableHeader) + count * sizeof(Entry) + 7) / 8, 0) {
    header()->count = count;
  }
  TableHeader* header() { return reinterpret_cast<TableHeader*>(words_.data()); }
  Entry* entries() { return reinterpret_cast<Entry*>(words_.data() + 1); }
  void* data() { return words_.data(); }

 private:
  std::vector<uint64_t> words_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Kvm>> Kvm::Open(const char* path) {
  int fd = open(path, O_RDWR | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(absl::StrCat("open ", path));
  return Adopt(Fd(fd));
}

absl::StatusOr<std::unique_ptr<Kvm>> Kvm::Adopt(Fd fd) {
  int version = ioctl(fd.get(), KVM_GET_API_VERSION, 0);
  if (version != KVM_API_VERSION) {
    return absl::FailedPreconditionError(
        absl::StrCat("/dev/kvm: KVM API version ", version, ", need ", KVM_API_VERSION));
  }
  return std::unique_ptr<Kvm>(new Kvm(std::move(fd)));
}

int Kvm::CheckExtension(int capability) const {
  int r = ioctl(fd_.get(), KVM_CHECK_EXTENSION, capability);
  return r < 0 ? 0 : r;
}

absl::Status Kvm::RequireExtensions(
    const std::vector<std::pair<int, const char*>>& capabilities) const {
  std::string missing;
  for (const auto& [cap, name] : capabilities) {
    if (CheckExtension(cap) == 0) absl::StrAppend(&missing, missing.empty() ? "" : ", ", name);
  }
  if (missing.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat("KVM lacks capabilities: ", missing));
}

absl::StatusOr<int> Kvm::VcpuMmapSize() const {
  int size = ioctl(fd_.get(), KVM_GET_VCPU_MMAP_SIZE, 0);
  if (size < 0) return ErrnoStatus("KVM_GET_VCPU_MMAP_SIZE");
  return size;
}

absl::StatusOr<std::vector<kvm_cpuid_entry2>> Kvm::SupportedCpuid() const {
  for (uint32_t n = 64; n <= 4096; n *= 2) {
    KernelTable<kvm_cpuid_entry2> table(n);
    if (ioctl(fd_.get(), KVM_GET_SUPPORTED_CPUID, table.data()) == 0) {
      uint32_t got = std::min(table.header()->count, n);
      return std::vector<kvm_cpuid_entry2>(table.entries(), table.entries() + got);
    }
    if (errno != E2BIG) return ErrnoStatus("KVM_GET_SUPPORTED_CPUID");
  }
  return absl::InternalError("KVM_GET_SUPPORTED_CPUID: too many entries");
}

absl::StatusOr<std::unique_ptr<Vm>> Kvm::CreateVm() const {
  int fd = ioctl(fd_.get(), KVM_CREATE_VM, 0);
  if (fd < 0) return ErrnoStatus("KVM_CREATE_VM");
  return std::unique_ptr<Vm>(new Vm(Fd(fd)));
}

absl::Status Vm::SetUserMemoryRegion(uint32_t slot, uint64_t gpa, uint64_t size, void* host,
                                     uint32_t flags) {
  kvm_userspace_memory_region region = {};
  region.slot = slot;
  region.flags = flags;
  region.guest_phys_addr = gpa;
  region.memory_size = size;
  region.userspace_addr = reinterpret_cast<uint64_t>(host);
  return HV_IOCTL(fd_.get(), KVM_SET_USER_MEMORY_REGION, &region);
}

absl::Status Vm::SetTssAddr(uint64_t gpa) {
  return HV_IOCTL(fd_.get(), KVM_SET_TSS_ADDR, static_cast<unsigned long>(gpa));
}

absl::Status Vm::SetIdentityMapAddr(uint64_t gpa) {
  return HV_IOCTL(fd_.get(), KVM_SET_IDENTITY_MAP_ADDR, &gpa);
}

absl::Status Vm::CreateIrqchip() { return HV_IOCTL(fd_.get(), KVM_CREATE_IRQCHIP, 0); }

absl::Status Vm::CreatePit2() {
  kvm_pit_config config = {};
  config.flags = 0;  // the kernel also emulates port 0x61 (PIT channel 2 gate, speaker)
  return HV_IOCTL(fd_.get(), KVM_CREATE_PIT2, &config);
}

absl::Status Vm::SetIrqLine(uint32_t gsi, bool level) {
  kvm_irq_level irq = {};
  irq.irq = gsi;
  irq.level = level ? 1 : 0;
  return HV_IOCTL(fd_.get(), KVM_IRQ_LINE, &irq);
}

absl::Status Vm::SetGsiRouting(const std::vector<GsiRoute>& routes) {
  KernelTable<kvm_irq_routing_entry> table(routes.size());
  for (size_t i = 0; i < routes.size(); ++i) {
    kvm_irq_routing_entry& e = table.entries()[i];
    e.gsi = routes[i].gsi;
    if (routes[i].kind == GsiRoute::Kind::kIrqchip) {
      e.type = KVM_IRQ_ROUTING_IRQCHIP;
      e.u.irqchip.irqchip = routes[i].irqchip;
      e.u.irqchip.pin = routes[i].pin;
    } else {
      e.type = KVM_IRQ_ROUTING_MSI;
      e.u.msi.address_lo = static_cast<uint32_t>(routes[i].msi_address);
      e.u.msi.address_hi = static_cast<uint32_t>(routes[i].msi_address >> 32);
      e.u.msi.data = routes[i].msi_data;
    }
  }
  return HV_IOCTL(fd_.get(), KVM_SET_GSI_ROUTING, table.data());
}

absl::Status Vm::SignalMsi(uint64_t address, uint32_t data) {
  kvm_msi msi = {};
  msi.address_lo = static_cast<uint32_t>(address);
  msi.address_hi = static_cast<uint32_t>(address >> 32);
  msi.data = data;
  int r = ioctl(fd_.get(), KVM_SIGNAL_MSI, &msi);
  return IoctlStatus("KVM_SIGNAL_MSI", r);
}

absl::Status Vm::AssignIrqfd(int fd, uint32_t gsi, int resample_fd) {
  kvm_irqfd irqfd = {};
  irqfd.fd = fd;
  irqfd.gsi = gsi;
  if (resample_fd >= 0) {
    irqfd.flags = KVM_IRQFD_FLAG_RESAMPLE;
    irqfd.resamplefd = resample_fd;
  }
  return HV_IOCTL(fd_.get(), KVM_IRQFD, &irqfd);
}

absl::Status Vm::DeassignIrqfd(int fd, uint32_t gsi) {
  kvm_irqfd irqfd = {};
  irqfd.fd = fd;
  irqfd.gsi = gsi;
  irqfd.flags = KVM_IRQFD_FLAG_DEASSIGN;
  return HV_IOCTL(fd_.get(), KVM_IRQFD, &irqfd);
}

absl::Status Vm::AssignIoeventfd(int fd, uint64_t addr, uint32_t length, bool pio) {
  kvm_ioeventfd e = {};
  e.fd = fd;
  e.addr = addr;
  e.len = length;
  e.flags = pio ? KVM_IOEVENTFD_FLAG_PIO : 0;
  return HV_IOCTL(fd_.get(), KVM_IOEVENTFD, &e);
}

absl::Status Vm::DeassignIoeventfd(int fd, uint64_t addr, uint32_t length, bool pio) {
  kvm_ioeventfd e = {};
  e.fd = fd;
  e.addr = addr;
  e.len = length;
  e.flags = (pio ? KVM_IOEVENTFD_FLAG_PIO : 0) | KVM_IOEVENTFD_FLAG_DEASSIGN;
  return HV_IOCTL(fd_.get(), KVM_IOEVENTFD, &e);
}

absl::Status Vm::EnableCapability(uint32_t capability, uint64_t arg0) {
  kvm_enable_cap cap = {};
  cap.cap = capability;
  cap.args[0] = arg0;
  return HV_IOCTL(fd_.get(), KVM_ENABLE_CAP, &cap);
}

absl::StatusOr<std::unique_ptr<Vcpu>> Vm::CreateVcpu(uint32_t id, int mmap_size) {
  int fd = ioctl(fd_.get(), KVM_CREATE_VCPU, static_cast<unsigned long>(id));
  if (fd < 0) return ErrnoStatus(absl::StrCat("KVM_CREATE_VCPU ", id));
  Fd owned(fd);
  void* run = mmap(nullptr, mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (run == MAP_FAILED) return ErrnoStatus("mmap kvm_run");
  return std::unique_ptr<Vcpu>(
      new Vcpu(std::move(owned), id, static_cast<kvm_run*>(run), mmap_size));
}

Vcpu::~Vcpu() { munmap(run_, mmap_size_); }

absl::Status Vcpu::Run() {
  if (ioctl(fd_.get(), KVM_RUN, 0) == 0) return absl::OkStatus();
  if (errno == EINTR || errno == EAGAIN) return absl::CancelledError("KVM_RUN interrupted");
  return ErrnoStatus("KVM_RUN");
}

absl::StatusOr<kvm_regs> Vcpu::GetRegs() const {
  kvm_regs regs;
  if (ioctl(fd_.get(), KVM_GET_REGS, &regs) < 0) return ErrnoStatus("KVM_GET_REGS");
  return regs;
}

absl::Status Vcpu::SetRegs(const kvm_regs& regs) {
  return HV_IOCTL(fd_.get(), KVM_SET_REGS, &regs);
}

absl::StatusOr<kvm_sregs> Vcpu::GetSregs() const {
  kvm_sregs sregs;
  if (ioctl(fd_.get(), KVM_GET_SREGS, &sregs) < 0) return ErrnoStatus("KVM_GET_SREGS");
  return sregs;
}

absl::Status Vcpu::SetSregs(const kvm_sregs& sregs) {
  return HV_IOCTL(fd_.get(), KVM_SET_SREGS, &sregs);
}

absl::Status Vcpu::SetCpuid(const std::vector<kvm_cpuid_entry2>& entries) {
  KernelTable<kvm_cpuid_entry2> table(entries.size());
  memcpy(table.entries(), entries.data(), entries.size() * sizeof(kvm_cpuid_entry2));
  return HV_IOCTL(fd_.get(), KVM_SET_CPUID2, table.data());
}

absl::Status Vcpu::SetMsrs(const std::vector<kvm_msr_entry>& msrs) {
  KernelTable<kvm_msr_entry> table(msrs.size());
  memcpy(table.entries(), msrs.data(), msrs.size() * sizeof(kvm_msr_entry));
  int r = ioctl(fd_.get(), KVM_SET_MSRS, table.data());
  if (r < 0) return ErrnoStatus("KVM_SET_MSRS");
  if (static_cast<size_t>(r) != msrs.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "KVM_SET_MSRS: MSR %#x refused", msrs[r].index));
  }
  return absl::OkStatus();
}

absl::Status Vcpu::SetFpu(const kvm_fpu& fpu) { return HV_IOCTL(fd_.get(), KVM_SET_FPU, &fpu); }

absl::Status Vcpu::SetMpState(uint32_t state) {
  kvm_mp_state mp = {state};
  return HV_IOCTL(fd_.get(), KVM_SET_MP_STATE, &mp);
}

std::string Vcpu::DescribeState() const {
  auto regs = GetRegs();
  auto sregs = GetSregs();
  if (!regs.ok() || !sregs.ok()) return "registers unavailable";
  return absl::StrFormat(
      "rip=%#llx rsp=%#llx rflags=%#llx rax=%#llx rbx=%#llx rcx=%#llx rdx=%#llx "
      "cs=%#x(cpl %d) cr0=%#llx cr3=%#llx cr4=%#llx efer=%#llx",
      regs->rip, regs->rsp, regs->rflags, regs->rax, regs->rbx, regs->rcx, regs->rdx,
      sregs->cs.selector, sregs->cs.selector & 3, sregs->cr0, sregs->cr3, sregs->cr4,
      sregs->efer);
}

}  // namespace hv::kvm
