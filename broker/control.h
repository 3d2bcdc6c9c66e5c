// The control socket of a running VM and the commands that use it (`hvbroker
// ls`, `status`, `stop`, `console`), and `up --detach`.
//
// The broker binds a ZeroMQ ROUTER at ipc://<runtime dir>/<vm>/control, mode
// 0600: only the user who started the VM reaches it (the VM's own processes run
// under another uid and talk to the broker on broker.ctl, which takes no
// commands). A client sends one ctl::ControlRequest (schema/control.capnp) and
// gets one ctl::ControlReply.
#ifndef HV_BROKER_CONTROL_H_
#define HV_BROKER_CONTROL_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "broker/config.h"
#include "broker/vm_runner.h"
#include "capnp/message.h"
#include "schema/control.capnp.h"
#include "zmq.hpp"

namespace hv::broker {

// The control socket's path in a VM's runtime directory.
std::string ControlSocketPath(const std::string& vm_runtime_dir);

class ControlServer {
 public:
  // Fills the reply and returns true, or returns false to answer later with
  // Reply(client, ...).
  using Handler = std::function<bool(const std::string& client, ctl::ControlRequest::Reader,
                                     ctl::ControlReply::Builder)>;

  explicit ControlServer(zmq::context_t& context);
  absl::Status Bind(const std::string& vm_runtime_dir);
  // For zmq::poll.
  void* handle() { return socket_.handle(); }
  // Answers every request waiting on the socket.
  void ServePending(const Handler& handler);
  // A reply (a ctl::ControlReply) to a request answered later.
  void Reply(const std::string& client, capnp::MessageBuilder& reply);

 private:
  zmq::socket_t socket_;
};

// `hvbroker ls|status|stop|console ...`; true if `command` is one of them.
bool IsControlCommand(const std::string& command);
// Runs it; returns hvbroker's exit status (0 done, 1 failed, 2 bad usage).
int RunControlCommand(const std::vector<std::string>& args);

// `hvbroker up --detach`: runs the VM in a background process of its own and
// returns once it runs (0) or could not start (the broker's start-up status).
// COM ports on stdio become sockets in the runtime directory (`hvbroker
// console`); the broker logs to <runtime base>/<vm>.log.
int RunVmDetached(VmConfig config, RunOptions options);

}  // namespace hv::broker

#endif  // HV_BROKER_CONTROL_H_
