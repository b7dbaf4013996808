#include "server/listen_socket.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace ringpager {

Result<ListenSocket> ListenSocket::bind(const std::string& path, std::string& error) {
    sockaddr_un addr{};
    if (path.empty() || path.size() >= sizeof addr.sun_path) {
        error = "socket path '" + path + "' is empty or longer than " + std::to_string(sizeof addr.sun_path - 1) + " bytes";
        return Error{EINVAL, "bind"};
    }
    FileDesc fd(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd.valid()) {
        error = std::string("socket: ") + std::strerror(errno);
        return errno_error("socket");
    }
    // A stale socket file from a previous run is replaced; anything else is not touched.
    struct stat st {};
    if (lstat(path.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            error = "cannot listen on " + path + ": the path exists and is not a socket";
            return Error{EEXIST, "bind"};
        }
        unlink(path.c_str());
    }
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.size());
    // umask makes the socket 0600 from the moment it exists (no chmod window).
    const mode_t old_mask = umask(0177);
    const int rc = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    const int bind_errno = errno;
    umask(old_mask);
    if (rc < 0) {
        error = "cannot listen on " + path + ": bind: " + std::strerror(bind_errno);
        return Error{bind_errno, "bind"};
    }
    if (listen(fd.get(), 1024) < 0 || stat(path.c_str(), &st) < 0) {
        error = "cannot listen on " + path + ": " + std::strerror(errno);
        return errno_error("listen");
    }
    ListenSocket s;
    s.fd_ = std::move(fd);
    s.path_ = path;
    s.dev_ = st.st_dev;
    s.ino_ = st.st_ino;
    return s;
}

ListenSocket::~ListenSocket() {
    if (!fd_.valid()) return;
    struct stat st {};
    if (stat(path_.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_) unlink(path_.c_str());
}

}  // namespace ringpager
