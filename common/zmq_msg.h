// Cap'n Proto messages over ZeroMQ: one Message (schema/msg.capnp) per ZeroMQ
// message, in Cap'n Proto's standard serialisation.
#ifndef HV_COMMON_ZMQ_MSG_H_
#define HV_COMMON_ZMQ_MSG_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "capnp/message.h"
#include "capnp/serialize.h"
#include "common/guest_layout.h"
#include "schema/msg.capnp.h"
#include "zmq.hpp"

namespace hv {

// A received message; keeps the bytes alive for the reader.
class ReceivedMessage {
 public:
  explicit ReceivedMessage(zmq::message_t bytes);
  msg::Message::Reader get() { return reader_->getRoot<msg::Message>(); }
  bool ok() const { return reader_ != nullptr; }
  const std::string& error() const { return error_; }

 private:
  zmq::message_t bytes_;
  kj::Array<capnp::word> words_;
  std::unique_ptr<capnp::FlatArrayMessageReader> reader_;
  std::string error_;
};

zmq::message_t SerializeMessage(capnp::MessageBuilder& builder);

// A DEALER socket of a child process talking to the broker.
absl::Status SendToPeer(zmq::socket_t& socket, capnp::MessageBuilder& builder);
// On a ROUTER: to the peer whose identity is `peer`.
absl::Status SendToIdentity(zmq::socket_t& socket, const std::string& peer,
                            capnp::MessageBuilder& builder);

// A child's first message: who it is.
absl::Status SendHello(zmq::socket_t& socket, const std::string& role);

// Guest RAM regions to and from their message form.
void FillRamRegions(const std::vector<GuestRamRegion>& regions,
                    capnp::List<msg::RamRegion>::Builder out);
std::vector<GuestRamRegion> RamRegionsFrom(capnp::List<msg::RamRegion>::Reader in);

// The ZeroMQ endpoint of a VM's broker: ipc://DIR/broker.ctl.
std::string BrokerEndpoint(const std::string& runtime_dir);

}  // namespace hv

#endif  // HV_COMMON_ZMQ_MSG_H_
