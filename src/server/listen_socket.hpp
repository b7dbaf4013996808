// A listening Unix socket that owns its path (SPEC §5: a socket path where a
// live listener answers is refused; a path is connectable the moment it exists).
#pragma once

#include <sys/types.h>

#include <string>

#include "ringpager/file_desc.hpp"

namespace ringpager {

// A bound, listening Unix socket (mode 0600).
//
// bind() never takes a path over from a live listener: an existing socket is
// probed with a non-blocking connect; one that answers (or whose backlog is
// full) refuses startup, one that refuses the connection is stale and is
// replaced, anything that is not a socket is refused. The socket is bound
// under a temporary name in the same directory, listens, and is then renamed
// onto the path, so the path is connectable from the moment it exists
// (Firecracker connects once, with no retry). Remaining window: two processes
// that probe the same path at the same moment both find it free, and the later
// rename wins.
//
// The destructor removes the path only if it still names this socket, and
// never the path of an adopted socket.
class ListenSocket {
public:
    static Result<ListenSocket> bind(const std::string& path, std::string& error);
    // Serves a listening socket bound by someone else (systemd socket
    // activation, already validated): its path belongs to them, so it is
    // left in place when the socket closes.
    static ListenSocket adopt(FileDesc fd, std::string path);
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
    bool owns_path_ = false;
};

}  // namespace ringpager
