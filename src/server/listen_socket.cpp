#include "server/listen_socket.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

namespace ringpager {
namespace {

constexpr int kBacklog = 1024;
constexpr size_t kMaxPathBytes = sizeof(sockaddr_un::sun_path) - 1;  // plus the NUL

// `path` fits: every caller checked it against kMaxPathBytes.
sockaddr_un unix_address(const std::string& path) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.size());
    return addr;
}

// Whether `path` may be taken: it does not exist, or it is a stale socket
// (nobody listens: connect is refused), which the rename replaces. A socket
// that answers, even with a full backlog, belongs to a live listener.
bool path_is_free(const std::string& path, std::string& error) {
    const std::string prefix = "cannot listen on " + path + ": ";
    struct stat st {};
    if (lstat(path.c_str(), &st) != 0) {
        if (errno == ENOENT) return true;
        error = prefix + "lstat: " + std::strerror(errno);
        return false;
    }
    if (!S_ISSOCK(st.st_mode)) {
        error = prefix + "the path exists and is not a socket";
        return false;
    }
    FileDesc probe(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!probe.valid()) {
        error = prefix + "socket: " + std::strerror(errno);
        return false;
    }
    const sockaddr_un addr = unix_address(path);
    if (connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0 || errno == EAGAIN ||
        errno == EINPROGRESS) {
        error = prefix + "another process is listening on it (stop it, or choose another --socket)";
        return false;
    }
    if (errno == ECONNREFUSED || errno == ENOENT) return true;  // stale, or removed since the lstat
    error = prefix + "cannot tell whether the socket there is in use: connect: " + std::strerror(errno) +
            " (remove it if it is stale, or choose another --socket)";
    return false;
}

// A name in the same directory as `path` to bind before the rename:
// "PATH.<pid>.<n>.tmp", or "DIR/.<pid>.<n>.tmp" when that is too long for
// sun_path; "" when neither fits. The pid and a per-process sequence keep
// concurrent binds (other processes, other engines here) apart.
std::string temporary_name(const std::string& path) {
    static std::atomic<unsigned> sequence{0};
    const std::string tag = "." + std::to_string(getpid()) + "." + std::to_string(sequence.fetch_add(1)) + ".tmp";
    if (path.size() + tag.size() <= kMaxPathBytes) return path + tag;
    const size_t slash = path.rfind('/');
    const std::string beside = (slash == std::string::npos ? std::string() : path.substr(0, slash + 1)) + tag;
    return beside.size() <= kMaxPathBytes ? beside : std::string();
}

}  // namespace

Result<ListenSocket> ListenSocket::bind(const std::string& path, std::string& error) {
    if (path.empty() || path.size() > kMaxPathBytes) {
        error = "socket path '" + path + "' is empty or longer than " + std::to_string(kMaxPathBytes) + " bytes";
        return Error{EINVAL, "bind"};
    }
    if (!path_is_free(path, error)) return Error{EADDRINUSE, "bind"};
    const std::string temp = temporary_name(path);
    if (temp.empty()) {
        error = "cannot listen on " + path + ": no room in the " + std::to_string(kMaxPathBytes) +
                " bytes of a socket path for a temporary name in its directory (the socket is bound there first, "
                "then renamed): choose a shorter --socket path";
        return Error{ENAMETOOLONG, "bind"};
    }
    FileDesc fd(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd.valid()) {
        error = std::string("socket: ") + std::strerror(errno);
        return errno_error("socket");
    }
    const sockaddr_un addr = unix_address(temp);
    // umask makes the socket 0600 from the moment it exists (no chmod window).
    const mode_t old_mask = umask(0177);
    const int rc = ::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
    const int bind_errno = errno;
    umask(old_mask);
    if (rc < 0) {
        error = "cannot listen on " + path + ": bind " + temp + ": " + std::strerror(bind_errno);
        return Error{bind_errno, "bind"};
    }
    // From here the temporary name exists: every failure removes it.
    auto fail = [&](const char* call) -> Result<ListenSocket> {
        const Error e = errno_error(call);
        unlink(temp.c_str());
        error = "cannot listen on " + path + ": " + e.message();
        return e;
    };
    struct stat st {};
    if (listen(fd.get(), kBacklog) < 0) return fail("listen");
    if (stat(temp.c_str(), &st) < 0) return fail("stat");
    // Listening before the rename: PATH names either what was there (nothing
    // or a stale socket) or this listening socket, never a socket that
    // refuses Firecracker's single connect. rename() keeps the inode, so
    // dev/ino identify PATH from now on.
    if (rename(temp.c_str(), path.c_str()) < 0) return fail("rename");
    ListenSocket s;
    s.fd_ = std::move(fd);
    s.path_ = path;
    s.dev_ = st.st_dev;
    s.ino_ = st.st_ino;
    s.owns_path_ = true;
    return s;
}

ListenSocket ListenSocket::adopt(FileDesc fd, std::string path) {
    ListenSocket s;
    s.fd_ = std::move(fd);
    s.path_ = std::move(path);
    return s;
}

ListenSocket::~ListenSocket() {
    if (!fd_.valid() || !owns_path_) return;
    struct stat st {};
    if (stat(path_.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_) unlink(path_.c_str());
}

}  // namespace ringpager
