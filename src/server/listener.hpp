// Listener sockets and the acceptor: accept and the Firecracker handshake run
// on reactor 0's ring; a validated VM is handed to the least busy reactor.
#pragma once

#include <sys/socket.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "reactor/reactor.hpp"
#include "ringpager/file_desc.hpp"
#include "server/listen_socket.hpp"

namespace ringpager {

struct ListenerBinding {
    ListenSocket socket;
    const Source* source = nullptr;
    unsigned source_index = 0;
    ServeMode mode = ServeMode::lazy;
};

// The acceptor takes the listening sockets over.
std::unique_ptr<RingService> make_acceptor(EngineShared& shared, std::vector<ListenerBinding> listeners);

}  // namespace ringpager
