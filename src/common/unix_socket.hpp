// Receiving bytes plus SCM_RIGHTS fds from a Unix stream socket. Every fd the
// kernel hands over is owned at once, so no error path can leak one.
#pragma once

#include <sys/socket.h>

#include <cstring>
#include <vector>

#include "ringpager/file_desc.hpp"

namespace ringpager {

struct Received {
    ssize_t bytes = 0;        // > 0 data, 0 end of stream, < 0 error (errno in `error`)
    int error = 0;
    bool fds_truncated = false;  // more fds were sent than `max_fds` (the kernel closed the rest)
    bool fds_lost = false;       // fds were sent but could not be installed here (EMFILE/ENFILE)
};

inline constexpr size_t kMaxFdsPerMessage = 8;

// One non-blocking recvmsg into `buf`; at most `max_fds` (<= 8) fds are
// accepted and appended to `fds`, so a peer cannot make one message fill the
// fd table.
inline Received receive_with_fds(int sock, void* buf, size_t len, std::vector<FileDesc>& fds,
                                 size_t max_fds = kMaxFdsPerMessage) {
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage)];
    if (max_fds == 0 || max_fds > kMaxFdsPerMessage) max_fds = kMaxFdsPerMessage;
    iovec iov{buf, len};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    // CMSG_LEN, not CMSG_SPACE: the kernel installs as many fds as the
    // length holds, and padding would make room for one more.
    msg.msg_controllen = CMSG_LEN(sizeof(int) * max_fds);
    Received r;
    r.bytes = recvmsg(sock, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (r.bytes < 0) {
        r.error = errno;
        return r;
    }
    size_t installed = 0;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; i++) {
            int fd;
            std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            fds.emplace_back(fd);
            installed++;
        }
    }
    // The kernel sets MSG_CTRUNC both when the control buffer was too small
    // and when installing an fd failed; only the count tells them apart.
    if ((msg.msg_flags & MSG_CTRUNC) != 0) {
        if (installed >= max_fds) r.fds_truncated = true;
        else r.fds_lost = true;
    }
    return r;
}

}  // namespace ringpager
