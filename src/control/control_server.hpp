// ControlServer: the operator's control API (--control PATH). A Unix socket
// (mode 0600; only the engine's own uid and root may connect) speaking one
// JSON request per line and one JSON response per line:
//   {"cmd":"list"}                 every VM: id, pid, listener, reactor, pages, faults, latency, age
//   {"cmd":"stats"}                the engine's counters, and per listener
//   {"cmd":"vm","id":N}            one VM
//   {"cmd":"release","id":N}       release VM N (it keeps running without a pager)
//   {"cmd":"prefetch","id":N}      switch VM N to prefetch
//   {"cmd":"drain"}                stop accepting, keep serving
// A response is {"ok":true,...} or {"ok":false,"error":"one line"}; a
// malformed request gets the error and its connection is closed. It runs on
// a thread of its own, never on a reactor, and asks the reactors through
// their mailboxes.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "reactor/vm_query.hpp"
#include "ringpager/engine.hpp"

namespace ringpager {

// What the control API can ask of the engine (implemented by the engine).
class ControlTarget {
public:
    virtual ~ControlTarget() = default;
    // Acts on the VMs (or VM `vm_id`) and returns what they look like; false
    // when a reactor did not answer in time.
    virtual bool query_vms(VmQuery::Action action, uint64_t vm_id, std::vector<VmInfo>& out) = 0;
    virtual EngineStats totals() const = 0;
    virtual std::vector<std::string> listener_names() const = 0;
    virtual void stop_accepting() = 0;
};

class ControlServer {
public:
    // Binds `path` (refusing a live listener, as the VM sockets do) and
    // starts serving. `target` must outlive the server.
    static std::unique_ptr<ControlServer> start(const std::string& path, ControlTarget& target, std::string& error);
    virtual ~ControlServer() = default;  // stops the thread and removes the socket
};

// One response line for one request line (the protocol, without sockets).
std::string control_respond(const std::string& request, ControlTarget& target, bool& close_after);

}  // namespace ringpager
