// Raw Unix socket helpers for tests that speak the handshake by hand.
#pragma once

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstring>
#include <string>
#include <vector>

#include "ringpager/file_desc.hpp"

namespace ringpager::testing {

inline FileDesc connect_to(const std::string& path) {
    FileDesc fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.size());
    EXPECT_EQ(connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0) << strerror(errno);
    return fd;
}

// One sendmsg of `bytes` with `fds` attached (none when empty).
inline void send_with_fds(int sock, const std::string& bytes, const std::vector<int>& fds) {
    iovec iov{const_cast<char*>(bytes.data()), bytes.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    std::vector<char> control(CMSG_SPACE(sizeof(int) * std::max<size_t>(1, fds.size())));
    if (!fds.empty()) {
        msg.msg_control = control.data();
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    ASSERT_EQ(sendmsg(sock, &msg, 0), static_cast<ssize_t>(bytes.size())) << strerror(errno);
}

// One request line, one response line (or "" when the engine closed first):
// the control socket's protocol (serve --control).
inline std::string ask(int sock, const std::string& line) {
    const std::string out = line + "\n";
    if (send(sock, out.data(), out.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(out.size())) return "";
    std::string in;
    char c;
    while (recv(sock, &c, 1, 0) == 1 && c != '\n') in.push_back(c);
    return in;
}

}  // namespace ringpager::testing
