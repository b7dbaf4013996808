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

namespace ringpager {

// A bound, listening Unix socket (mode 0600). Removes its path on destruction
// if the path still names this socket.
class ListenSocket {
public:
    static Result<ListenSocket> bind(const std::string& path, std::string& error);
    ListenSocket() = default;
    ListenSocket(ListenSocket&&) = default;
    ListenSocket& operator=(ListenSocket&&) = default;
    ~ListenSocket();

    int fd() const { return fd_.get(); }
    const std::string& path() const { return path_; }

private:
    FileDesc fd_;
    std::string path_;
    dev_t dev_ = 0;
    ino_t ino_ = 0;
};

struct ListenerBinding {
    ListenSocket socket;
    const Source* source = nullptr;
    unsigned source_index = 0;
    ServeMode mode = ServeMode::lazy;
};

std::unique_ptr<RingService> make_acceptor(EngineShared& shared, std::vector<ListenerBinding>& listeners);

}  // namespace ringpager
