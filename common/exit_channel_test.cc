#include "common/exit_channel.h"

#include <sys/eventfd.h>
#include <sys/mman.h>
#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace hv {
namespace {

TEST(ExitChannelTest, SlotRoundTripKeepsEveryField) {
  IoAccess in;
  in.seq = 0xdeadbeef;
  in.space = msg::AddressSpace::MMIO;
  in.is_write = true;
  in.size = 8;
  in.addr = 0xfebf1234;
  in.data = 0x0123456789abcdefull;
  uint8_t slot[kExitSlotBytes];
  EncodeIoAccess(in, slot);
  auto out = DecodeIoAccess(slot);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->seq, in.seq);
  EXPECT_EQ(out->space, in.space);
  EXPECT_TRUE(out->is_write);
  EXPECT_EQ(out->size, 8);
  EXPECT_EQ(out->addr, in.addr);
  EXPECT_EQ(out->data, in.data);
}

TEST(ExitChannelTest, GarbageSlotIsAnErrorNotACrash) {
  uint8_t slot[kExitSlotBytes];
  for (int round = 0; round < 1000; ++round) {
    for (auto& b : slot) b = static_cast<uint8_t>(rand());
    (void)DecodeIoAccess(slot);  // must not crash or read outside the slot
  }
  memset(slot, 0xff, sizeof(slot));
  EXPECT_FALSE(DecodeIoAccess(slot).ok());
}

// A device thread serving a register file; the vCPU thread posts writes and reads
// them back, across the ring wrapping many times, with the device sleeping on its
// doorbell in between.
TEST(ExitChannelTest, WritesAndReadsStayInOrderAcrossThreads) {
  constexpr uint32_t kVcpus = 2;
  size_t bytes = ExitChannelBytes(kVcpus);
  void* base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(base, MAP_FAILED);
  InitExitChannel(base, kVcpus);
  int doorbell = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  ASSERT_GE(doorbell, 0);

  std::atomic<bool> stop{false};
  std::thread device([&] {
    ExitChannelServer server(base, kVcpus, doorbell);
    uint64_t regs[16] = {};
    auto handler = [&](const IoAccess& a) -> uint64_t {
      if (a.is_write) {
        regs[a.addr % 16] = a.data;
        return 0;
      }
      return regs[a.addr % 16];
    };
    while (!stop.load()) {
      server.Drain(handler);
      if (!server.PrepareToSleep()) continue;
      struct pollfd p = {doorbell, POLLIN, 0};
      poll(&p, 1, 10);
      server.Woke();
    }
  });

  auto* header = static_cast<ExitChannelHeader*>(base);
  auto* rings = reinterpret_cast<ExitRing*>(static_cast<uint8_t*>(base) + sizeof(*header));
  ExitChannelClient client(header, &rings[1], doorbell);
  auto never = [] { return false; };
  for (uint64_t i = 0; i < 5000; ++i) {
    ASSERT_TRUE(client.PostWrite(msg::AddressSpace::PIO, i % 16, 1, i * 7, never).ok());
    if (i % 3 == 0) {
      auto value = client.Read(msg::AddressSpace::PIO, i % 16, 1, never);
      ASSERT_TRUE(value.ok()) << value.status();
      ASSERT_EQ(*value, i * 7);
    }
  }
  stop.store(true);
  device.join();
  close(doorbell);
  munmap(base, bytes);
}

// A device that never answers must not hang the vCPU: `abandon` ends the wait.
TEST(ExitChannelTest, ReadFromDeadDeviceIsAbandoned) {
  size_t bytes = ExitChannelBytes(1);
  void* base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(base, MAP_FAILED);
  InitExitChannel(base, 1);
  int doorbell = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  auto* header = static_cast<ExitChannelHeader*>(base);
  auto* rings = reinterpret_cast<ExitRing*>(static_cast<uint8_t*>(base) + sizeof(*header));
  ExitChannelClient client(header, &rings[0], doorbell);
  int asked = 0;
  auto value = client.Read(msg::AddressSpace::PIO, 0x3f8, 1, [&] { return ++asked >= 3; });
  EXPECT_FALSE(value.ok());
  EXPECT_EQ(asked, 3);
  // A full ring with nobody consuming is abandoned too (the read holds one slot).
  for (uint32_t i = 0; i < kExitRingSlots - 1; ++i) {
    ASSERT_TRUE(client.PostWrite(msg::AddressSpace::PIO, 0, 1, 0, [] { return true; }).ok());
  }
  EXPECT_FALSE(client.PostWrite(msg::AddressSpace::PIO, 0, 1, 0, [] { return true; }).ok());
  close(doorbell);
  munmap(base, bytes);
}

// A device process that dies after it handled (and committed) accesses but
// before the vCPU saw them: its successor resumes from the committed progress,
// so the vCPU gets the read's answer and nothing is handled twice.
TEST(ExitChannelTest, ASuccessorResumesFromTheCommittedProgress) {
  size_t bytes = ExitChannelBytes(1);
  void* base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(base, MAP_FAILED);
  InitExitChannel(base, 1);
  int doorbell = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  auto* header = static_cast<ExitChannelHeader*>(base);
  auto* rings = reinterpret_cast<ExitRing*>(static_cast<uint8_t*>(base) + sizeof(*header));
  ExitChannelClient client(header, &rings[0], doorbell);
  // A write then a read of a counter register: the write adds, the read returns the sum.
  ASSERT_TRUE(client.PostWrite(msg::AddressSpace::PIO, 0x10, 1, 5, [] { return false; }).ok());
  std::atomic<bool> done{false};
  uint64_t answer = 0;
  std::thread vcpu([&] {
    auto v = client.Read(msg::AddressSpace::PIO, 0x10, 1, [] { return false; });
    answer = v.ok() ? *v : ~0ull;
    done = true;
  });
  while (rings[0].head.load() != 2) std::this_thread::yield();

  struct Saved {
    uint64_t counter;
    std::vector<ExitRingProgress> progress;
  } saved{0, {}};
  uint64_t counter = 0;
  int handled_by_first = 0;
  {
    ExitChannelServer first(base, 1, doorbell);
    first.SetCommitHook([&] {
      saved = {counter, first.progress()};
      if (handled_by_first == 2) throw 1;  // dies before the read's reply is out
    });
    EXPECT_ANY_THROW(first.Drain([&](const IoAccess& a) -> uint64_t {
      ++handled_by_first;
      if (a.is_write) counter += a.data;
      return counter;
    }));
  }
  EXPECT_EQ(handled_by_first, 2);
  EXPECT_FALSE(done.load());
  // The successor: its model restored to the saved counter, the ring to the saved progress.
  counter = saved.counter;
  ExitChannelServer second(base, 1, doorbell);
  second.Restore(saved.progress);
  int handled_by_second = 0;
  second.Drain([&](const IoAccess&) -> uint64_t {
    ++handled_by_second;
    return 0;
  });
  vcpu.join();
  EXPECT_EQ(answer, 5u);
  EXPECT_EQ(handled_by_second, 0);
  EXPECT_EQ(counter, 5u);  // the write was applied once
  // Garbage progress (a tail beyond what was posted) is ignored.
  std::vector<ExitRingProgress> bad(1);
  bad[0].tail = 1000;
  second.Restore(bad);
  EXPECT_EQ(rings[0].tail.load(), 2u);
  close(doorbell);
  munmap(base, bytes);
}

// A successor process publishing the same register takes over its
// predecessor's entry instead of leaving a stale value in front of its own.
TEST(ExitChannelTest, ASuccessorTakesOverItsPredecessorsPublishedRegister) {
  size_t bytes = ExitChannelBytes(1);
  void* base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(base, MAP_FAILED);
  InitExitChannel(base, 1);
  int doorbell = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  auto* header = static_cast<ExitChannelHeader*>(base);
  auto* rings = reinterpret_cast<ExitRing*>(static_cast<uint8_t*>(base) + sizeof(*header));
  ExitChannelClient client(header, &rings[0], doorbell);
  int first_handle;
  {
    ExitChannelServer first(base, 1, doorbell);
    first_handle = first.AddPublished(msg::AddressSpace::PIO, 0x3fd, 1, 0);
    first.SetPublished(first_handle, 0x60);
  }
  ExitChannelServer second(base, 1, doorbell);
  int handle = second.AddPublished(msg::AddressSpace::PIO, 0x3fd, 1, 0);
  EXPECT_EQ(handle, first_handle);
  second.SetPublished(handle, 0x61);
  auto v = client.Read(msg::AddressSpace::PIO, 0x3fd, 1, [] { return true; });
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, 0x61u);
  close(doorbell);
  munmap(base, bytes);
}

// Read-mostly registers: a published register is read from shared memory, unless
// this vCPU still has an access queued that might change it.
TEST(ExitChannelTest, PublishedRegisterIsReadWithoutTheDeviceOnlyWhenCurrent) {
  size_t bytes = ExitChannelBytes(1);
  void* base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(base, MAP_FAILED);
  InitExitChannel(base, 1);
  int doorbell = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  auto* header = static_cast<ExitChannelHeader*>(base);
  auto* rings = reinterpret_cast<ExitRing*>(static_cast<uint8_t*>(base) + sizeof(*header));
  ExitChannelServer server(base, 1, doorbell);
  ExitChannelClient client(header, &rings[0], doorbell);
  const auto pio = msg::AddressSpace::PIO;
  auto give_up = [] { return true; };  // nobody serves the ring in this test
  auto never = [] { return false; };

  int lsr = server.AddPublished(pio, 0x3fd, 1, PublishedKey(pio, 0x3f8, 0));
  ASSERT_GE(lsr, 0);
  // Declared but not published yet: the read goes to the (absent) device.
  EXPECT_FALSE(client.Read(pio, 0x3fd, 1, give_up).ok());
  std::atomic<uint64_t> device_reads{0};
  auto handler = [&](const IoAccess& a) -> uint64_t {
    if (a.is_write && a.addr == 0x3fc) server.SetPublished(lsr, 0x61);
    if (!a.is_write) ++device_reads;
    return 0x99;
  };
  server.Drain(handler);  // answers the abandoned read
  server.SetPublished(lsr, 0x60);

  auto value = client.Read(pio, 0x3fd, 1, give_up);
  ASSERT_TRUE(value.ok()) << value.status();
  EXPECT_EQ(*value, 0x60u);
  EXPECT_EQ(client.published_reads(), 1u);
  // Another size of the same port is another register.
  EXPECT_FALSE(client.Read(pio, 0x3fd, 2, give_up).ok());
  server.Drain(handler);

  // A queued write the register ignores does not delay it...
  ASSERT_TRUE(client.PostWrite(pio, 0x3f8, 1, 'x', never).ok());
  value = client.Read(pio, 0x3fd, 1, give_up);
  ASSERT_TRUE(value.ok());
  EXPECT_EQ(*value, 0x60u);
  // ...one that may change it does: the read waits for the device.
  ASSERT_TRUE(client.PostWrite(pio, 0x3fc, 1, 0x10, never).ok());
  EXPECT_FALSE(client.Read(pio, 0x3fd, 1, give_up).ok());
  EXPECT_EQ(client.published_reads(), 2u);
  // Once the device has handled it, the new value is read from shared memory.
  server.Drain(handler);
  value = client.Read(pio, 0x3fd, 1, give_up);
  ASSERT_TRUE(value.ok());
  EXPECT_EQ(*value, 0x61u);
  EXPECT_EQ(client.published_reads(), 3u);

  // Unpublished (its read would have side effects): back to the device.
  server.SetPublished(lsr, std::nullopt);
  uint64_t before = device_reads.load();
  std::thread device([&] {
    while (device_reads == before) {
      server.Drain(handler);
    }
  });
  value = client.Read(pio, 0x3fd, 1, never);
  device.join();
  ASSERT_TRUE(value.ok());
  EXPECT_EQ(*value, 0x99u);
  EXPECT_EQ(client.published_reads(), 3u);
  close(doorbell);
  munmap(base, bytes);
}

}  // namespace
}  // namespace hv
