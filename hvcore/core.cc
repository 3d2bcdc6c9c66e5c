#include "hvcore/core.h"

#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/fd.h"
#include "common/zmq_msg.h"
#include "hvcore/acpi/acpi.h"
#include "hvcore/boot_layout.h"
#include "hvcore/linux_loader.h"
#include "hvcore/memory_map.h"
#include "hvcore/pvh_loader.h"

namespace hv {
namespace {
// Interrupts KVM_RUN when a vCPU must stop; the handler itself does nothing.
constexpr int kKickSignal = SIGUSR1;
void OnKick(int) {}

// Where Intel's VMX wants its private pages: inside the PCI hole, out of the way.
constexpr uint64_t kIdentityMapAddr = 0xfeffc000;
constexpr uint64_t kTssAddr = 0xfeffd000;

kvm_segment FlatSegment(uint16_t selector, uint8_t type) {
  kvm_segment s = {};
  s.base = 0;
  s.limit = 0xffffffff;
  s.selector = selector;
  s.type = type;
  s.present = 1;
  s.dpl = 0;
  s.db = 1;
  s.s = 1;
  s.l = 0;
  s.g = 1;
  return s;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Core>> Core::Create(msg::ConfigureCore::Reader config,
                                                   ExitSink sink, int kvm_fd) {
  std::unique_ptr<Core> core(new Core(std::move(sink)));
  if (auto s = core->Build(config, kvm_fd); !s.ok()) return s;
  return core;
}

Core::~Core() {
  Stop();
  for (auto& d : devices_) {
    if (d.base != nullptr) munmap(d.base, d.bytes);
  }
}

absl::Status Core::Build(msg::ConfigureCore::Reader config, int kvm_fd) {
  auto kvm = kvm_fd >= 0 ? kvm::Kvm::Adopt(Fd(kvm_fd)) : kvm::Kvm::Open();
  if (!kvm.ok()) return kvm.status();
  kvm_ = std::move(*kvm);
  if (auto s = kvm_->RequireExtensions({{KVM_CAP_IRQCHIP, "IRQCHIP"},
                                        {KVM_CAP_USER_MEMORY, "USER_MEMORY"},
                                        {KVM_CAP_IRQFD, "IRQFD"},
                                        {KVM_CAP_IOEVENTFD, "IOEVENTFD"},
                                        {KVM_CAP_PIT2, "PIT2"}});
      !s.ok()) {
    return s;
  }
  auto vm = kvm_->CreateVm();
  if (!vm.ok()) return vm.status();
  vm_ = std::move(*vm);
  // Not every KVM flavour needs these; failures are harmless where it doesn't.
  (void)vm_->SetIdentityMapAddr(kIdentityMapAddr);
  (void)vm_->SetTssAddr(kTssAddr);
  if (auto s = vm_->CreateIrqchip(); !s.ok()) return s;
  if (auto s = vm_->CreatePit2(); !s.ok()) return s;

  std::vector<GuestRamRegion> regions = RamRegionsFrom(config.getRam());
  auto ram = GuestMemory::Map(config.getRamFd(), config.getRamSize(), regions);
  if (!ram.ok()) return ram.status();
  ram_ = std::move(*ram);
  for (size_t i = 0; i < regions.size(); ++i) {
    if (auto s = vm_->SetUserMemoryRegion(i, regions[i].gpa, regions[i].size,
                                          ram_->host_base() + regions[i].offset);
        !s.ok()) {
      return s;
    }
  }

  auto vmcfg = config.getVm();
  uint32_t ncpus = vmcfg.getCpus();
  for (auto dev : config.getDevices()) {
    DeviceChannel ch;
    ch.name = dev.getName();
    ch.bytes = ExitChannelBytes(ncpus);
    ch.base = mmap(nullptr, ch.bytes, PROT_READ | PROT_WRITE, MAP_SHARED, dev.getChannelFd(), 0);
    if (ch.base == MAP_FAILED) {
      ch.base = nullptr;
      return ErrnoStatus(absl::StrCat("mmap exit channel of ", ch.name));
    }
    ch.doorbell_fd = dev.getDoorbellFd();
    devices_.push_back(std::move(ch));
  }
  // Names live in devices_, which no longer grows.
  for (size_t i = 0; i < devices_.size(); ++i) {
    for (auto r : config.getDevices()[i].getRanges()) {
      fixed_ranges_.push_back({{r.getSpace(), r.getBase(), r.getLength(), static_cast<uint32_t>(i),
                                r.getPostedWrites(), -1},
                               devices_[i].name.c_str()});
    }
  }
  {
    auto fixed = std::make_shared<IoDispatch>();
    for (const auto& [range, name] : fixed_ranges_) {
      if (auto s = fixed->Add(range, name); !s.ok()) return s;
    }
    dispatch_ = std::move(fixed);
  }

  if (auto st = SetUpInterrupts(config); !st.ok()) return st;
  for (size_t i = 0; i < devices_.size(); ++i) {
    auto info = config.getDevices()[i];
    if (!info.getHasPci()) continue;
    if (auto st = AddPciFunction(i, info); !st.ok()) return st;
  }
  auto boot = LoadGuest(config, regions);
  if (!boot.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("loading the kernel: ", boot.status().message()));
  }

  auto cpuid = kvm_->SupportedCpuid();
  if (!cpuid.ok()) return cpuid.status();
  cpuid_ = std::move(*cpuid);
  tsc_deadline_ = kvm_->CheckExtension(KVM_CAP_TSC_DEADLINE_TIMER) > 0;
  vcpus_expected_ = ncpus;
  auto mmap_size = kvm_->VcpuMmapSize();
  if (!mmap_size.ok()) return mmap_size.status();
  abandon_ = [this] { return stopping_.load(std::memory_order_relaxed); };
  profiling_ = getenv("HV_EXIT_PROFILE") != nullptr;
  for (uint32_t id = 0; id < ncpus; ++id) {
    auto ctx = std::make_unique<VcpuContext>();
    auto vcpu = vm_->CreateVcpu(id, *mmap_size);
    if (!vcpu.ok()) return vcpu.status();
    ctx->vcpu = std::move(*vcpu);
    for (auto& d : devices_) {
      auto* header = static_cast<ExitChannelHeader*>(d.base);
      auto* rings = reinterpret_cast<ExitRing*>(static_cast<uint8_t*>(d.base) + sizeof(*header));
      ctx->channels.emplace_back(header, &rings[id], d.doorbell_fd);
    }
    if (auto s = SetUpVcpu(*ctx, id, *boot); !s.ok()) return s;
    vcpus_.push_back(std::move(ctx));
  }
  HV_DEBUG("VM built: %u vCPU(s), %llu MiB, %zu device(s), %zu dispatch range(s), %s entry %#llx",
           ncpus, static_cast<unsigned long long>(config.getRamSize() >> 20), devices_.size(),
           dispatch_->size(), boot->long_mode ? "Linux 64-bit" : "PVH",
           static_cast<unsigned long long>(boot->rip));
  return absl::OkStatus();
}

// The platform the ACPI tables describe: the vCPUs, the interrupt controllers, and
// the ISA devices the lpc process emulates (its ports and IRQs are fixed, as on a PC).
acpi::Platform Core::DescribePlatform(schema::Vm::Reader vm) {
  acpi::Platform p;
  p.cpus = vm.getCpus();
  bool has_lpc = false;
  for (auto d : vm.getDevices()) has_lpc |= d.getEmulation() == "lpc";
  if (!has_lpc) return p;
  auto lpc = vm.getLpc();
  struct Com {
    schema::Serial::Reader serial;
    const char* name;
    uint16_t port;
    uint8_t irq;
  };
  Com coms[] = {{lpc.getCom1(), "COM1", 0x3f8, 4}, {lpc.getCom2(), "COM2", 0x2f8, 3},
                {lpc.getCom3(), "COM3", 0x3e8, 4}, {lpc.getCom4(), "COM4", 0x2e8, 3}};
  uint32_t uid = 1;
  for (const auto& c : coms) {
    if (c.serial.isNone()) continue;
    p.isa_devices.push_back({c.name, "PNP0501", uid++, {{c.port, 8}}, {c.irq}});
  }
  p.isa_devices.push_back({"RTC_", "PNP0B00", 0, {{0x70, 2}}, {8}});
  p.isa_devices.push_back({"KBD_", "PNP0303", 0, {{0x60, 1}, {0x64, 1}}, {1}});
  p.isa_devices.push_back({"MOU_", "PNP0F13", 0, {}, {12}});
  p.isa_devices.push_back({"PEVT", "QEMU0001", 0, {{0x505, 1}}, {}});
  return p;
}

absl::Status Core::SetUpInterrupts(msg::ConfigureCore::Reader config) {
  // As on a PC: ISA IRQ n on PIC pin n and IOAPIC pin n, except the timer (IRQ 0),
  // which reaches IOAPIC pin 2 (the MADT says so with an interrupt source override).
  // GSIs 16-23 are IOAPIC-only: PCI INTx.
  std::vector<kvm::GsiRoute> routes;
  for (uint32_t gsi = 0; gsi < 24; ++gsi) {
    if (gsi < 16) {
      routes.push_back({kvm::GsiRoute::Kind::kIrqchip, gsi,
                        gsi < 8 ? uint32_t{KVM_IRQCHIP_PIC_MASTER} : uint32_t{KVM_IRQCHIP_PIC_SLAVE},
                        gsi % 8});
    }
    if (gsi == 2) continue;  // the cascade: IOAPIC pin 2 belongs to the timer
    routes.push_back({kvm::GsiRoute::Kind::kIrqchip, gsi, KVM_IRQCHIP_IOAPIC, gsi == 0 ? 2u : gsi});
  }
  base_routes_ = routes;
  if (auto s = vm_->SetGsiRouting(routes); !s.ok()) return s;
  for (auto line : config.getIrqLines()) {
    if (line.getGsi() >= 24) {
      return absl::InvalidArgumentError(absl::StrCat("IRQ line on GSI ", line.getGsi()));
    }
    if (auto s = vm_->AssignIrqfd(line.getFd(), line.getGsi(), line.getResampleFd()); !s.ok()) {
      return absl::InternalError(absl::StrCat("irqfd for GSI ", line.getGsi(), ": ", s.message()));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Core::BootState> Core::LoadGuest(msg::ConfigureCore::Reader config,
                                                const std::vector<GuestRamRegion>& regions) {
  uint8_t header[1024] = {};
  ssize_t got = pread(config.getKernelFd(), header, sizeof(header), 0);
  if (got < 0) return ErrnoStatus("read kernel");
  auto map = BuildMemoryMap(regions);
  auto vm = config.getVm();
  std::string cmdline = vm.getBoot().getCmdline();
  uint64_t rsdp = 0;
  if (vm.getAcpi()) {
    auto tables = acpi::BuildTables(DescribePlatform(vm), boot::kAcpiTables);
    if (!tables.ok()) return tables.status();
    if (auto s = ram_->Write(boot::kAcpiTables, tables->bytes.data(), tables->bytes.size());
        !s.ok()) {
      return s;
    }
    rsdp = tables->rsdp_address;
  }
  BootState state;
  if (LooksLikeElf(header, got)) {
    auto boot = LoadPvh(*ram_, config.getKernelFd(), config.getInitrdFd(), cmdline, map, rsdp);
    if (!boot.ok()) return boot.status();
    state.rip = boot->entry;
    state.rbx = boot->start_info;
    return state;
  }
  if (LooksLikeBzImage(header, got)) {
    auto boot = LoadLinux(*ram_, config.getKernelFd(), config.getInitrdFd(), cmdline, map, rsdp);
    if (!boot.ok()) return boot.status();
    state.long_mode = true;
    state.rip = boot->entry;
    state.rsi = boot->boot_params;
    state.cr3 = boot->page_tables;
    state.gdt = boot->gdt;
    state.gdt_limit = boot->gdt_limit;
    return state;
  }
  return absl::InvalidArgumentError("the kernel is neither a PVH ELF nor a Linux bzImage");
}

absl::Status Core::SetUpVcpu(VcpuContext& ctx, uint32_t id, const BootState& boot) {
  // CPUID as KVM supports it, with this vCPU's APIC id.
  // The topology is the VM's (one socket of `ncpus` single-thread cores), not the
  // host's that KVM's table describes: every leaf that names an APIC id or counts
  // CPUs says so, or a guest may take two vCPUs for the same CPU.
  uint32_t ncpus = vcpus_expected_;
  uint32_t core_bits = 0;
  while ((1u << core_bits) < ncpus) ++core_bits;
  std::vector<kvm_cpuid_entry2> cpuid = cpuid_;
  for (auto& e : cpuid) {
    if (e.function == 1) {
      e.ebx = (e.ebx & 0x0000ffff) | (id << 24) | ((ncpus & 0xff) << 16);
      if (ncpus > 1) e.edx |= 1u << 28;  // HTT: the count above is valid
      e.ecx |= 1u << 31;  // "running on a hypervisor": guests then look at the KVM leaves
      // TSC-deadline mode of the local APIC timer: the in-kernel APIC has it,
      // but KVM's table leaves the bit to userspace. Without it Linux drives
      // its tick through one-shot TMICT writes instead, as on old hardware.
      if (tsc_deadline_) e.ecx |= 1u << 24;
    }
    if (e.function == 0xb || e.function == 0x1f) {
      e.edx = id;
      if (e.index == 0) {  // SMT level: one thread per core
        e.eax = 0;
        e.ebx = 1;
        e.ecx = (1u << 8) | 0;
      } else if (e.index == 1) {  // core level
        e.eax = core_bits;
        e.ebx = ncpus;
        e.ecx = (2u << 8) | 1;
      }
    }
    if (e.function == 0x80000008) e.ecx = (e.ecx & ~0xf0ffu) | (core_bits << 12) | (ncpus - 1);
    if (e.function == 0x8000001e) {  // AMD: extended APIC id, core id, node id
      e.eax = id;
      e.ebx = id & 0xff;
      e.ecx = 0;
    }
  }
  if (auto s = ctx.vcpu->SetCpuid(cpuid); !s.ok()) return s;

  kvm_fpu fpu = {};
  fpu.fcw = 0x37f;
  fpu.mxcsr = 0x1f80;
  if (auto s = ctx.vcpu->SetFpu(fpu); !s.ok()) return s;
  if (id != 0) return absl::OkStatus();  // application processors wait for INIT/SIPI

  auto sregs = ctx.vcpu->GetSregs();
  if (!sregs.ok()) return sregs.status();
  kvm_regs regs = {};
  regs.rip = boot.rip;
  regs.rflags = 0x2;
  if (boot.long_mode) {
    // Linux 64-bit entry: long mode, identity-mapped paging, __BOOT_CS/__BOOT_DS.
    sregs->cs = FlatSegment(0x10, 0xb);
    sregs->cs.l = 1;
    sregs->cs.db = 0;
    sregs->ds = sregs->es = sregs->fs = sregs->gs = sregs->ss = FlatSegment(0x18, 0x3);
    sregs->gdt.base = boot.gdt;
    sregs->gdt.limit = boot.gdt_limit;
    sregs->cr3 = boot.cr3;
    sregs->cr4 = 0x20;               // PAE
    sregs->cr0 = 0x80000011;         // PG | ET | PE
    sregs->efer = 0x500;             // LME | LMA
    regs.rsi = boot.rsi;
  } else {
    // PVH entry: 32-bit protected mode, paging off, flat segments.
    sregs->cs = FlatSegment(0x10, 0xb);
    sregs->ds = sregs->es = sregs->fs = sregs->gs = sregs->ss = FlatSegment(0x18, 0x3);
    sregs->cr0 = 0x11;  // PE | ET
    sregs->cr3 = 0;
    sregs->cr4 = 0;
    sregs->efer = 0;
    regs.rbx = boot.rbx;
  }
  sregs->tr.base = 0;
  sregs->tr.limit = 0x67;
  sregs->tr.selector = 0x20;
  sregs->tr.type = 0xb;  // busy TSS
  sregs->tr.present = 1;
  sregs->tr.s = 0;
  if (auto s = ctx.vcpu->SetSregs(*sregs); !s.ok()) return s;
  return ctx.vcpu->SetRegs(regs);
}

absl::Status Core::Start() {
  struct sigaction sa = {};
  sa.sa_handler = OnKick;
  sigemptyset(&sa.sa_mask);
  sigaction(kKickSignal, &sa, nullptr);  // no SA_RESTART: KVM_RUN returns EINTR
  for (auto& ctx : vcpus_) {
    VcpuContext* raw = ctx.get();
    ctx->thread = std::thread([this, raw] { VcpuLoop(raw); });
  }
  return absl::OkStatus();
}

void Core::Stop() {
  stopping_.store(true);
  for (auto& ctx : vcpus_) {
    if (!ctx->thread.joinable()) continue;
    ctx->vcpu->run()->immediate_exit = 1;
    pthread_kill(ctx->thread.native_handle(), kKickSignal);
  }
  for (auto& ctx : vcpus_) {
    if (ctx->thread.joinable()) ctx->thread.join();
  }
  if (profiling_) fputs(ExitProfileReport().c_str(), stderr);
}

void Core::Fail(VcpuContext& ctx, msg::ExitReason reason, const std::string& what) {
  std::string detail =
      absl::StrFormat("vCPU %u: %s; %s", ctx.vcpu->id(), what, ctx.vcpu->DescribeState());
  sink_(reason, 0, detail);
}

void Core::VcpuLoop(VcpuContext* ctx) {
  pthread_setname_np(pthread_self(), absl::StrCat("vcpu", ctx->vcpu->id()).c_str());
  while (!stopping_.load(std::memory_order_relaxed)) {
    absl::Status s = ctx->vcpu->Run();
    if (absl::IsCancelled(s)) continue;
    if (!s.ok()) {
      Fail(*ctx, msg::ExitReason::ERROR, std::string(s.message()));
      return;
    }
    if (!profiling_) {
      if (!HandleExit(*ctx)) return;
      continue;
    }
    uint64_t start = MonotonicNs();
    bool go_on = HandleExit(*ctx);
    RecordExit(*ctx, MonotonicNs() - start);
    if (!go_on) return;
  }
}

void Core::RecordExit(VcpuContext& ctx, uint64_t ns) {
  const kvm_run* run = ctx.vcpu->run();
  using Kind = ExitProfile::Kind;
  switch (run->exit_reason) {
    case KVM_EXIT_IO:
      ctx.profile.Record(run->io.direction == KVM_EXIT_IO_OUT ? Kind::kPortWrite : Kind::kPortRead,
                         run->io.port, ns);
      break;
    case KVM_EXIT_MMIO:
      ctx.profile.Record(run->mmio.is_write ? Kind::kMmioWrite : Kind::kMmioRead,
                         run->mmio.phys_addr, ns);
      break;
    default:
      ctx.profile.Record(Kind::kOther, run->exit_reason, ns);
  }
}

std::string Core::ExitProfileReport() const {
  std::vector<const ExitProfile*> profiles;
  for (const auto& ctx : vcpus_) profiles.push_back(&ctx->profile);
  return ExitProfile::Report(profiles, 25);
}

bool Core::HandleExit(VcpuContext& ctx) {
  kvm_run* run = ctx.vcpu->run();
  switch (run->exit_reason) {
    case KVM_EXIT_IO:
      return HandlePio(ctx);
    case KVM_EXIT_MMIO:
      return HandleMmio(ctx);
    case KVM_EXIT_INTR:
      return true;
    case KVM_EXIT_HLT:
      Fail(ctx, msg::ExitReason::ERROR, "halted with no way to wake up");
      return false;
    case KVM_EXIT_SHUTDOWN:
      Fail(ctx, msg::ExitReason::TRIPLE_FAULT, "triple fault (KVM_EXIT_SHUTDOWN)");
      return false;
    case KVM_EXIT_SYSTEM_EVENT:
      switch (run->system_event.type) {
        case KVM_SYSTEM_EVENT_SHUTDOWN:
          sink_(msg::ExitReason::POWER_OFF, 0, "system event: shutdown");
          return false;
        case KVM_SYSTEM_EVENT_RESET:
          sink_(msg::ExitReason::RESET, 0, "system event: reset");
          return false;
        default:
          Fail(ctx, msg::ExitReason::ERROR,
               absl::StrCat("system event type ", run->system_event.type));
          return false;
      }
    case KVM_EXIT_INTERNAL_ERROR:
      Fail(ctx, msg::ExitReason::ERROR,
           absl::StrCat("KVM internal error, suberror ", run->internal.suberror,
                        run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION
                            ? " (instruction emulation failed)"
                            : ""));
      return false;
    case KVM_EXIT_FAIL_ENTRY:
      Fail(ctx, msg::ExitReason::ERROR,
           absl::StrFormat("VM entry failed, reason %#llx",
                           static_cast<unsigned long long>(
                               run->fail_entry.hardware_entry_failure_reason)));
      return false;
    default:
      Fail(ctx, msg::ExitReason::ERROR, absl::StrCat("unhandled exit reason ", run->exit_reason));
      return false;
  }
}

bool Core::HandlePio(VcpuContext& ctx) {
  kvm_run* run = ctx.vcpu->run();
  auto* data = reinterpret_cast<uint8_t*>(run) + run->io.data_offset;
  bool is_write = run->io.direction == KVM_EXIT_IO_OUT;
  // String instructions (rep ins/outs) come as `count` consecutive accesses.
  for (uint32_t i = 0; i < run->io.count; ++i) {
    if (!Access(ctx, msg::AddressSpace::PIO, run->io.port, run->io.size, is_write,
                data + i * run->io.size)) {
      return false;
    }
  }
  return true;
}

bool Core::HandleMmio(VcpuContext& ctx) {
  kvm_run* run = ctx.vcpu->run();
  return Access(ctx, msg::AddressSpace::MMIO, run->mmio.phys_addr, run->mmio.len,
                run->mmio.is_write != 0, run->mmio.data);
}

bool Core::Access(VcpuContext& ctx, msg::AddressSpace space, uint64_t addr, uint32_t size,
                  bool is_write, uint8_t* data) {
  if (size == 0 || size > 8) {
    Fail(ctx, msg::ExitReason::ERROR, absl::StrCat("access of ", size, " bytes"));
    return false;
  }
  if (space == msg::AddressSpace::PIO &&
      ((addr == kPciConfigAddressPort && size == 4) ||
       (addr >= kPciConfigDataPort && addr < kPciConfigDataPort + 4u))) {
    return PciConfigAccess(ctx, addr, size, is_write, data);
  }
  std::shared_ptr<const IoDispatch> dispatch = std::atomic_load(&dispatch_);
  const IoRangeOwner* owner = dispatch->Find(space, addr, size);
  if (owner == nullptr) {
    // Nobody decodes it: reads float high, writes vanish, as on a real bus.
    if (!is_write) memset(data, 0xff, size);
    if (ctx.unclaimed_accesses++ < 8) {
      HV_DEBUG("vCPU %u: unclaimed %s %s %#llx/%u", ctx.vcpu->id(),
               space == msg::AddressSpace::PIO ? "port" : "MMIO", is_write ? "write" : "read",
               static_cast<unsigned long long>(addr), size);
    }
    return true;
  }
  if (is_write && owner->bar >= 0) NoteMsixWrite(*owner, addr, size, data);
  return Forward(ctx, *owner, space, addr, size, is_write, data);
}

bool Core::PciConfigAccess(VcpuContext& ctx, uint32_t port, uint32_t size, bool is_write,
                           uint8_t* data) {
  uint32_t value = 0;
  if (is_write) memcpy(&value, data, size);
  if (port == kPciConfigAddressPort) {
    if (is_write) {
      pci_.WriteAddress(value);
    } else {
      value = pci_.ReadAddress();
      memcpy(data, &value, 4);
    }
    return true;
  }
  PciConfigTarget t = pci_.Decode(port - kPciConfigDataPort, size);
  if (t.valid && t.slot == 0 && t.function == 0) {
    if (is_write) {
      pci_.WriteBridge(t.reg, size, value);
    } else {
      value = pci_.ReadBridge(t.reg, size);
      memcpy(data, &value, size);
    }
    return true;
  }
  uint64_t addr = (uint64_t{t.slot} << 15) | (t.function << 12) | t.reg;
  std::shared_ptr<const IoDispatch> dispatch = std::atomic_load(&dispatch_);
  const IoRangeOwner* owner =
      t.valid ? dispatch->Find(msg::AddressSpace::PCI_CONFIG, addr, size) : nullptr;
  if (owner == nullptr) {
    if (!is_write) memset(data, 0xff, size);  // no function here: all ones
    return true;
  }
  if (is_write) {
    // The core's shadow sees the write first, so the BARs are mapped before the
    // vCPU goes on to use them.
    std::lock_guard<std::mutex> lock(pci_mu_);
    if (PciFunction* f = FunctionAt(t.slot, t.function)) {
      f->shadow->Write(t.reg, size, value);
      // Only the command register and the BARs decide where the BARs decode.
      bool moves_bars = (t.reg < 0x06) || (t.reg >= 0x10 && t.reg < 0x28);
      if (moves_bars) RemapPciFunction(*f);
      NoteMsiWrite(*f, t.reg, size, value);
    }
  }
  return Forward(ctx, *owner, msg::AddressSpace::PCI_CONFIG, addr, size, is_write, data);
}

bool Core::Forward(VcpuContext& ctx, const IoRangeOwner& owner, msg::AddressSpace space,
                   uint64_t addr, uint32_t size, bool is_write, uint8_t* data) {
  ExitChannelClient& channel = ctx.channels[owner.device];
  if (is_write) {
    uint64_t value = 0;
    memcpy(&value, data, size);
    absl::Status s = channel.PostWrite(space, addr, size, value, abandon_);
    // A device that went away while the VM stops is not an error of this vCPU.
    return s.ok() || !stopping_.load();
  }
  auto value = channel.Read(space, addr, size, abandon_);
  if (!value.ok()) {
    if (stopping_.load()) return false;
    Fail(ctx, msg::ExitReason::ERROR,
         absl::StrCat(devices_[owner.device].name, ": ", value.status().message()));
    return false;
  }
  memcpy(data, &*value, size);
  return true;
}

}  // namespace hv
