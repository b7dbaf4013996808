#include "server/socket_activation.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "common/log.hpp"

namespace ringpager {
namespace {

// The socket unit may pass a few sockets; more than this is not a
// configuration ringpager can have (one per listener, at most 1024 of them).
constexpr int kMaxInheritedSockets = 1024;

std::string socket_type_name(int type) {
    switch (type) {
        case SOCK_DGRAM: return "a datagram socket";
        case SOCK_SEQPACKET: return "a seqpacket socket";
        case SOCK_RAW: return "a raw socket";
        default: return "a socket of type " + std::to_string(type);
    }
}

int socket_option(int fd, int option, int& value) {
    socklen_t len = sizeof value;
    return getsockopt(fd, SOL_SOCKET, option, &value, &len);
}

// Frees the strv sd_listen_fds_with_names() returns.
struct Names {
    char** strv = nullptr;
    ~Names() {
        if (strv == nullptr) return;
        for (char** n = strv; *n != nullptr; n++) free(*n);
        free(static_cast<void*>(strv));
    }
};

}  // namespace

bool listening_unix_socket_path(int fd, std::string& path, std::string& why) {
    struct stat st {};
    if (fstat(fd, &st) != 0) {
        why = std::string("not open (fstat: ") + std::strerror(errno) + ")";
        return false;
    }
    if (!S_ISSOCK(st.st_mode)) {
        why = S_ISFIFO(st.st_mode) ? "a pipe or FIFO"
              : S_ISREG(st.st_mode) ? "a regular file"
              : S_ISDIR(st.st_mode) ? "a directory"
              : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "a device"
                                                          : "not a socket";
        return false;
    }
    int domain = 0, type = 0, listening = 0;
    if (socket_option(fd, SO_DOMAIN, domain) != 0 || socket_option(fd, SO_TYPE, type) != 0 ||
        socket_option(fd, SO_ACCEPTCONN, listening) != 0) {
        why = std::string("unreadable (getsockopt: ") + std::strerror(errno) + ")";
        return false;
    }
    if (domain != AF_UNIX) {
        why = domain == AF_INET ? "an AF_INET socket" : domain == AF_INET6 ? "an AF_INET6 socket"
                                                                             : "a socket of family " + std::to_string(domain);
        return false;
    }
    if (type != SOCK_STREAM) {
        why = socket_type_name(type);
        return false;
    }
    if (listening == 0) {
        why = "a stream socket that is not listening";
        return false;
    }
    sockaddr_un addr{};
    socklen_t len = sizeof addr;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
        why = std::string("unreadable (getsockname: ") + std::strerror(errno) + ")";
        return false;
    }
    const size_t path_bytes = len > offsetof(sockaddr_un, sun_path) ? len - offsetof(sockaddr_un, sun_path) : 0;
    if (path_bytes == 0 || addr.sun_path[0] == '\0') {
        why = path_bytes == 0 ? "a socket bound to no path" : "an abstract socket (no path in the filesystem)";
        return false;
    }
    // SAFETY: the kernel fills at most sizeof(sun_path) bytes and counts the
    // NUL in `len` when there is one; strnlen stops at either.
    path.assign(addr.sun_path, strnlen(addr.sun_path, std::min(path_bytes, sizeof addr.sun_path)));
    return true;
}

std::string comparable_socket_path(const std::string& path) {
    std::error_code ec;
    const std::filesystem::path absolute = std::filesystem::absolute(path, ec);
    return (ec ? std::filesystem::path(path) : absolute).lexically_normal().string();
}

bool take_activated_sockets(std::vector<InheritedSocket>& out, std::string& error) {
    Names names;
    // unset_environment=1: LISTEN_* go now, whatever happens next.
    const int count = sd_listen_fds_with_names(1, &names.strv);
    if (count < 0) {
        error = std::string("socket activation: LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES: ") + std::strerror(-count);
        return false;
    }
    if (count == 0) return true;
    if (count > kMaxInheritedSockets) {
        error = "socket activation: LISTEN_FDS=" + std::to_string(count) + " is more than " +
                std::to_string(kMaxInheritedSockets) + " sockets";
        return false;
    }
    // Own every passed fd before looking at any: a refusal closes them all.
    std::vector<InheritedSocket> taken;
    for (int i = 0; i < count; i++)
        taken.push_back(InheritedSocket{FileDesc(SD_LISTEN_FDS_START + i), "",
                                        names.strv != nullptr && names.strv[i] != nullptr ? names.strv[i] : ""});
    for (InheritedSocket& s : taken) {
        std::string why;
        if (!listening_unix_socket_path(s.fd.get(), s.path, why)) {
            const std::string named = s.name.empty() || s.name == "unknown" ? "" : " (\"" + escape_for_log(s.name) + "\")";
            error = "socket activation: passed fd " + std::to_string(s.fd.get()) + named +
                    " is not a listening Unix stream socket bound to a path: it is " + why;
            return false;
        }
        // The acceptor expects what ListenSocket::bind makes: non-blocking, close-on-exec.
        const int flags = fcntl(s.fd.get(), F_GETFL);
        if (flags < 0 || fcntl(s.fd.get(), F_SETFL, flags | O_NONBLOCK) < 0 ||
            fcntl(s.fd.get(), F_SETFD, FD_CLOEXEC) < 0) {
            error = "socket activation: passed fd " + std::to_string(s.fd.get()) + ": fcntl: " + std::strerror(errno);
            return false;
        }
    }
    for (InheritedSocket& s : taken) out.push_back(std::move(s));
    return true;
}

}  // namespace ringpager
