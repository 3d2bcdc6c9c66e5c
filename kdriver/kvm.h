// kdriver: a thin C++ layer over the KVM ioctls, as libvmmapi is for bhyve.
// Only hvcore links it: hvcore is the only process that holds /dev/kvm.
// Every call returns absl::Status naming the ioctl and the errno.
#ifndef HV_KDRIVER_KVM_H_
#define HV_KDRIVER_KVM_H_

#include <linux/kvm.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/fd.h"

namespace hv::kvm {

class Vm;
class Vcpu;

// KVM_SET_GSI_ROUTING's number as the kernel computes it (<linux/kvm.h> gives
// C++ a wrong one; see kvm.cc). hvcore's seccomp allowlist needs the real one.
unsigned long SetGsiRoutingIoctlNumber();

// The /dev/kvm system fd.
class Kvm {
 public:
  static absl::StatusOr<std::unique_ptr<Kvm>> Open(const char* path = "/dev/kvm");
  // An fd to /dev/kvm someone else opened (the broker: a sandboxed core cannot).
  static absl::StatusOr<std::unique_ptr<Kvm>> Adopt(Fd fd);

  int fd() const { return fd_.get(); }
  // KVM_CHECK_EXTENSION: 0 when absent, else the capability's value.
  int CheckExtension(int capability) const;
  // Fails with a message naming each missing capability.
  absl::Status RequireExtensions(const std::vector<std::pair<int, const char*>>& capabilities) const;
  absl::StatusOr<int> VcpuMmapSize() const;
  absl::StatusOr<std::vector<kvm_cpuid_entry2>> SupportedCpuid() const;
  absl::StatusOr<std::unique_ptr<Vm>> CreateVm() const;

 private:
  explicit Kvm(Fd fd) : fd_(std::move(fd)) {}
  Fd fd_;
};

// One GSI routing entry (KVM_SET_GSI_ROUTING).
struct GsiRoute {
  enum class Kind { kIrqchip, kMsi } kind;
  uint32_t gsi;
  uint32_t irqchip = 0;  // kIrqchip: KVM_IRQCHIP_PIC_MASTER/SLAVE/IOAPIC
  uint32_t pin = 0;
  uint64_t msi_address = 0;  // kMsi
  uint32_t msi_data = 0;
};

class Vm {
 public:
  int fd() const { return fd_.get(); }

  absl::Status SetUserMemoryRegion(uint32_t slot, uint64_t gpa, uint64_t size, void* host,
                                   uint32_t flags = 0);
  // Intel needs these placed somewhere out of the guest's way; harmless elsewhere.
  absl::Status SetTssAddr(uint64_t gpa);
  absl::Status SetIdentityMapAddr(uint64_t gpa);
  absl::Status CreateIrqchip();  // PIC pair + IOAPIC + local APICs, in the kernel
  absl::Status CreatePit2();
  absl::Status SetIrqLine(uint32_t gsi, bool level);
  absl::Status SetGsiRouting(const std::vector<GsiRoute>& routes);
  absl::Status SignalMsi(uint64_t address, uint32_t data);
  // An eventfd that raises `gsi` when written; with `resample_fd`, a level-triggered
  // line whose resample eventfd fires on EOI (INTx).
  absl::Status AssignIrqfd(int fd, uint32_t gsi, int resample_fd = -1);
  absl::Status DeassignIrqfd(int fd, uint32_t gsi);
  // An eventfd written by KVM itself when the guest writes `length` bytes at `addr`
  // (length 0: any width), without an exit to userspace.
  absl::Status AssignIoeventfd(int fd, uint64_t addr, uint32_t length, bool pio);
  absl::Status DeassignIoeventfd(int fd, uint64_t addr, uint32_t length, bool pio);
  absl::Status EnableCapability(uint32_t capability, uint64_t arg0 = 0);

  absl::StatusOr<std::unique_ptr<Vcpu>> CreateVcpu(uint32_t id, int mmap_size);

 private:
  friend class Kvm;
  explicit Vm(Fd fd) : fd_(std::move(fd)) {}
  Fd fd_;
};

class Vcpu {
 public:
  ~Vcpu();
  int fd() const { return fd_.get(); }
  uint32_t id() const { return id_; }
  kvm_run* run() const { return run_; }

  // KVM_RUN. EINTR (a signal, immediate_exit) is returned as absl::CancelledError.
  absl::Status Run();

  absl::StatusOr<kvm_regs> GetRegs() const;
  absl::Status SetRegs(const kvm_regs& regs);
  absl::StatusOr<kvm_sregs> GetSregs() const;
  absl::Status SetSregs(const kvm_sregs& sregs);
  absl::Status SetCpuid(const std::vector<kvm_cpuid_entry2>& entries);
  absl::Status SetMsrs(const std::vector<kvm_msr_entry>& msrs);
  absl::Status SetFpu(const kvm_fpu& fpu);
  absl::Status SetMpState(uint32_t state);

  // For people: the registers, one line, for error reports.
  std::string DescribeState() const;

 private:
  friend class Vm;
  Vcpu(Fd fd, uint32_t id, kvm_run* run, int mmap_size)
      : fd_(std::move(fd)), id_(id), run_(run), mmap_size_(mmap_size) {}
  Fd fd_;
  uint32_t id_;
  kvm_run* run_;
  int mmap_size_;
};

}  // namespace hv::kvm

#endif  // HV_KDRIVER_KVM_H_
