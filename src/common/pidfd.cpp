#include "common/pidfd.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif

namespace ringpager {

FileDesc open_peer_pidfd(int conn, pid_t pid) {
    int fd = -1;
    socklen_t len = sizeof fd;
    // The kernel installs the pidfd with O_CLOEXEC.
    if (getsockopt(conn, SOL_SOCKET, SO_PEERPIDFD, &fd, &len) == 0 && fd >= 0) return FileDesc(fd);
    // A kernel that knows SO_PEERPIDFD and answers ESRCH says the peer is
    // gone: its pid may already name someone else. Only a kernel without the
    // option gets the pidfd_open fallback.
    if (errno != ENOPROTOOPT && errno != EINVAL) return FileDesc();
    if (pid <= 0) return FileDesc();
    FileDesc opened(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
    if (!opened.valid()) return FileDesc();
    if (fcntl(opened.get(), F_SETFD, FD_CLOEXEC) < 0) return FileDesc();
    // The pid names the peer only while the peer still holds its end: a
    // connection that is already hung up may belong to an exited process
    // whose pid was handed out again before pidfd_open ran.
    pollfd p{conn, POLLRDHUP, 0};
    if (poll(&p, 1, 0) != 0) return FileDesc();
    return opened;
}

std::string kill_through_pidfd(const FileDesc& pidfd) {
    if (!pidfd.valid()) return "no pidfd for it (the kernel gave none at accept)";
    if (syscall(SYS_pidfd_send_signal, pidfd.get(), SIGKILL, nullptr, 0) != 0) return std::strerror(errno);
    return {};
}

bool alive_through_pidfd(const FileDesc& pidfd) {
    if (!pidfd.valid()) return true;
    return syscall(SYS_pidfd_send_signal, pidfd.get(), 0, nullptr, 0) == 0 || errno == EPERM;
}

}  // namespace ringpager
