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
    bool fds_truncated = false;  // more fds were sent than fit (the kernel closed the rest)
};

// One non-blocking recvmsg into `buf`; fds are appended to `fds`.
inline Received receive_with_fds(int sock, void* buf, size_t len, std::vector<FileDesc>& fds) {
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 8)];
    iovec iov{buf, len};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    Received r;
    r.bytes = recvmsg(sock, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (r.bytes < 0) {
        r.error = errno;
        return r;
    }
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; i++) {
            int fd;
            std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            fds.emplace_back(fd);
        }
    }
    r.fds_truncated = (msg.msg_flags & MSG_CTRUNC) != 0;
    return r;
}

}  // namespace ringpager
