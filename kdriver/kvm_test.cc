// Needs /dev/kvm. Without it the tests skip and say so; here it is present.
#include "kdriver/kvm.h"

#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

#include "gtest/gtest.h"

namespace hv::kvm {
namespace {

class KvmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access("/dev/kvm", R_OK | W_OK) != 0) GTEST_SKIP() << "SKIPPED: no /dev/kvm on this host";
    auto kvm = Kvm::Open();
    ASSERT_TRUE(kvm.ok()) << kvm.status();
    kvm_ = std::move(*kvm);
    auto vm = kvm_->CreateVm();
    ASSERT_TRUE(vm.ok()) << vm.status();
    vm_ = std::move(*vm);
    mem_ = static_cast<uint8_t*>(
        mmap(nullptr, kMem, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    ASSERT_NE(mem_, MAP_FAILED);
    ASSERT_TRUE(vm_->SetUserMemoryRegion(0, 0, kMem, mem_).ok());
  }
  void TearDown() override {
    if (mem_ != nullptr && mem_ != MAP_FAILED) munmap(mem_, kMem);
  }

  // A vCPU in real mode at 0x1000 running `code`.
  std::unique_ptr<Vcpu> RealModeVcpu(const std::vector<uint8_t>& code) {
    memcpy(mem_ + 0x1000, code.data(), code.size());
    auto size = kvm_->VcpuMmapSize();
    EXPECT_TRUE(size.ok());
    auto vcpu = vm_->CreateVcpu(0, *size);
    EXPECT_TRUE(vcpu.ok()) << vcpu.status();
    auto sregs = (*vcpu)->GetSregs();
    EXPECT_TRUE(sregs.ok());
    sregs->cs.base = 0;
    sregs->cs.selector = 0;
    EXPECT_TRUE((*vcpu)->SetSregs(*sregs).ok());
    kvm_regs regs = {};
    regs.rip = 0x1000;
    regs.rflags = 2;
    EXPECT_TRUE((*vcpu)->SetRegs(regs).ok());
    return std::move(*vcpu);
  }

  static constexpr size_t kMem = 1 << 20;
  std::unique_ptr<Kvm> kvm_;
  std::unique_ptr<Vm> vm_;
  uint8_t* mem_ = nullptr;
};

TEST_F(KvmTest, ReportsTheCapabilitiesHvNeeds) {
  EXPECT_TRUE(kvm_->RequireExtensions({{KVM_CAP_IRQCHIP, "IRQCHIP"},
                                       {KVM_CAP_IRQFD, "IRQFD"},
                                       {KVM_CAP_IOEVENTFD, "IOEVENTFD"},
                                       {KVM_CAP_USER_MEMORY, "USER_MEMORY"}})
                  .ok());
  EXPECT_FALSE(kvm_->RequireExtensions({{0x7fffffff, "NO_SUCH_CAP"}}).ok());
  auto cpuid = kvm_->SupportedCpuid();
  ASSERT_TRUE(cpuid.ok()) << cpuid.status();
  ASSERT_GT(cpuid->size(), 1u);
  // Leaf 0 is first and names the vendor: a table read at the wrong offset would not.
  EXPECT_EQ((*cpuid)[0].function, 0u);
  EXPECT_GE((*cpuid)[0].eax, 1u);
  bool has_leaf_1 = false;
  for (const auto& e : *cpuid) has_leaf_1 |= (e.function == 1 && e.index == 0);
  EXPECT_TRUE(has_leaf_1);
}

TEST_F(KvmTest, PortWriteExitsWithTheValue) {
  // mov $0x42,%al; out %al,$0x10; hlt
  auto vcpu = RealModeVcpu({0xb0, 0x42, 0xe6, 0x10, 0xf4});
  ASSERT_TRUE(vcpu->Run().ok());
  kvm_run* run = vcpu->run();
  ASSERT_EQ(run->exit_reason, KVM_EXIT_IO) << vcpu->DescribeState();
  EXPECT_EQ(run->io.direction, KVM_EXIT_IO_OUT);
  EXPECT_EQ(run->io.port, 0x10);
  EXPECT_EQ(run->io.size, 1);
  EXPECT_EQ(*(reinterpret_cast<uint8_t*>(run) + run->io.data_offset), 0x42);
}

TEST_F(KvmTest, IoeventfdSwallowsTheWriteWithoutAnExit) {
  int efd = eventfd(0, EFD_CLOEXEC);
  ASSERT_GE(efd, 0);
  ASSERT_TRUE(vm_->AssignIoeventfd(efd, 0x10, 1, /*pio=*/true).ok());
  // out %al,$0x10; out %al,$0x11; hlt
  auto vcpu = RealModeVcpu({0xe6, 0x10, 0xe6, 0x11, 0xf4});
  ASSERT_TRUE(vcpu->Run().ok());
  EXPECT_EQ(vcpu->run()->exit_reason, KVM_EXIT_IO);
  EXPECT_EQ(vcpu->run()->io.port, 0x11);  // 0x10 went to the eventfd
  uint64_t count = 0;
  ASSERT_EQ(read(efd, &count, sizeof(count)), static_cast<ssize_t>(sizeof(count)));
  EXPECT_EQ(count, 1u);
  EXPECT_TRUE(vm_->DeassignIoeventfd(efd, 0x10, 1, true).ok());
  close(efd);
}

TEST_F(KvmTest, IrqfdNeedsAnIrqchipAndThenWorks) {
  ASSERT_TRUE(vm_->CreateIrqchip().ok());
  int efd = eventfd(0, EFD_CLOEXEC);
  EXPECT_TRUE(vm_->AssignIrqfd(efd, 5).ok());
  EXPECT_TRUE(vm_->DeassignIrqfd(efd, 5).ok());
  close(efd);
}

TEST_F(KvmTest, ErrorsNameTheIoctl) {
  auto status = vm_->SetUserMemoryRegion(1, 0x1001, 4096, mem_);  // unaligned gpa
  ASSERT_FALSE(status.ok());
  EXPECT_NE(std::string(status.message()).find("KVM_SET_USER_MEMORY_REGION"), std::string::npos)
      << status;
}

}  // namespace
}  // namespace hv::kvm
