#include "devproc/virtio/virtqueue.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "devproc/virtio/fake_driver.h"
#include "gtest/gtest.h"

namespace hv::virtio {
namespace {

// Guest RAM of most tests: one region [0, 4 MiB).
constexpr uint64_t kRamSize = 4 * kMiB;
constexpr uint64_t kDescGpa = 0x10000;
constexpr uint64_t kAvailGpa = 0x20000;
constexpr uint64_t kUsedGpa = 0x30000;
constexpr uint64_t kDataGpa = 0x200000;

std::unique_ptr<GuestMemory> MakeRam(uint64_t memfd_size, std::vector<GuestRamRegion> regions) {
  int fd = memfd_create("guest-ram", MFD_CLOEXEC);
  if (fd < 0) return nullptr;
  if (ftruncate(fd, memfd_size) != 0) {
    close(fd);
    return nullptr;
  }
  auto mem = GuestMemory::Map(fd, memfd_size, std::move(regions));
  close(fd);  // the mapping keeps the memory
  if (!mem.ok()) return nullptr;
  return std::move(*mem);
}

std::unique_ptr<GuestMemory> MakeRam(uint64_t size = kRamSize) {
  return MakeRam(size, {{0, size, 0}});
}

QueueLayout Layout(uint16_t size) { return {size, kDescGpa, kAvailGpa, kUsedGpa}; }


Chain PopOne(SplitQueue& q) {
  auto c = q.Pop();
  EXPECT_TRUE(c.ok()) << c.status();
  if (!c.ok() || !c->has_value()) {
    ADD_FAILURE() << "no chain available";
    return {};
  }
  return std::move(**c);
}

void ExpectEmpty(SplitQueue& q) {
  auto c = q.Pop();
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->has_value());
}

std::string Bytes(const GuestMemory& mem, uint64_t gpa, size_t len) {
  std::string s(len, '\0');
  EXPECT_TRUE(mem.Read(gpa, s.data(), len).ok());
  return s;
}

void Fill(const GuestMemory& mem, uint64_t gpa, const std::string& s) {
  ASSERT_TRUE(mem.Write(gpa, s.data(), s.size()).ok());
}

class VirtqueueTest : public ::testing::Test {
 protected:
  std::unique_ptr<GuestMemory> mem_ = MakeRam();
};

// --- Configure -------------------------------------------------------------

TEST_F(VirtqueueTest, ConfigureValidatesSizeAlignmentAndPlacement) {
  ASSERT_NE(mem_, nullptr);
  SplitQueue q(*mem_, false, false);
  EXPECT_FALSE(q.configured());
  for (uint16_t bad : {0, 3, 6, 100, 32769, 40000, 65535}) {
    EXPECT_FALSE(q.Configure({bad, kDescGpa, kAvailGpa, kUsedGpa}).ok()) << bad;
    EXPECT_FALSE(q.configured());
  }
  for (uint32_t good : {1u, 2u, 256u, 1024u}) {
    EXPECT_TRUE(q.Configure({static_cast<uint16_t>(good), kDescGpa, kAvailGpa, kUsedGpa}).ok())
        << good;
    EXPECT_TRUE(q.configured());
  }
  // 32768 entries: 512 KiB of descriptors, 64 KiB of avail ring, 256 KiB of used ring.
  EXPECT_TRUE(q.Configure({32768, 0x100000, 0x180000, 0x200000}).ok());
  // Alignment: desc 16, avail 2, used 4.
  EXPECT_FALSE(q.Configure({8, kDescGpa + 8, kAvailGpa, kUsedGpa}).ok());
  EXPECT_FALSE(q.Configure({8, kDescGpa, kAvailGpa + 1, kUsedGpa}).ok());
  EXPECT_FALSE(q.Configure({8, kDescGpa, kAvailGpa, kUsedGpa + 2}).ok());
  EXPECT_TRUE(q.Configure({8, kDescGpa + 16, kAvailGpa + 2, kUsedGpa + 4}).ok());
  // Each area wholly inside RAM.
  EXPECT_FALSE(q.Configure({8, kRamSize, kAvailGpa, kUsedGpa}).ok());
  EXPECT_FALSE(q.Configure({8, kRamSize - 64, kAvailGpa, kUsedGpa}).ok());  // 128 bytes needed
  EXPECT_TRUE(q.Configure({8, kRamSize - 128, kAvailGpa, kUsedGpa}).ok());
  EXPECT_FALSE(q.Configure({8, kDescGpa, kRamSize - 20, kUsedGpa}).ok());  // 22 bytes needed
  EXPECT_TRUE(q.Configure({8, kDescGpa, kRamSize - 22, kUsedGpa}).ok());
  EXPECT_FALSE(q.Configure({8, kDescGpa, kAvailGpa, kRamSize - 68}).ok());  // 70 bytes needed
  EXPECT_FALSE(q.Configure({8, kDescGpa, kAvailGpa, ~0ull - 3}).ok());
  EXPECT_FALSE(q.configured());
}

TEST_F(VirtqueueTest, UnconfiguredQueueRefusesWithoutBreaking) {
  SplitQueue q(*mem_, true, true);
  EXPECT_EQ(q.Pop().status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(q.Push(0, 0).ok());
  EXPECT_FALSE(q.NeedsInterrupt());
  q.SetNotificationsEnabled(false);
  FakeDriver d(*mem_, Layout(4), true);
  ASSERT_TRUE(q.Configure(d.layout()).ok());
  ASSERT_TRUE(d.Add({{kDataGpa, 4}}, {}).has_value());
  EXPECT_EQ(PopOne(q).readable_bytes, 4u);
}

// --- Round trips -----------------------------------------------------------

TEST_F(VirtqueueTest, RoundTripReadableAndWritableBuffers) {
  FakeDriver d(*mem_, Layout(8), false);
  SplitQueue q(*mem_, false, false);
  ASSERT_TRUE(q.Configure(d.layout()).ok());
  ExpectEmpty(q);

  Fill(*mem_, kDataGpa, "header");
  Fill(*mem_, kDataGpa + 0x100, "payload!");
  auto head =
      d.Add({{kDataGpa, 6}, {kDataGpa + 0x100, 8}}, {{kDataGpa + 0x200, 3}, {kDataGpa + 0x300, 5}});
  ASSERT_TRUE(head.has_value());
  EXPECT_TRUE(d.Kick());

  Chain c = PopOne(q);
  EXPECT_EQ(c.head, *head);
  ASSERT_EQ(c.readable.size(), 2u);
  ASSERT_EQ(c.writable.size(), 2u);
  EXPECT_EQ(c.readable[0].gpa, kDataGpa);
  EXPECT_EQ(c.readable[0].len, 6u);
  EXPECT_EQ(c.readable[1].gpa, kDataGpa + 0x100);
  EXPECT_EQ(c.writable[0].gpa, kDataGpa + 0x200);
  EXPECT_EQ(c.writable[1].len, 5u);
  EXPECT_EQ(c.readable_bytes, 14u);
  EXPECT_EQ(c.writable_bytes, 8u);
  ExpectEmpty(q);

  char in[14];
  ASSERT_TRUE(ReadChain(*mem_, c.readable, 0, in, sizeof(in)).ok());
  EXPECT_EQ(std::string(in, 14), "headerpayload!");
  ASSERT_TRUE(WriteChain(*mem_, c.writable, 0, "response", 8).ok());
  ASSERT_TRUE(q.Push(c.head, 8).ok());
  EXPECT_TRUE(q.NeedsInterrupt());

  auto used = d.GetUsed();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->first, *head);
  EXPECT_EQ(used->second, 8u);
  EXPECT_EQ(Bytes(*mem_, kDataGpa + 0x200, 3), "res");
  EXPECT_EQ(Bytes(*mem_, kDataGpa + 0x300, 5), "ponse");
  EXPECT_FALSE(d.GetUsed().has_value());
  EXPECT_EQ(d.num_free(), 8u);
}

TEST_F(VirtqueueTest, ManyChainsInFlightComeBackInPushOrder) {
  constexpr uint16_t kSize = 64;
  FakeDriver d(*mem_, Layout(kSize), false);
  SplitQueue q(*mem_, false, false);
  ASSERT_TRUE(q.Configure(d.layout()).ok());
  for (int round = 0; round < 3; ++round) {
    std::vector<uint16_t> heads;
    for (int i = 0; i < kSize; ++i) {
      auto h = d.Add({}, {{kDataGpa + 16ull * i, 16}});
      ASSERT_TRUE(h.has_value());
      heads.push_back(*h);
    }
    EXPECT_FALSE(d.Add({}, {{kDataGpa, 16}}).has_value());  // full
    d.Kick();
    std::vector<Chain> chains;
    for (int i = 0; i < kSize; ++i) {
      chains.push_back(PopOne(q));
      EXPECT_EQ(chains.back().head, heads[i]);
      EXPECT_EQ(chains.back().writable[0].gpa, kDataGpa + 16ull * i);
    }
    ExpectEmpty(q);
    for (int i = kSize - 1; i >= 0; --i) ASSERT_TRUE(q.Push(chains[i].head, i).ok());
    EXPECT_FALSE(q.Push(0, 0).ok());  // nothing outstanding any more
    for (int i = kSize - 1; i >= 0; --i) {
      auto used = d.GetUsed();
      ASSERT_TRUE(used.has_value());
      EXPECT_EQ(used->first, heads[i]);
      EXPECT_EQ(used->second, static_cast<uint32_t>(i));
    }
    EXPECT_EQ(d.num_free(), kSize);
  }
}

TEST_F(VirtqueueTest, IndicesWrapPast65535) {
  constexpr uint16_t kSize = 8;
  FakeDriver d(*mem_, Layout(kSize), false);
  SplitQueue q(*mem_, false, true);
  ASSERT_TRUE(q.Configure(d.layout()).ok());
  std::mt19937 rng(1);
  uint64_t chains = 0;
  while (chains < 3 * 65536 + 100) {
    const int batch = 1 + rng() % (kSize / 2);  // direct chains take two descriptors
    std::vector<uint16_t> heads;
    for (int i = 0; i < batch; ++i) {
      const uint64_t gpa = kDataGpa + 64ull * i;
      auto h = d.Add({{gpa, 8}}, {{gpa + 8, 8}}, /*indirect=*/rng() % 2);
      ASSERT_TRUE(h.has_value());
      heads.push_back(*h);
    }
    d.Kick();
    std::vector<uint16_t> popped;
    for (int i = 0; i < batch; ++i) {
      Chain c = PopOne(q);
      ASSERT_EQ(c.head, heads[i]);
      ASSERT_EQ(c.readable.size(), 1u);
      ASSERT_EQ(c.writable.size(), 1u);
      popped.push_back(c.head);
    }
    ExpectEmpty(q);
    for (uint16_t h : popped) ASSERT_TRUE(q.Push(h, 8).ok());
    EXPECT_TRUE(q.NeedsInterrupt());
    for (int i = 0; i < batch; ++i) {
      auto used = d.GetUsed();
      ASSERT_TRUE(used.has_value());
      ASSERT_EQ(used->first, popped[i]);
    }
    chains += batch;
  }
  const auto pos = q.position();
  EXPECT_EQ(pos.next_avail, static_cast<uint16_t>(chains));
  EXPECT_EQ(pos.next_used, static_cast<uint16_t>(chains));
  EXPECT_EQ(d.UsedIdx(), static_cast<uint16_t>(chains));
}

// --- Indirect descriptors ----------------------------------------------------

TEST_F(VirtqueueTest, IndirectChain) {
  FakeDriver d(*mem_, Layout(4), false);
  SplitQueue q(*mem_, false, true);
  ASSERT_TRUE(q.Configure(d.layout()).ok());
  Fill(*mem_, kDataGpa, "abc");
  Fill(*mem_, kDataGpa + 0x1000, "defg");
  auto head = d.Add({{kDataGpa, 3}, {kDataGpa + 0x1000, 4}},
                    {{kDataGpa + 0x2000, 1}, {kDataGpa + 0x3000, 2}, {kDataGpa + 0x4000, 3}},
                    /*indirect=*/true);
  ASSERT_TRUE(head.has_value());
  EXPECT_EQ(d.num_free(), 3u);  // one ring descriptor for five buffers
  Chain c = PopOne(q);
  EXPECT_EQ(c.head, *head);
  ASSERT_EQ(c.readable.size(), 2u);
  ASSERT_EQ(c.writable.size(), 3u);
  EXPECT_EQ(c.readable_bytes, 7u);
  EXPECT_EQ(c.writable_bytes, 6u);
  EXPECT_EQ(c.writable[2].gpa, kDataGpa + 0x4000);
  char buf[7];
  ASSERT_TRUE(ReadChain(*mem_, c.readable, 0, buf, 7).ok());
  EXPECT_EQ(std::string(buf, 7), "abcdefg");
  ASSERT_TRUE(WriteChain(*mem_, c.writable, 0, "uvwxyz", 6).ok());
  EXPECT_EQ(Bytes(*mem_, kDataGpa + 0x3000, 2), "vw");
  ASSERT_TRUE(q.Push(c.head, 6).ok());
  auto used = d.GetUsed();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->first, *head);
  EXPECT_EQ(d.num_free(), 4u);
}

TEST_F(VirtqueueTest, IndirectTableMayBeLongerThanTheQueue) {
  // Linux builds tables longer than small queues; the cap is MaxIndirectEntries.
  FakeDriver d(*mem_, Layout(2), false);
  SplitQueue q(*mem_, false, true);
  ASSERT_TRUE(q.Configure(d.layout()).ok());
  const uint32_t n = MaxIndirectEntries(2);
  EXPECT_EQ(n, 256u);
  const uint64_t table = d.IndirectTable(0);
  for (uint32_t i = 0; i < n; ++i) {
    const uint16_t flags = (i + 1 < n ? kDescFNext : 0) | (i >= 10 ? kDescFWrite : 0);
    d.SetDescAt(table, i, kDataGpa + i, 1, flags, i + 1);
  }
  d.SetDesc(0, table, n * 16, kDescFIndirect, 0);
  d.Publish(0);
  Chain c = PopOne(q);
  EXPECT_EQ(c.readable.size(), 10u);
  EXPECT_EQ(c.writable.size(), n - 10);
}

TEST_F(VirtqueueTest, DirectDescriptorsFollowedByAnIndirectTable) {
  // 2.7.5.3.2: zero or more direct descriptors, then one indirect one. The
  // WRITE flag on the descriptor that refers to the table is ignored.
  FakeDriver d(*mem_, Layout(8), false);
  SplitQueue q(*mem_, false, true);
  ASSERT_TRUE(q.Configure(d.layout()).ok());
  const uint64_t table = d.IndirectTable(5);
  d.SetDescAt(table, 0, kDataGpa + 0x100, 16, kDescFNext, 1);
  d.SetDescAt(table, 1, kDataGpa + 0x200, 32, kDescFWrite, 0);
  d.SetDesc(3, kDataGpa, 8, kDescFNext, 6);
  d.SetDesc(6, table, 32, kDescFIndirect | kDescFWrite, 0);
  d.Publish(3);
  Chain c = PopOne(q);
  EXPECT_EQ(c.head, 3);
  ASSERT_EQ(c.readable.size(), 2u);
  EXPECT_EQ(c.readable[0].gpa, kDataGpa);
  EXPECT_EQ(c.readable[1].gpa, kDataGpa + 0x100);
  ASSERT_EQ(c.writable.size(), 1u);
  EXPECT_EQ(c.writable[0].len, 32u);
}

TEST_F(VirtqueueTest, ZeroLengthDescriptorsCountButCarryNoBuffer) {
  FakeDriver d(*mem_, Layout(8), false);
  SplitQueue q(*mem_, false, false);
  ASSERT_TRUE(q.Configure(d.layout()).ok());
  // A zero-length descriptor's address is never used, so it is not checked.
  d.SetDesc(0, ~0ull, 0, kDescFNext, 1);
  d.SetDesc(1, kDataGpa, 8, kDescFNext, 2);
  d.SetDesc(2, kRamSize, 0, kDescFNext | kDescFWrite, 3);
  d.SetDesc(3, kDataGpa + 8, 4, kDescFWrite, 0);
  d.Publish(0);
  Chain c = PopOne(q);
  ASSERT_EQ(c.readable.size(), 1u);
  ASSERT_EQ(c.writable.size(), 1u);
  EXPECT_EQ(c.readable_bytes, 8u);
  EXPECT_EQ(c.writable_bytes, 4u);
  // A chain of only zero-length descriptors is a chain with no buffers.
  d.SetDesc(4, 0, 0, 0, 0);
  d.Publish(4);
  c = PopOne(q);
  EXPECT_EQ(c.head, 4);
  EXPECT_TRUE(c.readable.empty());
  EXPECT_TRUE(c.writable.empty());
  // ...but they still count toward the length limit: eight of them loop.
  for (uint16_t i = 0; i < 8; ++i) d.SetDesc(i, 0, 0, kDescFNext, (i + 1) % 8);
  d.Publish(0);
  EXPECT_FALSE(q.Pop().ok());
}

TEST_F(VirtqueueTest, ChainOfExactlyFourGiBMinusOneIsAccepted) {
  // 2^32 - 1 bytes across two descriptors fits; one more byte does not. Needs
  // RAM above 4 GiB: a sparse memfd.
  constexpr uint64_t kBig = 6 * kGiB;
  auto mem = MakeRam(kBig);
  ASSERT_NE(mem, nullptr);
  FakeDriver d(*mem, Layout(4), false);
  SplitQueue q(*mem, false, false);
  ASSERT_TRUE(q.Configure(d.layout()).ok());
  d.SetDesc(0, 1 * kGiB, 0x80000000u, kDescFNext, 1);
  d.SetDesc(1, 3 * kGiB, 0x7fffffffu, kDescFWrite, 0);
  d.Publish(0);
  Chain c = PopOne(q);
  EXPECT_EQ(c.readable_bytes + c.writable_bytes, 0xffffffffull);
  d.SetDesc(1, 3 * kGiB, 0x80000000u, kDescFWrite, 0);
  d.Publish(0);
  auto r = q.Pop();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  EXPECT_FALSE(q.Pop().ok());
}

// --- Notification suppression ------------------------------------------------

TEST_F(VirtqueueTest, NoInterruptFlagWithoutEventIdx) {
  FakeDriver d(*mem_, Layout(8), false);
  SplitQueue q(*mem_, false, false);
  ASSERT_TRUE(q.Configure(d.layout()).ok());
  EXPECT_FALSE(q.NeedsInterrupt());  // nothing used yet
  auto add_pop_push = [&] {
    ASSERT_TRUE(d.Add({}, {{kDataGpa, 4}}).has_value());
    Chain c = PopOne(q);
    ASSERT_TRUE(q.Push(c.head, 0).ok());
    d.GetUsed();
  };
  add_pop_push();
  EXPECT_TRUE(q.NeedsInterrupt());
  EXPECT_FALSE(q.NeedsInterrupt());  // already signalled
  d.SetAvailFlags(kAvailFNoInterrupt);
  add_pop_push();
  add_pop_push();
  EXPECT_FALSE(q.NeedsInterrupt());
  d.SetAvailFlags(0);
  EXPECT_FALSE(q.NeedsInterrupt());  // those were suppressed, nothing new since
  add_pop_push();
  EXPECT_TRUE(q.NeedsInterrupt());
  // used_event is ignored without EVENT_IDX.
  d.SetUsedEvent(100);
  add_pop_push();
  EXPECT_TRUE(q.NeedsInterrupt());
  EXPECT_EQ(q.position().signalled_used, q.position().next_used);
}

TEST_F(VirtqueueTest, UsedEventWithEventIdx) {
  FakeDriver d(*mem_, Layout(8), true);
  SplitQueue q(*mem_, true, false);
  ASSERT_TRUE(q.Configure(d.layout()).ok());
  auto used_one = [&] {
    ASSERT_TRUE(d.Add({}, {{kDataGpa, 4}}).has_value());
    Chain c = PopOne(q);
    ASSERT_TRUE(q.Push(c.head, 0).ok());
    d.GetUsed();
  };
  // used_event 0: the first entry (index 0) wants a notification, the next don't.
  used_one();
  EXPECT_TRUE(q.NeedsInterrupt());
  used_one();
  EXPECT_FALSE(q.NeedsInterrupt());
  // used_event 3 (used idx is 2): entry 2 no, entry 3 yes.
  d.SetUsedEvent(3);
  used_one();
  EXPECT_FALSE(q.NeedsInterrupt());
  used_one();
  EXPECT_TRUE(q.NeedsInterrupt());
  // A batch that steps over used_event counts: used_event 5, entries 4..6.
  d.SetUsedEvent(5);
  used_one();
  used_one();
  used_one();
  EXPECT_TRUE(q.NeedsInterrupt());
  // used_event already behind: no notification. The NO_INTERRUPT flag is ignored.
  d.SetAvailFlags(0);
  used_one();
  EXPECT_FALSE(q.NeedsInterrupt());
  d.SetAvailFlags(kAvailFNoInterrupt);
  d.SetUsedEvent(q.position().next_used);
  used_one();
  EXPECT_TRUE(q.NeedsInterrupt());
}

TEST_F(VirtqueueTest, UsedEventAcrossTheWrap) {
  for (uint16_t used_event : {65534, 65535, 0}) {
    SCOPED_TRACE(used_event);
    FakeDriver d(*mem_, Layout(8), true);
    d.Init(65533);
    SplitQueue q(*mem_, true, false);
    ASSERT_TRUE(q.Configure(d.layout()).ok());
    q.Restore({65533, 65533, 65533});
    d.SetUsedEvent(used_event);
    // Push one at a time: entries 65533, 65534, 65535, 0, 1. Exactly the one at
    // used_event asks for a notification.
    int notified = 0;
    for (uint16_t idx : {65533, 65534, 65535, 0, 1}) {
      ASSERT_TRUE(d.Add({}, {{kDataGpa, 4}}).has_value());
      Chain c = PopOne(q);
      ASSERT_TRUE(q.Push(c.head, 0).ok());
      d.GetUsed();
      const bool want = q.NeedsInterrupt();
      EXPECT_EQ(want, idx == used_event) << idx;
      notified += want;
    }
    EXPECT_EQ(notified, 1);
  }
  // And in one batch across the wrap: 65533 -> 2 passes used_event 65535.
  FakeDriver d(*mem_, Layout(8), true);
  d.Init(65533);
  SplitQueue q(*mem_, true, false);
  ASSERT_TRUE(q.Configure(d.layout()).ok());
  q.Restore({65533, 65533, 65533});
  d.SetUsedEvent(65535);
  std::vector<uint16_t> heads;
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(d.Add({}, {{kDataGpa, 4}}).has_value());
    heads.push_back(PopOne(q).head);
  }
  for (uint16_t h : heads) ASSERT_TRUE(q.Push(h, 0).ok());
  EXPECT_EQ(d.UsedIdx(), 2);
  EXPECT_TRUE(q.NeedsInterrupt());
  EXPECT_EQ(q.position().signalled_used, 2);
}

TEST_F(VirtqueueTest, NotificationsWithoutEventIdxUseTheNoNotifyFlag) {
  FakeDriver d(*mem_, Layout(8), false);
  SplitQueue q(*mem_, false, false);
  ASSERT_TRUE(q.Configure(d.layout()).ok());
  EXPECT_EQ(d.UsedFlags(), 0);
  ASSERT_TRUE(d.Add({{kDataGpa, 1}}, {}).has_value());
  EXPECT_TRUE(d.Kick());
  q.SetNotificationsEnabled(false);
  EXPECT_EQ(d.UsedFlags(), kUsedFNoNotify);
  ASSERT_TRUE(d.Add({{kDataGpa, 1}}, {}).has_value());
  EXPECT_FALSE(d.Kick());
  q.SetNotificationsEnabled(true);
  EXPECT_EQ(d.UsedFlags(), 0);
  // The re-check after enabling finds the buffer added while disabled.
  PopOne(q);
  PopOne(q);
  ExpectEmpty(q);
  ASSERT_TRUE(d.Add({{kDataGpa, 1}}, {}).has_value());
  EXPECT_TRUE(d.Kick());
  EXPECT_EQ(d.AvailEvent(), 0);  // avail_event is not used
}

TEST_F(VirtqueueTest, NotificationsWithEventIdxUseAvailEvent) {
  FakeDriver d(*mem_, Layout(8), true);
  SplitQueue q(*mem_, true, false);
  ASSERT_TRUE(q.Configure(d.layout()).ok());
  q.SetNotificationsEnabled(true);
  EXPECT_EQ(d.AvailEvent(), 0);
  // Entry 0 reaches avail_event: notify. Entry 1 is past it: the device is
  // known to be busy and will look again.
  ASSERT_TRUE(d.Add({{kDataGpa, 1}}, {}).has_value());
  EXPECT_TRUE(d.Kick());
  ASSERT_TRUE(d.Add({{kDataGpa, 1}}, {}).has_value());
  EXPECT_FALSE(d.Kick());
  PopOne(q);
  PopOne(q);
  // An empty Pop asks for a notification at the next entry.
  ExpectEmpty(q);
  EXPECT_EQ(d.AvailEvent(), 2);
  ASSERT_TRUE(d.Add({{kDataGpa, 1}}, {}).has_value());
  ASSERT_TRUE(d.Add({{kDataGpa, 1}}, {}).has_value());
  EXPECT_TRUE(d.Kick());  // a batch that passes avail_event
  PopOne(q);
  PopOne(q);
  // Disabled: the driver does not notify; flags stay 0 with EVENT_IDX.
  q.SetNotificationsEnabled(false);
  EXPECT_EQ(d.UsedFlags(), 0);
  ExpectEmpty(q);
  EXPECT_NE(d.AvailEvent(), 4);  // an empty Pop while disabled does not re-arm
  ASSERT_TRUE(d.Add({{kDataGpa, 1}}, {}).has_value());
  EXPECT_FALSE(d.Kick());
  // Re-enabled: avail_event is the next index to pop, and the caller's re-check
  // finds the buffer that arrived meanwhile.
  q.SetNotificationsEnabled(true);
  EXPECT_EQ(d.AvailEvent(), 4);
  EXPECT_EQ(d.UsedFlags(), 0);
  PopOne(q);
  ExpectEmpty(q);
  EXPECT_EQ(d.AvailEvent(), 5);
  ASSERT_TRUE(d.Add({{kDataGpa, 1}}, {}).has_value());
  EXPECT_TRUE(d.Kick());
}

TEST_F(VirtqueueTest, DeviceThatDrainsOnNotificationNeverStrandsABuffer) {
  // The simplest device: sleep until notified, then pop until nullopt. Every
  // buffer the driver adds while the device sleeps must come with a
  // notification, with or without EVENT_IDX; buffers added while it works
  // need none.
  for (bool event_idx : {false, true}) {
    SCOPED_TRACE(event_idx);
    FakeDriver d(*mem_, Layout(16), event_idx);
    SplitQueue q(*mem_, event_idx, false);
    ASSERT_TRUE(q.Configure(d.layout()).ok());
    std::mt19937 rng(3);
    int kicks = 0;
    for (int round = 0; round < 2000; ++round) {
      const int n = 1 + rng() % 8;
      for (int i = 0; i < n; ++i) ASSERT_TRUE(d.Add({{kDataGpa, 1}}, {}).has_value());
      ASSERT_TRUE(d.Kick()) << "round " << round;  // the device is asleep
      ++kicks;
      std::vector<uint16_t> heads;
      for (;;) {
        auto c = q.Pop();
        ASSERT_TRUE(c.ok());
        if (!c->has_value()) break;
        heads.push_back((*c)->head);
        // The driver keeps adding while the device works: no kick needed then
        // (with EVENT_IDX the driver sees avail_event behind and stays quiet).
        if (heads.size() == 1 && rng() % 2 && d.num_free() > 0) {
          ASSERT_TRUE(d.Add({{kDataGpa, 1}}, {}).has_value());
          if (d.Kick()) ++kicks;
        }
      }
      for (uint16_t h : heads) ASSERT_TRUE(q.Push(h, 0).ok());
      while (d.GetUsed().has_value()) {
      }
      ASSERT_EQ(d.num_free(), 16u);
    }
    EXPECT_GE(kicks, 2000);
  }
}

// --- Restart -----------------------------------------------------------------

// The commit hook runs after the used entry is written and counted but before
// used->idx tells the driver; a successor restoring that position publishes
// the index its predecessor did not get to, and can read its in-flight chains again.
TEST_F(VirtqueueTest, CommitComesBeforeTheDriverSeesACompletionAndRestoreFinishesIt) {
  FakeDriver d(*mem_, Layout(16), false);
  Fill(*mem_, kDataGpa, "abcdef");
  auto h1 = d.Add({{kDataGpa, 1}}, {{kDataGpa + 0x100, 1}});
  auto h2 = d.Add({{kDataGpa + 1, 1}}, {{kDataGpa + 0x101, 1}});
  ASSERT_TRUE(h1 && h2);
  SplitQueue::Position saved;
  Chain in_flight;
  {
    SplitQueue first(*mem_, false, false);
    ASSERT_TRUE(first.Configure(d.layout()).ok());
    Chain a = PopOne(first);
    in_flight = PopOne(first);
    bool driver_saw_it = true;
    first.SetCommitHook([&] {
      saved = first.position();
      driver_saw_it = d.GetUsed().has_value();
    });
    // The process "dies" inside the hook: the idx store after it never happens.
    uint16_t used_idx_before = 0;
    memcpy(&used_idx_before, *mem_->Translate(d.layout().used + 2, 2), 2);
    ASSERT_TRUE(first.Push(a.head, 1).ok());
    EXPECT_FALSE(driver_saw_it);
    EXPECT_EQ(saved.next_used, 1);
    // Undo the idx store, as if the process had died before it.
    memcpy(*mem_->Translate(d.layout().used + 2, 2), &used_idx_before, 2);
  }
  SplitQueue second(*mem_, false, false);
  ASSERT_TRUE(second.Configure(d.layout()).ok());
  second.Restore(saved);
  auto used = d.GetUsed();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->first, *h1);
  EXPECT_FALSE(d.GetUsed().has_value());  // exactly once
  auto again = second.ChainAt(in_flight.head);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->readable.size(), 1u);
  EXPECT_EQ(again->readable[0].gpa, kDataGpa + 1);
  ASSERT_TRUE(second.Push(in_flight.head, 1).ok());
  used = d.GetUsed();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->first, *h2);
  EXPECT_FALSE(second.ChainAt(16).ok());
}

TEST_F(VirtqueueTest, RestoreContinuesFromAPosition) {
  FakeDriver d(*mem_, Layout(16), true);
  Fill(*mem_, kDataGpa, "0123456789");
  std::vector<uint16_t> heads;
  for (int i = 0; i < 5; ++i) {
    auto h = d.Add({{kDataGpa + i, 1}}, {{kDataGpa + 0x100 + i, 1}});
    ASSERT_TRUE(h.has_value());
    heads.push_back(*h);
  }
  SplitQueue::Position pos;
  uint16_t outstanding;
  {
    SplitQueue first(*mem_, true, false);
    ASSERT_TRUE(first.Configure(d.layout()).ok());
    Chain a = PopOne(first);
    Chain b = PopOne(first);
    Chain c = PopOne(first);
    ASSERT_TRUE(first.Push(a.head, 1).ok());
    ASSERT_TRUE(first.Push(b.head, 1).ok());
    EXPECT_TRUE(first.NeedsInterrupt());  // used_event 0
    outstanding = c.head;
    pos = first.position();
  }
  EXPECT_EQ(pos.next_avail, 3);
  EXPECT_EQ(pos.next_used, 2);
  EXPECT_EQ(pos.signalled_used, 2);

  // The successor: configure, restore, finish chain c, continue with d and e.
  SplitQueue second(*mem_, true, false);
  ASSERT_TRUE(second.Configure(d.layout()).ok());
  EXPECT_EQ(second.position().next_avail, 0);
  second.Restore(pos);
  ASSERT_TRUE(second.Push(outstanding, 1).ok());
  d.SetUsedEvent(2);
  EXPECT_TRUE(second.NeedsInterrupt());  // entry 2 was written by the successor
  Chain next = PopOne(second);
  EXPECT_EQ(next.head, heads[3]);
  char byte;
  ASSERT_TRUE(ReadChain(*mem_, next.readable, 0, &byte, 1).ok());
  EXPECT_EQ(byte, '3');
  ASSERT_TRUE(second.Push(next.head, 1).ok());
  Chain last = PopOne(second);
  EXPECT_EQ(last.head, heads[4]);
  ASSERT_TRUE(second.Push(last.head, 1).ok());
  ExpectEmpty(second);
  EXPECT_FALSE(second.NeedsInterrupt());  // used_event 2 already passed

  for (int i = 0; i < 5; ++i) {
    auto used = d.GetUsed();
    ASSERT_TRUE(used.has_value());
    EXPECT_EQ(used->first, heads[i]);
  }
  EXPECT_FALSE(d.GetUsed().has_value());
}

TEST_F(VirtqueueTest, UsedRingScribblesAreIgnored) {
  // The device never reads back what it wrote to the used ring.
  FakeDriver d(*mem_, Layout(4), false);
  SplitQueue q(*mem_, false, false);
  ASSERT_TRUE(q.Configure(d.layout()).ok());
  ASSERT_TRUE(d.Add({{kDataGpa, 1}}, {}).has_value());
  Chain c = PopOne(q);
  memset(d.P(kUsedGpa, UsedRingBytes(4)), 0xff, UsedRingBytes(4));
  ASSERT_TRUE(q.Push(c.head, 1).ok());
  EXPECT_EQ(d.UsedIdx(), 1);
}

TEST_F(VirtqueueTest, PushValidatesItsArguments) {
  FakeDriver d(*mem_, Layout(4), false);
  SplitQueue q(*mem_, false, false);
  ASSERT_TRUE(q.Configure(d.layout()).ok());
  EXPECT_EQ(q.Push(0, 0).code(), absl::StatusCode::kFailedPrecondition);  // nothing popped
  ASSERT_TRUE(d.Add({{kDataGpa, 1}}, {}).has_value());
  Chain c = PopOne(q);
  EXPECT_EQ(q.Push(4, 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(q.Push(0xffff, 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(q.Push(c.head, 0).ok());
  EXPECT_EQ(d.UsedIdx(), 1);
}

// --- Copy helpers ------------------------------------------------------------

TEST_F(VirtqueueTest, ReadAndWriteChainAcrossBuffers) {
  const std::vector<Buffer> bufs = {{kDataGpa, 3}, {kDataGpa + 0x100, 4}, {kDataGpa + 0x200, 5}};
  ASSERT_TRUE(WriteChain(*mem_, bufs, 0, "abcdefghijkl", 12).ok());
  EXPECT_EQ(Bytes(*mem_, kDataGpa, 3), "abc");
  EXPECT_EQ(Bytes(*mem_, kDataGpa + 0x100, 4), "defg");
  EXPECT_EQ(Bytes(*mem_, kDataGpa + 0x200, 5), "hijkl");
  char out[6] = {};
  ASSERT_TRUE(ReadChain(*mem_, bufs, 2, out, 6).ok());
  EXPECT_EQ(std::string(out, 6), "cdefgh");
  ASSERT_TRUE(ReadChain(*mem_, bufs, 12, out, 0).ok());
  ASSERT_TRUE(WriteChain(*mem_, bufs, 7, "XY", 2).ok());
  EXPECT_EQ(Bytes(*mem_, kDataGpa + 0x200, 5), "XYjkl");
  // Short copies fail and copy nothing.
  EXPECT_EQ(ReadChain(*mem_, bufs, 8, out, 5).code(), absl::StatusCode::kOutOfRange);
  EXPECT_FALSE(ReadChain(*mem_, bufs, 13, out, 0).ok());
  EXPECT_FALSE(WriteChain(*mem_, bufs, 10, "123", 3).ok());
  EXPECT_EQ(Bytes(*mem_, kDataGpa + 0x200, 5), "XYjkl");
  EXPECT_FALSE(ReadChain(*mem_, bufs, ~0ull, out, 2).ok());
  EXPECT_FALSE(ReadChain(*mem_, {}, 0, out, 1).ok());
  // Bounds are checked again; a bad buffer fails before anything is written.
  const std::vector<Buffer> bad = {{kDataGpa, 2}, {kRamSize - 1, 2}};
  EXPECT_FALSE(WriteChain(*mem_, bad, 0, "zzzz", 4).ok());
  EXPECT_EQ(Bytes(*mem_, kDataGpa, 2), "ab");
  EXPECT_FALSE(ReadChain(*mem_, {{~0ull - 1, 4}}, 0, out, 4).ok());
}

// --- Drivers that break the rules -----------------------------------------------

struct BadDriver {
  const char* name;
  std::function<void(FakeDriver&)> setup;
  uint16_t size = 8;
  bool indirect_feature = true;
};

class MaliciousDriverTest : public ::testing::TestWithParam<BadDriver> {};

TEST_P(MaliciousDriverTest, PopFailsAndTheQueueStaysRefusedUntilReset) {
  auto mem = MakeRam();
  ASSERT_NE(mem, nullptr);
  const BadDriver& bad = GetParam();
  FakeDriver d(*mem, Layout(bad.size), false);
  SplitQueue q(*mem, false, bad.indirect_feature);
  ASSERT_TRUE(q.Configure(d.layout()).ok());
  bad.setup(d);
  auto r = q.Pop();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();

  // Even a well-behaved queue is refused now.
  d.Init();
  ASSERT_TRUE(d.Add({{kDataGpa, 4}}, {{kDataGpa + 4, 4}}).has_value());
  for (int i = 0; i < 2; ++i) {
    r = q.Pop();
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  }

  // Reset and the driver's re-initialisation make it usable again.
  q.Reset();
  ASSERT_TRUE(q.Configure(d.layout()).ok());
  Chain c = PopOne(q);
  EXPECT_EQ(c.readable_bytes, 4u);
  EXPECT_EQ(c.writable_bytes, 4u);
}

void Direct(FakeDriver& d, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags,
            uint16_t next = 0) {
  d.SetDesc(i, addr, len, flags, next);
}

// Chain head 0 -> indirect table at the driver's table for head 0, `entries` long.
uint64_t IndirectAt0(FakeDriver& d, uint32_t table_len, uint16_t flags = kDescFIndirect) {
  const uint64_t table = d.IndirectTable(0);
  d.SetDesc(0, table, table_len, flags, 1);
  return table;
}

const BadDriver kBadDrivers[] = {
    {"DescriptorLoopToItself",
     [](FakeDriver& d) {
       Direct(d, 0, kDataGpa, 16, kDescFNext, 0);
       d.Publish(0);
     }},
    {"DescriptorLoopBackToAnEarlierOne",
     [](FakeDriver& d) {
       Direct(d, 0, kDataGpa, 16, kDescFNext, 1);
       Direct(d, 1, kDataGpa, 16, kDescFNext, 2);
       Direct(d, 2, kDataGpa, 16, kDescFNext, 1);
       d.Publish(0);
     }},
    {"ChainLongerThanTheQueue",
     [](FakeDriver& d) {
       for (uint16_t i = 0; i < 8; ++i) Direct(d, i, kDataGpa + i, 1, kDescFNext, (i + 1) % 8);
       d.Publish(3);
     }},
    {"LargeQueueLoopIsBounded",
     [](FakeDriver& d) {
       for (uint32_t i = 0; i < 1024; ++i) Direct(d, i, kDataGpa, 1, kDescFNext, (i + 1) % 1024);
       d.Publish(0);
     },
     1024},
    {"NextIndexOutOfRange",
     [](FakeDriver& d) {
       Direct(d, 0, kDataGpa, 16, kDescFNext, 8);
       d.Publish(0);
     }},
    {"NextIndexFarOutOfRange",
     [](FakeDriver& d) {
       Direct(d, 0, kDataGpa, 16, kDescFNext, 0xffff);
       d.Publish(0);
     }},
    {"AddressOutsideRam",
     [](FakeDriver& d) {
       Direct(d, 0, kRamSize, 16, 0);
       d.Publish(0);
     }},
    {"BufferCrossesTheEndOfRam",
     [](FakeDriver& d) {
       Direct(d, 0, kRamSize - 8, 16, kDescFWrite);
       d.Publish(0);
     }},
    {"AddressPlusLengthOverflows64Bits",
     [](FakeDriver& d) {
       Direct(d, 0, ~0ull - 15, 0x20, 0);
       d.Publish(0);
     }},
    {"TotalLengthOverflows32Bits",
     // 1024 indirect entries of 4 MiB each: 2^32 bytes.
     [](FakeDriver& d) {
       const uint32_t n = MaxIndirectEntries(256);
       ASSERT_EQ(n, 1024u);
       const uint64_t table = IndirectAt0(d, n * 16);
       for (uint32_t i = 0; i < n; ++i) {
         d.SetDescAt(table, i, 0, kRamSize, i + 1 < n ? kDescFNext : 0, i + 1);
       }
       d.Publish(0);
     },
     256},
    {"ReadableAfterWritable",
     [](FakeDriver& d) {
       Direct(d, 0, kDataGpa, 16, kDescFWrite | kDescFNext, 1);
       Direct(d, 1, kDataGpa + 16, 16, 0);
       d.Publish(0);
     }},
    {"ReadableInIndirectTableAfterWritableDirect",
     [](FakeDriver& d) {
       const uint64_t table = d.IndirectTable(1);
       d.SetDescAt(table, 0, kDataGpa, 16, 0, 0);
       Direct(d, 0, kDataGpa, 16, kDescFWrite | kDescFNext, 1);
       Direct(d, 1, table, 16, kDescFIndirect);
       d.Publish(0);
     }},
    {"ReadableAfterWritableInsideIndirectTable",
     [](FakeDriver& d) {
       const uint64_t table = IndirectAt0(d, 32);
       d.SetDescAt(table, 0, kDataGpa, 16, kDescFWrite | kDescFNext, 1);
       d.SetDescAt(table, 1, kDataGpa, 16, 0, 0);
       d.Publish(0);
     }},
    {"IndirectInsideIndirect",
     [](FakeDriver& d) {
       const uint64_t table = IndirectAt0(d, 32);
       const uint64_t inner = d.IndirectTable(1);
       d.SetDescAt(inner, 0, kDataGpa, 16, 0, 0);
       d.SetDescAt(table, 0, kDataGpa, 16, kDescFNext, 1);
       d.SetDescAt(table, 1, inner, 16, kDescFIndirect, 0);
       d.Publish(0);
     }},
    {"IndirectTableLengthNotAMultipleOf16",
     [](FakeDriver& d) {
       const uint64_t table = IndirectAt0(d, 24);
       d.SetDescAt(table, 0, kDataGpa, 16, 0, 0);
       d.Publish(0);
     }},
    {"IndirectTableLengthZero",
     [](FakeDriver& d) {
       IndirectAt0(d, 0);
       d.Publish(0);
     }},
    {"IndirectWithNext",
     [](FakeDriver& d) {
       const uint64_t table = IndirectAt0(d, 16, kDescFIndirect | kDescFNext);
       d.SetDescAt(table, 0, kDataGpa, 16, 0, 0);
       Direct(d, 1, kDataGpa, 16, kDescFWrite);
       d.Publish(0);
     }},
    {"IndirectWithoutTheFeature",
     [](FakeDriver& d) {
       const uint64_t table = IndirectAt0(d, 16);
       d.SetDescAt(table, 0, kDataGpa, 16, 0, 0);
       d.Publish(0);
     },
     8, /*indirect_feature=*/false},
    {"IndirectTableOutsideRam",
     [](FakeDriver& d) {
       d.SetDesc(0, kRamSize - 16, 32, kDescFIndirect, 0);
       d.Publish(0);
     }},
    {"IndirectTableAddressOverflows",
     [](FakeDriver& d) {
       d.SetDesc(0, ~0ull - 15, 32, kDescFIndirect, 0);
       d.Publish(0);
     }},
    {"IndirectTableTooLong",
     [](FakeDriver& d) {
       const uint32_t n = MaxIndirectEntries(8) + 1;
       const uint64_t table = IndirectAt0(d, n * 16);
       for (uint32_t i = 0; i < n; ++i) {
         d.SetDescAt(table, i, kDataGpa, 1, i + 1 < n ? kDescFNext : 0, i + 1);
       }
       d.Publish(0);
     }},
    {"IndirectTableLoop",
     [](FakeDriver& d) {
       const uint64_t table = IndirectAt0(d, 48);
       d.SetDescAt(table, 0, kDataGpa, 16, kDescFNext, 1);
       d.SetDescAt(table, 1, kDataGpa, 16, kDescFNext, 2);
       d.SetDescAt(table, 2, kDataGpa, 16, kDescFNext, 0);
       d.Publish(0);
     }},
    {"IndirectNextOutOfRange",
     [](FakeDriver& d) {
       const uint64_t table = IndirectAt0(d, 32);
       d.SetDescAt(table, 0, kDataGpa, 16, kDescFNext, 1);
       d.SetDescAt(table, 1, kDataGpa, 16, kDescFNext, 2);
       d.SetDescAt(table, 2, kDataGpa, 16, 0, 0);  // present in memory, not in the table
       d.Publish(0);
     }},
    {"IndirectBufferOutsideRam",
     [](FakeDriver& d) {
       const uint64_t table = IndirectAt0(d, 32);
       d.SetDescAt(table, 0, kDataGpa, 16, kDescFNext, 1);
       d.SetDescAt(table, 1, 0x100000000ull, 16, kDescFWrite, 0);
       d.Publish(0);
     }},
    {"AvailIdxMoreThanTheQueueSizeAhead",
     [](FakeDriver& d) {
       Direct(d, 0, kDataGpa, 16, 0);
       for (int i = 0; i < 8; ++i) d.Publish(0);
       d.SetAvailIdx(9);
     }},
    {"AvailIdxMovedBackwards",
     [](FakeDriver& d) {
       Direct(d, 0, kDataGpa, 16, 0);
       d.Publish(0);
       d.SetAvailIdx(0xffff);
     }},
    {"HeadIndexEqualToTheQueueSize", [](FakeDriver& d) { d.Publish(8); }},
    {"HeadIndexFarOutOfRange", [](FakeDriver& d) { d.Publish(0xffff); }},
};

INSTANTIATE_TEST_SUITE_P(Virtqueue, MaliciousDriverTest, ::testing::ValuesIn(kBadDrivers),
                         [](const ::testing::TestParamInfo<BadDriver>& info) {
                           return std::string(info.param.name);
                         });

TEST_F(VirtqueueTest, MoreChainsOutstandingThanTheQueueSizeIsRefused) {
  // A driver reusing a head it has not got back: the device holds all 4 chains
  // and a fifth shows up.
  FakeDriver d(*mem_, Layout(4), false);
  SplitQueue q(*mem_, false, false);
  ASSERT_TRUE(q.Configure(d.layout()).ok());
  d.SetDesc(0, kDataGpa, 16, 0, 0);
  for (int i = 0; i < 4; ++i) d.Publish(0);
  std::vector<uint16_t> held;
  for (int i = 0; i < 4; ++i) held.push_back(PopOne(q).head);
  ExpectEmpty(q);
  // Returning one makes room for one.
  ASSERT_TRUE(q.Push(held.back(), 0).ok());
  d.Publish(0);
  PopOne(q);
  d.Publish(0);
  auto r = q.Pop();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  EXPECT_FALSE(q.Pop().ok());
}

TEST_F(VirtqueueTest, DescriptorChangedAfterPopDoesNotChangeTheChain) {
  FakeDriver d(*mem_, Layout(4), false);
  SplitQueue q(*mem_, false, true);
  ASSERT_TRUE(q.Configure(d.layout()).ok());
  auto h = d.Add({{kDataGpa, 16}}, {{kDataGpa + 16, 16}}, true);
  ASSERT_TRUE(h.has_value());
  Chain c = PopOne(q);
  // The guest rewrites its table to point outside RAM: the chain keeps the
  // buffers that were checked.
  d.SetDescAt(d.IndirectTable(*h), 1, ~0ull - 8, 0x1000, kDescFWrite, 0);
  ASSERT_EQ(c.writable.size(), 1u);
  EXPECT_EQ(c.writable[0].gpa, kDataGpa + 16);
  EXPECT_TRUE(WriteChain(*mem_, c.writable, 0, "x", 1).ok());
}

// --- Fuzzing -------------------------------------------------------------------

// Two RAM regions, each followed by memfd bytes the guest cannot address; those
// hold a canary that must survive. Every buffer Pop returns must be inside RAM.
constexpr uint64_t kFuzzMemfd = 2 * kMiB;
const std::vector<GuestRamRegion> kFuzzRegions = {{0, 0xe0000, 0}, {0x100000, 0xe0000, 0x100000}};
constexpr uint64_t kCanaryOffsets[][2] = {{0xe0000, 0x20000}, {0x1e0000, 0x20000}};
constexpr uint8_t kCanary = 0xa5;

bool InRam(uint64_t gpa, uint64_t len) {
  for (const auto& r : kFuzzRegions) {
    if (gpa >= r.gpa && gpa - r.gpa < r.size && len <= r.size - (gpa - r.gpa)) return true;
  }
  return false;
}

void PaintCanary(const GuestMemory& mem) {
  for (const auto& c : kCanaryOffsets) memset(mem.host_base() + c[0], kCanary, c[1]);
}

void ExpectCanaryIntact(const GuestMemory& mem) {
  for (const auto& c : kCanaryOffsets) {
    for (uint64_t i = 0; i < c[1]; ++i) {
      ASSERT_EQ(mem.host_base()[c[0] + i], kCanary) << "memfd offset " << c[0] + i;
    }
  }
}

// Checks a chain from Pop against the rules, exercises the copy helpers on it.
void CheckChain(const GuestMemory& mem, const Chain& c, uint16_t size, std::mt19937_64& rng) {
  ASSERT_LT(c.head, size);
  ASSERT_LE(c.readable.size() + c.writable.size(), size + MaxIndirectEntries(size));
  uint64_t r = 0, w = 0;
  for (const Buffer& b : c.readable) {
    ASSERT_GT(b.len, 0u);
    ASSERT_TRUE(InRam(b.gpa, b.len)) << std::hex << b.gpa << " " << b.len;
    r += b.len;
  }
  for (const Buffer& b : c.writable) {
    ASSERT_GT(b.len, 0u);
    ASSERT_TRUE(InRam(b.gpa, b.len)) << std::hex << b.gpa << " " << b.len;
    w += b.len;
  }
  ASSERT_EQ(r, c.readable_bytes);
  ASSERT_EQ(w, c.writable_bytes);
  ASSERT_LE(r + w, 0xffffffffull);
  uint8_t buf[512];
  if (r > 0) {
    const uint64_t off = rng() % r;
    const size_t n = std::min<uint64_t>(r - off, 1 + rng() % sizeof(buf));
    ASSERT_TRUE(ReadChain(mem, c.readable, off, buf, n).ok());
  }
  EXPECT_FALSE(ReadChain(mem, c.readable, r, buf, 1).ok());
  if (w > 0) {
    const uint64_t off = rng() % w;
    const size_t n = std::min<uint64_t>(w - off, 1 + rng() % sizeof(buf));
    for (size_t i = 0; i < n; ++i) buf[i] = static_cast<uint8_t>(rng());
    ASSERT_TRUE(WriteChain(mem, c.writable, off, buf, n).ok());
  }
  EXPECT_FALSE(WriteChain(mem, c.writable, w, buf, 1).ok());
}

class RandomGuest {
 public:
  explicit RandomGuest(std::mt19937_64& rng) : rng_(rng) {}

  uint64_t Addr() {
    switch (rng_() % 12) {
      case 0:
        return 0;
      case 1:
        return rng_() % 0xe0000;  // region A
      case 2:
        return 0x100000 + rng_() % 0xe0000;  // region B
      case 3:
        return 0xe0000 - rng_() % 64;  // end of A
      case 4:
        return 0xe0000 + rng_() % 0x20000;  // hole
      case 5:
        return 0x1e0000 - rng_() % 64;  // end of B
      case 6:
        return 0x1e0000 + rng_() % 0x100000;  // beyond RAM
      case 7:
        return ~0ull - rng_() % 0x10000;  // wraps
      case 8:
        return rng_();
      case 9:
        return 0x10000 + kIndirectStride * (rng_() % 16);  // an indirect table
      case 10:
        return 0x1000;  // the descriptor table
      default:
        return 0x100000 + (rng_() % 0x100) * 0x100;
    }
  }
  uint32_t Len() {
    switch (rng_() % 10) {
      case 0:
        return 0;
      case 1:
        return 1 + rng_() % 16;
      case 2:
        return 16 * (1 + rng_() % 8);
      case 3:
        return 16 * (rng_() % 300);
      case 4:
        return 0xffffffffu;
      case 5:
        return 0x80000000u;
      case 6:
        return static_cast<uint32_t>(rng_());
      case 7:
        return 1 + rng_() % 0x20000;
      case 8:
        return 0xe0000;
      default:
        return 1 + rng_() % 4096;
    }
  }
  uint16_t Flags() {
    if (rng_() % 16 == 0) return static_cast<uint16_t>(rng_());
    return static_cast<uint16_t>(rng_() % 8);
  }
  uint16_t Next(uint16_t size) {
    if (rng_() % 16 == 0) return static_cast<uint16_t>(rng_());
    return static_cast<uint16_t>(rng_() % (size + 2));
  }

 private:
  std::mt19937_64& rng_;
};

TEST(VirtqueueFuzzTest, RandomRingMutationsNeverCrashOrEscapeRam) {
  auto mem = MakeRam(kFuzzMemfd, kFuzzRegions);
  ASSERT_NE(mem, nullptr);
  PaintCanary(*mem);
  constexpr uint16_t kSize = 16;
  const QueueLayout layout{kSize, 0x1000, 0x2000, 0x3000};
  constexpr uint64_t kTables = 0x10000;
  constexpr int kIterations = 100000;

  std::mt19937_64 rng(0x5eed);
  RandomGuest guest(rng);
  int pops = 0, empty = 0, errors = 0, pushes = 0;
  for (int config = 0; config < 4; ++config) {
    const bool event_idx = config & 1, indirect = config & 2;
    FakeDriver d(*mem, layout, event_idx, kTables);
    SplitQueue q(*mem, event_idx, indirect);
    ASSERT_TRUE(q.Configure(layout).ok());
    std::vector<Chain> held;
    auto restart = [&] {
      q.Reset();
      ASSERT_TRUE(q.Configure(layout).ok());
      held.clear();
      d.Init(static_cast<uint16_t>(rng()));
      q.Restore({d.avail_idx(), d.avail_idx(), d.avail_idx()});
    };
    for (int it = 0; it < kIterations / 4; ++it) {
      const int action = rng() % 100;
      if (action < 25) {
        // The driver adds a proper chain.
        std::vector<Sg> out, in;
        const int n = 1 + rng() % 5;
        for (int i = 0; i < n; ++i) {
          const uint64_t base = rng() % 2 ? 0x40000 : 0x100000;
          Sg sg{base + rng() % 0x80000, static_cast<uint32_t>(1 + rng() % 0x2000)};
          (i < n / 2 ? out : in).push_back(sg);
        }
        if (!d.Add(out, in, indirect && rng() % 2).has_value()) restart();
        d.Kick();
      } else if (action < 45) {
        // The guest scribbles on the rings and its indirect tables.
        switch (rng() % 7) {
          case 0:
          case 1:
            d.SetDesc(rng() % kSize, guest.Addr(), guest.Len(), guest.Flags(), guest.Next(kSize));
            break;
          case 2:
            d.SetDescAt(kTables + kIndirectStride * (rng() % kSize), rng() % 24, guest.Addr(),
                        guest.Len(), guest.Flags(), guest.Next(24));
            break;
          case 3:
            d.Publish(rng() % 8 ? rng() % kSize : static_cast<uint16_t>(rng()));
            break;
          case 4:
            d.SetAvailIdx(d.avail_idx() + (rng() % 8 ? rng() % 3 : rng()));
            break;
          case 5:
            d.SetAvailFlags(static_cast<uint16_t>(rng()));
            d.SetUsedEvent(static_cast<uint16_t>(rng()));
            break;
          default: {
            // Any byte of the rings, the used ring included.
            const uint64_t gpa = 0x1000 + rng() % 0x2100;
            mem->host_base()[gpa] = static_cast<uint8_t>(rng());
            break;
          }
        }
      } else if (action < 80) {
        // The device pops a few.
        const int n = 1 + rng() % 4;
        for (int i = 0; i < n; ++i) {
          auto c = q.Pop();
          if (!c.ok()) {
            ++errors;
            ASSERT_FALSE(q.Pop().ok());
            restart();
            break;
          }
          if (!c->has_value()) {
            ++empty;
            break;
          }
          ++pops;
          Chain& chain = **c;
          CheckChain(*mem, chain, kSize, rng);
          if (HasFatalFailure()) return;
          held.push_back(std::move(chain));
        }
      } else if (action < 95) {
        // The device returns some, in any order.
        while (!held.empty() && rng() % 3) {
          const size_t i = rng() % held.size();
          const Chain& c = held[i];
          const uint32_t written = c.writable_bytes ? rng() % (c.writable_bytes + 1) : 0;
          ASSERT_TRUE(q.Push(c.head, written).ok());
          ++pushes;
          held.erase(held.begin() + i);
        }
        q.NeedsInterrupt();
        while (d.GetUsed().has_value()) {
        }
      } else {
        q.SetNotificationsEnabled(rng() % 2);
        q.NeedsInterrupt();
      }
    }
  }
  ExpectCanaryIntact(*mem);
  // The run exercised both sides.
  EXPECT_GT(pops, 5000);
  EXPECT_GT(errors, 1000);
  EXPECT_GT(empty, 1000);
  EXPECT_GT(pushes, 5000);
  std::cout << "pops " << pops << ", empty " << empty << ", errors " << errors << ", pushes "
            << pushes << "\n";
}

TEST(VirtqueueFuzzTest, GuestScribblingConcurrentlyWhileTheDevicePops) {
  auto mem = MakeRam(kFuzzMemfd, kFuzzRegions);
  ASSERT_NE(mem, nullptr);
  PaintCanary(*mem);
  constexpr uint16_t kSize = 16;
  const QueueLayout layout{kSize, 0x1000, 0x2000, 0x3000};
  uint8_t* const base = mem->host_base();

  // The guest: another thread writing plausible and implausible descriptors,
  // ring entries and indices with no regard for what the device is doing.
  std::atomic<bool> stop{false};
  std::thread vcpu([&] {
    std::mt19937_64 rng(99);
    RandomGuest guest(rng);
    while (!stop.load(std::memory_order_relaxed)) {
      switch (rng() % 6) {
        case 0:
        case 1: {
          uint8_t* p = base + 0x1000 + 16 * (rng() % kSize);
          __atomic_store_n(reinterpret_cast<uint64_t*>(p), guest.Addr(), __ATOMIC_RELAXED);
          __atomic_store_n(reinterpret_cast<uint32_t*>(p + 8), guest.Len(), __ATOMIC_RELAXED);
          __atomic_store_n(reinterpret_cast<uint16_t*>(p + 12), guest.Flags(), __ATOMIC_RELAXED);
          __atomic_store_n(reinterpret_cast<uint16_t*>(p + 14), guest.Next(kSize),
                           __ATOMIC_RELAXED);
          break;
        }
        case 2: {
          uint8_t* p = base + 0x10000 + kIndirectStride * (rng() % kSize) + 16 * (rng() % 8);
          __atomic_store_n(reinterpret_cast<uint64_t*>(p), guest.Addr(), __ATOMIC_RELAXED);
          __atomic_store_n(reinterpret_cast<uint32_t*>(p + 8), 1 + rng() % 64, __ATOMIC_RELAXED);
          __atomic_store_n(reinterpret_cast<uint16_t*>(p + 12), rng() % 4, __ATOMIC_RELAXED);
          __atomic_store_n(reinterpret_cast<uint16_t*>(p + 14), rng() % 9, __ATOMIC_RELAXED);
          break;
        }
        case 3:
          __atomic_store_n(reinterpret_cast<uint16_t*>(base + 0x2004 + 2 * (rng() % kSize)),
                           rng() % (kSize + 1), __ATOMIC_RELAXED);
          break;
        case 4:
          __atomic_fetch_add(reinterpret_cast<uint16_t*>(base + 0x2002), 1, __ATOMIC_RELEASE);
          break;
        default:
          __atomic_store_n(base + 0x1000 + rng() % 0x2100, static_cast<uint8_t>(rng()),
                           __ATOMIC_RELAXED);
      }
    }
  });

  std::mt19937_64 rng(7);
  SplitQueue q(*mem, true, true);
  ASSERT_TRUE(q.Configure(layout).ok());
  // At least 200k pops, and on until the guest has produced enough good and bad
  // chains (how fast it does depends on scheduling), within a deadline.
  int pops = 0, errors = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (int i = 0; (i < 200000 || pops < 2000 || errors < 2000) && !HasFatalFailure() &&
                  std::chrono::steady_clock::now() < deadline;
       ++i) {
    auto c = q.Pop();
    if (!c.ok()) {
      ++errors;
      // Start again just behind wherever the guest's avail index is now.
      q.Reset();
      ASSERT_TRUE(q.Configure(layout).ok());
      const uint16_t idx =
          __atomic_load_n(reinterpret_cast<uint16_t*>(base + 0x2002), __ATOMIC_ACQUIRE);
      const uint16_t from = idx - rng() % 4;
      q.Restore({from, from, from});
      continue;
    }
    if (!c->has_value()) continue;
    ++pops;
    CheckChain(*mem, **c, kSize, rng);
    ASSERT_TRUE(q.Push((*c)->head, 0).ok());
    q.NeedsInterrupt();
  }
  stop = true;
  vcpu.join();
  ExpectCanaryIntact(*mem);
  EXPECT_GE(pops, 2000);
  EXPECT_GE(errors, 2000);
  std::cout << "pops " << pops << ", errors " << errors << "\n";
}

}  // namespace
}  // namespace hv::virtio
