#include "devproc/virtio_net/user_network.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "common/fd.h"
#include "common/guest_memory.h"
#include "devproc/virtio/fake_driver.h"
#include <sys/mman.h>
#include "gtest/gtest.h"

namespace hv::virtio_net {
namespace {

const uint8_t kGuestMac[6] = {0x02, 0x68, 0x76, 0x00, 0x00, 0x01};

// A frame from slirp within `ms`, header included; empty if none.
std::vector<uint8_t> Receive(int fd, int ms) {
  pollfd p = {fd, POLLIN, 0};
  if (poll(&p, 1, ms) != 1) return {};
  std::vector<uint8_t> buf(70000);
  ssize_t n = recv(fd, buf.data(), buf.size(), MSG_DONTWAIT);
  if (n < 0) return {};
  buf.resize(n);
  return buf;
}

// The guest (10.0.2.15) asks who has 10.0.2.2.
std::vector<uint8_t> ArpRequest() {
  std::vector<uint8_t> f(kHeaderSize, 0);
  uint8_t eth[14] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  memcpy(eth + 6, kGuestMac, 6);
  eth[12] = 0x08;
  eth[13] = 0x06;
  f.insert(f.end(), eth, eth + 14);
  uint8_t arp[28] = {0, 1, 8, 0, 6, 4, 0, 1};
  memcpy(arp + 8, kGuestMac, 6);
  uint8_t guest_ip[4] = {10, 0, 2, 15}, host_ip[4] = {10, 0, 2, 2};
  memcpy(arp + 14, guest_ip, 4);
  memcpy(arp + 24, host_ip, 4);
  f.insert(f.end(), arp, arp + 28);
  return f;
}

TEST(UserNetworkTest, AnswersTheGuestsArp) {
  auto net = UserNetwork::Start({});
  ASSERT_TRUE(net.ok()) << net.status();
  auto request = ArpRequest();
  ASSERT_EQ(send((*net)->device_fd(), request.data(), request.size(), 0),
            static_cast<ssize_t>(request.size()));
  std::vector<uint8_t> reply;
  for (int i = 0; i < 20 && reply.empty(); ++i) {
    auto f = Receive((*net)->device_fd(), 100);
    if (f.size() >= kHeaderSize + 42 && f[kHeaderSize + 12] == 0x08 && f[kHeaderSize + 13] == 0x06) {
      reply = f;
    }
  }
  ASSERT_FALSE(reply.empty()) << "no ARP reply from slirp";
  const uint8_t* eth = reply.data() + kHeaderSize;
  EXPECT_EQ(memcmp(eth, kGuestMac, 6), 0);  // to the guest
  EXPECT_EQ(eth[14 + 7], 2);                // ARP reply
  EXPECT_EQ(memcmp(eth + 14 + 14, "\x0a\x00\x02\x02", 4), 0);  // 10.0.2.2 is at ...
  EXPECT_EQ(DecodeHeader(reply.data()).num_buffers, 1);
}

uint16_t FreePort() {
  Fd s(socket(AF_INET, SOCK_STREAM, 0));
  sockaddr_in a = {};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) return 0;
  socklen_t len = sizeof(a);
  getsockname(s.get(), reinterpret_cast<sockaddr*>(&a), &len);
  return ntohs(a.sin_port);
}

TEST(UserNetworkTest, PortForwardListensAndReachesTowardTheGuest) {
  uint16_t port = FreePort();
  ASSERT_NE(port, 0);
  HostForward f;
  f.host_addr = 0x7f000001;
  f.host_port = port;
  f.guest_port = 22;
  auto net = UserNetwork::Start({f});
  ASSERT_TRUE(net.ok()) << net.status();
  // A second stack cannot take the same port.
  EXPECT_FALSE(UserNetwork::Start({f}).ok());

  Fd client(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0));
  sockaddr_in a = {};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  connect(client.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a));
  // slirp accepts and heads for 10.0.2.15:22: an ARP request for the guest or
  // the SYN itself comes out toward the guest.
  bool toward_guest = false;
  for (int i = 0; i < 30 && !toward_guest; ++i) {
    auto frame = Receive((*net)->device_fd(), 100);
    if (frame.size() < kHeaderSize + 14) continue;
    const uint8_t* eth = frame.data() + kHeaderSize;
    if (eth[12] == 0x08 && eth[13] == 0x06) {
      toward_guest = memcmp(eth + 14 + 24, "\x0a\x00\x02\x0f", 4) == 0;  // who has 10.0.2.15
    } else if (eth[12] == 0x08 && eth[13] == 0x00) {
      toward_guest = memcmp(eth + 14 + 16, "\x0a\x00\x02\x0f", 4) == 0;
    }
  }
  EXPECT_TRUE(toward_guest);
}


// The device's queue pair over the user network, a fake guest driver on the
// queues: an ARP request leaves on the transmit queue and slirp's answer lands
// in a receive buffer, through the same event-loop calls the device makes.
TEST(UserNetworkTest, GuestArpThroughAQueuePair) {
  constexpr uint64_t kRam = 4 * kMiB;
  Fd memfd(memfd_create("guest", MFD_CLOEXEC));
  ASSERT_EQ(ftruncate(memfd.get(), kRam), 0);
  auto mem = GuestMemory::Map(memfd.get(), kRam, {{0, kRam, 0}});
  ASSERT_TRUE(mem.ok());
  virtio::QueueLayout rx_layout = {16, 0x10000, 0x11000, 0x12000};
  virtio::QueueLayout tx_layout = {16, 0x20000, 0x21000, 0x22000};
  virtio::FakeDriver rx_driver(**mem, rx_layout, true, 0x40000);
  virtio::FakeDriver tx_driver(**mem, tx_layout, true, 0x60000);
  virtio::SplitQueue rx(**mem, true, true), tx(**mem, true, true);
  ASSERT_TRUE(rx.Configure(rx_layout).ok());
  ASSERT_TRUE(tx.Configure(tx_layout).ok());
  auto net = UserNetwork::Start({});
  ASSERT_TRUE(net.ok()) << net.status();
  int fd = (*net)->device_fd();
  QueuePair pair(**mem, rx, tx, fd, (1ull << 32) | (1ull << kFeatureMrgRxbuf));
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(rx_driver.Add({}, {{0x100000 + 0x1000ull * i, 2048}}).has_value());
  ASSERT_TRUE(pair.OnRxBuffers().ok());
  auto request = ArpRequest();
  ASSERT_TRUE((*mem)->Write(0x200000, request.data(), request.size()).ok());
  ASSERT_TRUE(tx_driver.Add({{0x200000, static_cast<uint32_t>(request.size())}}, {}).has_value());
  ASSERT_TRUE(pair.OnTxChains().ok());
  EXPECT_EQ(pair.counters().tx_packets, 1u);
  std::optional<std::pair<uint16_t, uint32_t>> used;
  for (int i = 0; i < 50 && !used; ++i) {
    pollfd p = {fd, pair.wanted_events(), 0};
    if (poll(&p, 1, 100) == 1) {
      ASSERT_TRUE(pair.OnBackendReady(p.revents).ok());
    }
    used = rx_driver.GetUsed();
  }
  ASSERT_TRUE(used.has_value()) << "no frame reached the guest";
  std::vector<uint8_t> got(used->second);
  ASSERT_TRUE((*mem)->Read(0x100000 + 0x1000ull * used->first, got.data(), got.size()).ok());
  ASSERT_GE(got.size(), kHeaderSize + 42);
  EXPECT_EQ(DecodeHeader(got.data()).num_buffers, 1);
  EXPECT_EQ(got[kHeaderSize + 12], 0x08);
  EXPECT_EQ(got[kHeaderSize + 13], 0x06);
  EXPECT_EQ(got[kHeaderSize + 14 + 7], 2);  // reply
  EXPECT_EQ(pair.counters().rx_packets, 1u);
}

}  // namespace
}  // namespace hv::virtio_net
