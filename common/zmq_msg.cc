#include "common/zmq_msg.h"

#include <unistd.h>

#include <cstring>

#include "absl/strings/str_cat.h"

namespace hv {

ReceivedMessage::ReceivedMessage(zmq::message_t bytes) : bytes_(std::move(bytes)) {
  size_t nwords = bytes_.size() / sizeof(capnp::word);
  if (nwords == 0 || bytes_.size() % sizeof(capnp::word) != 0) {
    error_ = absl::StrCat("message of ", bytes_.size(), " bytes is not a Cap'n Proto message");
    return;
  }
  // Copy into word-aligned storage: ZeroMQ gives no alignment guarantee.
  words_ = kj::heapArray<capnp::word>(nwords);
  memcpy(words_.begin(), bytes_.data(), bytes_.size());
  try {
    reader_ = std::make_unique<capnp::FlatArrayMessageReader>(words_.asPtr());
    (void)reader_->getRoot<msg::Message>().which();
  } catch (const kj::Exception& e) {
    reader_.reset();
    error_ = e.getDescription().cStr();
  }
}

zmq::message_t SerializeMessage(capnp::MessageBuilder& builder) {
  auto words = capnp::messageToFlatArray(builder);
  auto bytes = words.asBytes();
  return zmq::message_t(bytes.begin(), bytes.size());
}

absl::Status SendToPeer(zmq::socket_t& socket, capnp::MessageBuilder& builder) {
  try {
    auto sent = socket.send(SerializeMessage(builder), zmq::send_flags::none);
    if (!sent) return absl::UnavailableError("zmq send would block");
  } catch (const zmq::error_t& e) {
    return absl::UnavailableError(absl::StrCat("zmq send: ", e.what()));
  }
  return absl::OkStatus();
}

absl::Status SendToIdentity(zmq::socket_t& socket, const std::string& peer,
                            capnp::MessageBuilder& builder) {
  try {
    socket.send(zmq::buffer(peer), zmq::send_flags::sndmore);
    socket.send(SerializeMessage(builder), zmq::send_flags::none);
  } catch (const zmq::error_t& e) {
    return absl::UnavailableError(absl::StrCat("zmq send to ", peer, ": ", e.what()));
  }
  return absl::OkStatus();
}

absl::Status SendHello(zmq::socket_t& socket, const std::string& role) {
  capnp::MallocMessageBuilder b;
  auto hello = b.initRoot<msg::Message>().initHello();
  hello.setRole(role);
  hello.setPid(getpid());
  return SendToPeer(socket, b);
}

void FillRamRegions(const std::vector<GuestRamRegion>& regions,
                    capnp::List<msg::RamRegion>::Builder out) {
  for (size_t i = 0; i < regions.size() && i < out.size(); ++i) {
    out[i].setGpa(regions[i].gpa);
    out[i].setSize(regions[i].size);
    out[i].setOffset(regions[i].offset);
  }
}

std::vector<GuestRamRegion> RamRegionsFrom(capnp::List<msg::RamRegion>::Reader in) {
  std::vector<GuestRamRegion> regions;
  for (auto r : in) regions.push_back({r.getGpa(), r.getSize(), r.getOffset()});
  return regions;
}

std::string BrokerEndpoint(const std::string& runtime_dir) {
  return absl::StrCat("ipc://", runtime_dir, "/broker.ctl");
}

}  // namespace hv
