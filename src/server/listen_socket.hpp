// A listening Unix socket that owns its path.
#pragma once

#include <sys/types.h>

#include <string>

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

}  // namespace ringpager
