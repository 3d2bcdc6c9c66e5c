#include "devproc/virtio_net/net_queues.h"

#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/fd.h"
#include "devproc/virtio/fake_driver.h"
#include "gtest/gtest.h"

namespace hv::virtio_net {
namespace {

using virtio::FakeDriver;
using virtio::QueueLayout;
using virtio::Sg;
using virtio::SplitQueue;

constexpr uint64_t kRam = 4 * kMiB;
// Rings of the receive and transmit queues, and the fake driver's buffers.
constexpr QueueLayout kRxLayout = {16, 0x10000, 0x11000, 0x12000};
constexpr QueueLayout kTxLayout = {16, 0x20000, 0x21000, 0x22000};
constexpr uint64_t kRxIndirect = 0x40000, kTxIndirect = 0x60000;
constexpr uint64_t kData = 0x200000;

constexpr uint64_t Bit(int n) { return 1ull << n; }
constexpr uint64_t kBaseFeatures = (1ull << 32) | Bit(kFeatureMac) | Bit(kFeatureStatus);
constexpr uint64_t kOffloads = Bit(kFeatureCsum) | Bit(kFeatureGuestCsum) |
                               Bit(kFeatureHostTso4) | Bit(kFeatureHostTso6) |
                               Bit(kFeatureGuestTso4) | Bit(kFeatureGuestTso6);

std::vector<uint8_t> Pattern(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = rng() & 0xff;
  return v;
}

std::vector<uint8_t> Header(const NetHeader& h) {
  std::vector<uint8_t> b(kHeaderSize);
  EncodeHeader(h, b.data());
  return b;
}

class NetQueuesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Fd memfd(memfd_create("guest", MFD_CLOEXEC));
    ASSERT_TRUE(memfd.valid());
    ASSERT_EQ(ftruncate(memfd.get(), kRam), 0);
    auto mem = GuestMemory::Map(memfd.get(), kRam, {{0, kRam, 0}});
    ASSERT_TRUE(mem.ok()) << mem.status();
    mem_ = std::move(*mem);
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK, 0, sv), 0);
    device_end_.Reset(sv[0]);
    host_end_.Reset(sv[1]);
  }

  // Queues and a pair with `features` negotiated.
  void Start(uint64_t features, bool event_idx = false) {
    rx_driver_ = std::make_unique<FakeDriver>(*mem_, kRxLayout, event_idx, kRxIndirect);
    tx_driver_ = std::make_unique<FakeDriver>(*mem_, kTxLayout, event_idx, kTxIndirect);
    rx_ = std::make_unique<SplitQueue>(*mem_, event_idx, true);
    tx_ = std::make_unique<SplitQueue>(*mem_, event_idx, true);
    ASSERT_TRUE(rx_->Configure(kRxLayout).ok());
    ASSERT_TRUE(tx_->Configure(kTxLayout).ok());
    pair_ = std::make_unique<QueuePair>(*mem_, *rx_, *tx_, device_end_.get(), features);
  }

  // Guest memory: a bump allocator.
  Sg Put(const std::vector<uint8_t>& bytes) {
    Sg sg{next_, static_cast<uint32_t>(bytes.size())};
    EXPECT_TRUE(mem_->Write(next_, bytes.data(), bytes.size()).ok());
    next_ = (next_ + bytes.size() + 63) & ~63ull;
    return sg;
  }
  Sg Space(size_t n) { return Put(std::vector<uint8_t>(n, 0xee)); }
  std::vector<uint8_t> Get(const Sg& sg, size_t n) {
    std::vector<uint8_t> v(n);
    EXPECT_TRUE(mem_->Read(sg.gpa, v.data(), n).ok());
    return v;
  }

  // What the backend received, one frame (header included); empty if none.
  std::vector<uint8_t> HostRecv() {
    std::vector<uint8_t> buf(80000);
    ssize_t n = recv(host_end_.get(), buf.data(), buf.size(), MSG_DONTWAIT);
    if (n < 0) return {};
    buf.resize(n);
    return buf;
  }
  void HostSend(const std::vector<uint8_t>& frame) {
    ASSERT_EQ(send(host_end_.get(), frame.data(), frame.size(), 0),
              static_cast<ssize_t>(frame.size()));
  }
  // A frame from the host: header and `len` bytes of pattern.
  std::vector<uint8_t> HostFrame(size_t len, uint32_t seed, NetHeader h = {}) {
    std::vector<uint8_t> f = Header(h);
    auto body = Pattern(len, seed);
    f.insert(f.end(), body.begin(), body.end());
    return f;
  }

  std::unique_ptr<GuestMemory> mem_;
  Fd device_end_, host_end_;
  std::unique_ptr<FakeDriver> rx_driver_, tx_driver_;
  std::unique_ptr<SplitQueue> rx_, tx_;
  std::unique_ptr<QueuePair> pair_;
  uint64_t next_ = kData;
};

// --- options, features, config ---------------------------------------------------

TEST(NetOptionsTest, ParsesBackendsMacQueuesAndForwards) {
  auto user = ParseNetOptions("user", {{"hostfwd", "tcp:127.0.0.1:2222-:22"},
                                       {"hostfwd", "udp::5353-10.0.2.15:53"},
                                       {"mac", "52:54:00:12:34:56"}});
  ASSERT_TRUE(user.ok()) << user.status();
  EXPECT_EQ(user->backend, Backend::kUser);
  ASSERT_EQ(user->forwards.size(), 2u);
  EXPECT_FALSE(user->forwards[0].udp);
  EXPECT_EQ(user->forwards[0].host_addr, 0x7f000001u);
  EXPECT_EQ(user->forwards[0].host_port, 2222);
  EXPECT_EQ(user->forwards[0].guest_addr, 0u);
  EXPECT_EQ(user->forwards[0].guest_port, 22);
  EXPECT_TRUE(user->forwards[1].udp);
  EXPECT_EQ(user->forwards[1].host_addr, 0u);
  EXPECT_EQ(user->forwards[1].guest_addr, 0x0a00020fu);
  EXPECT_TRUE(user->mac_set);
  EXPECT_EQ(FormatMac(user->mac), "52:54:00:12:34:56");
  EXPECT_EQ(ParseNetOptions("slirp", {})->backend, Backend::kUser);
  EXPECT_EQ(ParseNetOptions("", {})->backend, Backend::kUser);

  auto tap = ParseNetOptions("tap0", {{"queues", "4"}});
  ASSERT_TRUE(tap.ok()) << tap.status();
  EXPECT_EQ(tap->backend, Backend::kTap);
  EXPECT_EQ(tap->tap_name, "tap0");
  EXPECT_EQ(tap->queue_pairs, 4);

  for (auto bad : std::vector<std::pair<std::string, std::vector<std::pair<std::string, std::string>>>>{
           {"tap0", {{"queues", "0"}}},
           {"tap0", {{"queues", "9"}}},
           {"user", {{"queues", "2"}}},                 // slirp has one pair
           {"tap0", {{"hostfwd", "tcp::1-:2"}}},        // forwards are user mode's
           {"user", {{"hostfwd", "tcp:127.0.0.1:2222"}}},
           {"user", {{"hostfwd", "sctp::1-:2"}}},
           {"user", {{"hostfwd", "tcp::0-:22"}}},
           {"user", {{"hostfwd", "tcp::70000-:22"}}},
           {"user", {{"hostfwd", "tcp:1.2.3:22-:22"}}},
           {"user", {{"mac", "01:00:5e:00:00:01"}}},    // multicast
           {"user", {{"mac", "00:00:00:00:00:00"}}},
           {"user", {{"mac", "12:34:56"}}},
           {"user", {{"mac", "zz:34:56:78:9a:bc"}}},
           {"user", {{"speed", "fast"}}},
           {"a/b", {}},
           {"averylonginterfacename", {}},
       }) {
    EXPECT_FALSE(ParseNetOptions(bad.first, bad.second).ok()) << bad.first;
  }
}

TEST(NetOptionsTest, DefaultMacIsStableLocalAndPerSlot) {
  MacAddress a = DefaultMac("vm1", 3, 0);
  EXPECT_EQ(a, DefaultMac("vm1", 3, 0));
  EXPECT_NE(a, DefaultMac("vm1", 4, 0));
  EXPECT_NE(a, DefaultMac("vm1", 3, 1));
  EXPECT_NE(a, DefaultMac("vm2", 3, 0));
  EXPECT_EQ(a[0], 0x02);  // locally administered, unicast
  EXPECT_TRUE(ParseMac(FormatMac(a)).ok());
}

TEST(NetOptionsTest, FeaturesAndConfigFollowTheBackend) {
  NetDeviceConfig user{{2, 0x68, 0x76, 1, 2, 3}, 1, false};
  uint64_t f = DeviceFeatures(user);
  EXPECT_TRUE(f & (1ull << 32));
  EXPECT_TRUE(f & Bit(kFeatureMac));
  EXPECT_TRUE(f & Bit(kFeatureStatus));
  EXPECT_TRUE(f & Bit(kFeatureMrgRxbuf));
  EXPECT_FALSE(f & (Bit(kFeatureCsum) | Bit(kFeatureGuestCsum) | Bit(kFeatureHostTso4)));
  EXPECT_FALSE(f & (Bit(kFeatureMq) | Bit(kFeatureCtrlVq)));
  EXPECT_EQ(NumQueues(user), 2);
  std::vector<uint8_t> cfg = BuildConfig(user);
  ASSERT_EQ(cfg.size(), 10u);
  EXPECT_EQ(std::vector<uint8_t>(cfg.begin(), cfg.begin() + 6),
            (std::vector<uint8_t>{2, 0x68, 0x76, 1, 2, 3}));
  EXPECT_EQ(cfg[6] | (cfg[7] << 8), 1);  // VIRTIO_NET_S_LINK_UP
  EXPECT_EQ(cfg[8] | (cfg[9] << 8), 1);

  NetDeviceConfig tap{{2, 0, 0, 0, 0, 1}, 4, true};
  f = DeviceFeatures(tap);
  EXPECT_EQ(f & kOffloads, kOffloads);
  EXPECT_TRUE(f & Bit(kFeatureMq));
  EXPECT_TRUE(f & Bit(kFeatureCtrlVq));
  EXPECT_EQ(NumQueues(tap), 9);
  EXPECT_EQ(BuildConfig(tap)[8], 4);
}

// --- transmit ------------------------------------------------------------------

TEST_F(NetQueuesTest, TransmitSendsHeaderAndFrameAcrossBuffers) {
  Start(kBaseFeatures | kOffloads);
  NetHeader h;
  h.flags = kHeaderNeedsCsum;
  h.csum_start = 34;
  h.csum_offset = 16;
  auto frame = Pattern(1000, 1);
  // The header split over two buffers, the frame over two more.
  auto hdr = Header(h);
  Sg a = Put({hdr.begin(), hdr.begin() + 5});
  Sg b = Put({hdr.begin() + 5, hdr.end()});
  Sg c = Put({frame.begin(), frame.begin() + 400});
  Sg d = Put({frame.begin() + 400, frame.end()});
  auto head = tx_driver_->Add({a, b, c, d}, {});
  ASSERT_TRUE(head.has_value());
  ASSERT_TRUE(pair_->OnTxChains().ok());

  auto got = HostRecv();
  ASSERT_EQ(got.size(), kHeaderSize + frame.size());
  NetHeader sent = DecodeHeader(got.data());
  EXPECT_EQ(sent.flags, kHeaderNeedsCsum);
  EXPECT_EQ(sent.csum_start, 34);
  EXPECT_EQ(sent.csum_offset, 16);
  EXPECT_EQ(std::vector<uint8_t>(got.begin() + kHeaderSize, got.end()), frame);
  auto used = tx_driver_->GetUsed();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->first, *head);
  EXPECT_EQ(used->second, 0u);
  EXPECT_EQ(pair_->counters().tx_packets, 1u);
  EXPECT_EQ(pair_->counters().tx_bytes, 1000u);
  EXPECT_TRUE(HostRecv().empty());
}

TEST_F(NetQueuesTest, TransmitWithManyBuffersIsLinearised) {
  Start(kBaseFeatures);
  auto frame = Pattern(200, 2);
  std::vector<Sg> out = {Put(Header({}))};
  for (size_t i = 0; i < frame.size(); i += 2) out.push_back(Put({frame[i], frame[i + 1]}));
  ASSERT_TRUE(tx_driver_->Add(out, {}, /*indirect=*/true).has_value());
  ASSERT_TRUE(pair_->OnTxChains().ok());
  auto got = HostRecv();
  ASSERT_EQ(got.size(), kHeaderSize + 200);
  EXPECT_EQ(std::vector<uint8_t>(got.begin() + kHeaderSize, got.end()), frame);
}

TEST_F(NetQueuesTest, TransmitWaitsWhenTheBackendIsFull) {
  Start(kBaseFeatures);
  int small = 4096;
  ASSERT_EQ(setsockopt(device_end_.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
  // Chains until the socket refuses one: it is kept, not dropped.
  int added = 0;
  for (; added < 16; ++added) {
    if (!tx_driver_->Add({Put(Header({})), Put(Pattern(1400, added))}, {}).has_value()) break;
  }
  ASSERT_TRUE(pair_->OnTxChains().ok());
  EXPECT_TRUE(pair_->wanted_events() & POLLOUT);
  uint64_t sent_first = pair_->counters().tx_packets;
  EXPECT_LT(sent_first, static_cast<uint64_t>(added));
  EXPECT_EQ(pair_->counters().tx_dropped, 0u);
  // The host drains; the device resumes on POLLOUT, in order.
  int received = 0;
  for (int round = 0; round < 100 && received < added; ++round) {
    for (auto f = HostRecv(); !f.empty(); f = HostRecv()) {
      ASSERT_EQ(f.size(), kHeaderSize + 1400);
      EXPECT_EQ(std::vector<uint8_t>(f.begin() + kHeaderSize, f.end()), Pattern(1400, received));
      ++received;
    }
    ASSERT_TRUE(pair_->OnBackendReady(POLLOUT).ok());
  }
  EXPECT_EQ(received, added);
  EXPECT_EQ(pair_->counters().tx_packets, static_cast<uint64_t>(added));
  EXPECT_FALSE(pair_->wanted_events() & POLLOUT);
}

// --- receive -------------------------------------------------------------------

TEST_F(NetQueuesTest, ReceiveMergesBuffersAndCountsThem) {
  Start(kBaseFeatures | Bit(kFeatureMrgRxbuf));
  std::vector<Sg> bufs;
  for (int i = 0; i < 4; ++i) {
    bufs.push_back(Space(1500));
    ASSERT_TRUE(rx_driver_->Add({}, {bufs.back()}).has_value());
  }
  auto frame = HostFrame(3000, 7);  // 3012 bytes: 1500 + 1500 + 12
  HostSend(frame);
  ASSERT_TRUE(pair_->OnBackendReady(POLLIN).ok());
  std::vector<uint8_t> got;
  std::vector<uint32_t> lens;
  for (auto u = rx_driver_->GetUsed(); u; u = rx_driver_->GetUsed()) {
    lens.push_back(u->second);
    auto part = Get(bufs[u->first], u->second);
    got.insert(got.end(), part.begin(), part.end());
  }
  EXPECT_EQ(lens, (std::vector<uint32_t>{1500, 1500, 12}));
  ASSERT_EQ(got.size(), frame.size());
  EXPECT_EQ(DecodeHeader(got.data()).num_buffers, 3);
  EXPECT_EQ(std::vector<uint8_t>(got.begin() + kHeaderSize, got.end()),
            std::vector<uint8_t>(frame.begin() + kHeaderSize, frame.end()));
  EXPECT_EQ(pair_->counters().rx_packets, 1u);
  EXPECT_EQ(pair_->counters().rx_bytes, 3000u);
  EXPECT_TRUE(pair_->wanted_events() & POLLIN);
}

TEST_F(NetQueuesTest, ReceiveWithoutMergeDropsWhatDoesNotFitAndKeepsTheBuffer) {
  Start(kBaseFeatures);
  Sg buf = Space(1526);
  ASSERT_TRUE(rx_driver_->Add({}, {buf}).has_value());
  HostSend(HostFrame(3000, 1));  // too big for the one buffer
  auto small = HostFrame(100, 2);
  HostSend(small);
  ASSERT_TRUE(pair_->OnBackendReady(POLLIN).ok());
  auto u = rx_driver_->GetUsed();
  ASSERT_TRUE(u.has_value());
  EXPECT_EQ(u->second, small.size());
  auto got = Get(buf, small.size());
  EXPECT_EQ(DecodeHeader(got.data()).num_buffers, 1);
  EXPECT_EQ(std::vector<uint8_t>(got.begin() + kHeaderSize, got.end()),
            std::vector<uint8_t>(small.begin() + kHeaderSize, small.end()));
  EXPECT_EQ(pair_->counters().rx_dropped, 1u);
  EXPECT_EQ(pair_->counters().rx_packets, 1u);
}

TEST_F(NetQueuesTest, ReceiveWaitsForBuffersInsteadOfDropping) {
  Start(kBaseFeatures | Bit(kFeatureMrgRxbuf), /*event_idx=*/true);
  for (int i = 0; i < 5; ++i) HostSend(HostFrame(500, i));
  ASSERT_TRUE(pair_->OnBackendReady(POLLIN).ok());
  EXPECT_FALSE(pair_->wanted_events() & POLLIN);  // stopped reading: back-pressure
  EXPECT_EQ(pair_->counters().rx_dropped, 0u);
  // Two buffers now: two frames; the rest keep waiting.
  std::vector<Sg> bufs;
  for (int i = 0; i < 2; ++i) {
    bufs.push_back(Space(2048));
    ASSERT_TRUE(rx_driver_->Add({}, {bufs.back()}).has_value());
  }
  EXPECT_TRUE(rx_driver_->Kick());  // the device asked for a kick when it ran dry
  ASSERT_TRUE(pair_->OnRxBuffers().ok());
  EXPECT_EQ(pair_->counters().rx_packets, 2u);
  EXPECT_FALSE(pair_->wanted_events() & POLLIN);
  for (int i = 0; i < 8; ++i) {
    bufs.push_back(Space(2048));
    ASSERT_TRUE(rx_driver_->Add({}, {bufs.back()}).has_value());
  }
  ASSERT_TRUE(pair_->OnRxBuffers().ok());
  EXPECT_EQ(pair_->counters().rx_packets, 5u);
  EXPECT_EQ(pair_->counters().rx_dropped, 0u);
  EXPECT_TRUE(pair_->wanted_events() & POLLIN);
  // In order.
  for (int i = 0; i < 5; ++i) {
    auto u = rx_driver_->GetUsed();
    ASSERT_TRUE(u.has_value());
    auto got = Get(bufs[i], u->second);
    EXPECT_EQ(std::vector<uint8_t>(got.begin() + kHeaderSize, got.end()), Pattern(500, i)) << i;
  }
}

TEST_F(NetQueuesTest, ReceiveDropsOffloadsTheDriverDidNotTake) {
  Start(kBaseFeatures | Bit(kFeatureMrgRxbuf));
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(rx_driver_->Add({}, {Space(2048)}).has_value());
  NetHeader partial;
  partial.flags = kHeaderNeedsCsum;
  HostSend(HostFrame(100, 1, partial));
  NetHeader gso;
  gso.gso_type = kGsoTcpV4;
  gso.gso_size = 1448;
  HostSend(HostFrame(100, 2, gso));
  HostSend(HostFrame(4, 3));  // a runt: no Ethernet header
  HostSend(HostFrame(100, 4));
  ASSERT_TRUE(pair_->OnBackendReady(POLLIN).ok());
  EXPECT_EQ(pair_->counters().rx_dropped, 3u);
  EXPECT_EQ(pair_->counters().rx_packets, 1u);
}

// --- a guest that breaks the rules -------------------------------------------------

TEST_F(NetQueuesTest, TransmitChainShorterThanTheHeaderIsADriverError) {
  Start(kBaseFeatures);
  ASSERT_TRUE(tx_driver_->Add({Put(std::vector<uint8_t>(7, 0))}, {}).has_value());
  absl::Status s = pair_->OnTxChains();
  EXPECT_FALSE(s.ok());
  EXPECT_NE(std::string(s.message()).find("header"), std::string::npos) << s;
  EXPECT_TRUE(HostRecv().empty());
}

TEST_F(NetQueuesTest, ReceiveBufferSmallerThanTheHeaderIsADriverError) {
  Start(kBaseFeatures | Bit(kFeatureMrgRxbuf));
  ASSERT_TRUE(rx_driver_->Add({}, {Space(8)}).has_value());
  HostSend(HostFrame(100, 1));
  absl::Status s = pair_->OnBackendReady(POLLIN);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(pair_->counters().rx_packets, 0u);
}

TEST_F(NetQueuesTest, BadFramesAreDroppedAndTheirChainsReturned) {
  Start(kBaseFeatures | Bit(kFeatureCsum) | Bit(kFeatureHostTso4));
  struct Case {
    const char* what;
    NetHeader header;
    size_t frame;
  };
  NetHeader csum_outside;
  csum_outside.flags = kHeaderNeedsCsum;
  csum_outside.csum_start = 90;
  csum_outside.csum_offset = 16;  // 90 + 16 + 2 > 100
  NetHeader tso6;  // not negotiated
  tso6.flags = kHeaderNeedsCsum;
  tso6.gso_type = kGsoTcpV6;
  tso6.gso_size = 1440;
  NetHeader ufo;
  ufo.flags = kHeaderNeedsCsum;
  ufo.gso_type = kGsoUdp;
  ufo.gso_size = 1440;
  NetHeader tso_no_size;
  tso_no_size.flags = kHeaderNeedsCsum;
  tso_no_size.gso_type = kGsoTcpV4;
  NetHeader ecn;  // HOST_ECN not negotiated
  ecn.flags = kHeaderNeedsCsum;
  ecn.gso_type = kGsoTcpV4 | kGsoEcn;
  ecn.gso_size = 1440;
  std::vector<Case> cases = {
      {"runt", {}, 10},
      {"oversized", {}, kMaxFrame + 1},
      {"checksum outside the frame", csum_outside, 100},
      {"TSO6 not negotiated", tso6, 2000},
      {"UFO never offered", ufo, 2000},
      {"TSO without gso_size", tso_no_size, 2000},
      {"ECN not negotiated", ecn, 2000},
  };
  for (const Case& c : cases) {
    ASSERT_TRUE(tx_driver_->Add({Put(Header(c.header)), Put(Pattern(c.frame, 1))}, {}).has_value())
        << c.what;
    next_ = kData;  // reuse the buffers: frames can be large
  }
  ASSERT_TRUE(pair_->OnTxChains().ok());
  EXPECT_EQ(pair_->counters().tx_dropped, cases.size());
  EXPECT_EQ(pair_->counters().tx_packets, 0u);
  EXPECT_TRUE(HostRecv().empty());
  for (size_t i = 0; i < cases.size(); ++i) {
    auto u = tx_driver_->GetUsed();
    ASSERT_TRUE(u.has_value()) << cases[i].what;
    EXPECT_EQ(u->second, 0u);
  }
  // The queue still works. Flags other than NEEDS_CSUM (DATA_VALID, unknown
  // bits) are not passed on.
  NetHeader vouching;
  vouching.flags = kHeaderDataValid | 0x80;
  ASSERT_TRUE(tx_driver_->Add({Put(Header(vouching)), Put(Pattern(60, 9))}, {}).has_value());
  ASSERT_TRUE(pair_->OnTxChains().ok());
  auto sent = HostRecv();
  ASSERT_EQ(sent.size(), kHeaderSize + 60);
  EXPECT_EQ(DecodeHeader(sent.data()).flags, 0);
}

TEST_F(NetQueuesTest, BadDescriptorChainsAreErrorsNotCrashes) {
  Start(kBaseFeatures);
  // A buffer outside guest RAM.
  tx_driver_->SetDesc(0, kRam - 4, 64, 0, 0);
  tx_driver_->Publish(0);
  EXPECT_FALSE(pair_->OnTxChains().ok());
  // A loop on the receive side.
  rx_driver_->SetDesc(0, kData, 2048, virtio::kDescFWrite | virtio::kDescFNext, 1);
  rx_driver_->SetDesc(1, kData, 2048, virtio::kDescFWrite | virtio::kDescFNext, 0);
  rx_driver_->Publish(0);
  HostSend(HostFrame(100, 1));
  EXPECT_FALSE(pair_->OnBackendReady(POLLIN).ok());
  // Once broken, the queues keep refusing (until the transport resets them).
  EXPECT_FALSE(pair_->OnTxChains().ok());
}

TEST_F(NetQueuesTest, RandomRingsNeverCrashTheDevice) {
  std::mt19937 rng(12345);
  for (int round = 0; round < 300; ++round) {
    Start(kBaseFeatures | (rng() % 2 ? Bit(kFeatureMrgRxbuf) : 0) | (rng() % 2 ? kOffloads : 0),
          rng() % 2);
    for (int i = 0; i < 16; ++i) {
      uint64_t addr = rng() % 2 ? kData + rng() % 0x10000 : rng();
      uint32_t len = rng() % 4 ? rng() % 3000 : rng();
      uint16_t flags = rng() & 7;
      rx_driver_->SetDesc(i, addr, len, flags, rng() % 20);
      // Transmit buffers hold random headers too.
      std::vector<uint8_t> junk = Pattern(64, rng());
      ASSERT_TRUE(mem_->Write(kData + 64 * i, junk.data(), junk.size()).ok());
      tx_driver_->SetDesc(i, rng() % 2 ? kData + 64 * i : addr, len, flags & ~virtio::kDescFWrite,
                          rng() % 20);
    }
    for (int i = 0; i < 8; ++i) {
      rx_driver_->Publish(rng() % 20);
      tx_driver_->Publish(rng() % 20);
    }
    HostSend(HostFrame(rng() % 2000 + 20, rng()));
    // Errors are expected (most rings are nonsense); crashes and frames the
    // device should have refused are not.
    (void)pair_->OnBackendReady(POLLIN | POLLOUT);
    (void)pair_->OnTxChains();
    (void)pair_->OnRxBuffers();
    for (auto f = HostRecv(); !f.empty(); f = HostRecv()) {
      EXPECT_GE(f.size(), kHeaderSize + kMinFrame);
      EXPECT_LE(f.size(), kHeaderSize + kMaxFrame);
      NetHeader h = DecodeHeader(f.data());
      EXPECT_EQ(h.flags & ~(kHeaderNeedsCsum | kHeaderDataValid), 0);
      if (h.flags & kHeaderNeedsCsum) {
        EXPECT_LE(size_t{h.csum_start} + h.csum_offset + 2, f.size() - kHeaderSize);
      }
    }
    pair_.reset();
    while (recv(device_end_.get(), nullptr, 0, MSG_DONTWAIT | MSG_TRUNC) > 0) {
    }
  }
}

// --- control queue ---------------------------------------------------------------

TEST_F(NetQueuesTest, ControlQueueSetsQueuePairsAndRefusesTheRest) {
  auto run = [&](std::vector<uint8_t> command, size_t ack_room) {
    virtio::Chain c;
    c.head = 0;
    Sg cmd = Put(command);
    Sg ack = Space(ack_room);
    c.readable = {{cmd.gpa, cmd.len}};
    c.readable_bytes = cmd.len;
    if (ack_room) c.writable = {{ack.gpa, ack.len}};
    c.writable_bytes = ack_room;
    auto r = HandleControl(*mem_, c, 4);
    if (r.ok()) {
      EXPECT_EQ(Get(ack, ack_room).back(), r->ack);
    }
    return r;
  };
  auto ok = run({kCtrlClassMq, kCtrlMqPairsSet, 2, 0}, 1);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->ack, kCtrlOk);
  EXPECT_EQ(ok->pairs_set, 2);
  auto too_many = run({kCtrlClassMq, kCtrlMqPairsSet, 5, 0}, 1);
  ASSERT_TRUE(too_many.ok());
  EXPECT_EQ(too_many->ack, kCtrlErr);
  EXPECT_EQ(too_many->pairs_set, 0);
  auto zero = run({kCtrlClassMq, kCtrlMqPairsSet, 0, 0}, 1);
  EXPECT_EQ(zero->ack, kCtrlErr);
  auto truncated = run({kCtrlClassMq, kCtrlMqPairsSet, 2}, 1);
  EXPECT_EQ(truncated->ack, kCtrlErr);
  auto other = run({0 /* RX class */, 0, 1}, 1);
  EXPECT_EQ(other->ack, kCtrlErr);
  EXPECT_FALSE(run({kCtrlClassMq}, 1).ok());  // no room for class and command
  EXPECT_FALSE(run({kCtrlClassMq, kCtrlMqPairsSet, 2, 0}, 0).ok());  // no ack byte
}

}  // namespace
}  // namespace hv::virtio_net
