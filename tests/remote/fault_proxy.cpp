#include "fault_proxy.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string_view>

namespace rgwtest {
namespace {

sockaddr_in loopback(uint16_t port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

bool send_all(int fd, const char* data, size_t bytes) {
    while (bytes > 0) {
        ssize_t n = ::send(fd, data, bytes, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        data += n;
        bytes -= static_cast<size_t>(n);
    }
    return true;
}

// Waits until `fd` is readable or the proxy stops; false on stop or timeout.
bool wait_readable(int fd, int stop_fd, int timeout_ms) {
    pollfd fds[2] = {{fd, POLLIN, 0}, {stop_fd, POLLIN, 0}};
    int n = ::poll(fds, 2, timeout_ms);
    return n > 0 && !(fds[1].revents & POLLIN) && (fds[0].revents & (POLLIN | POLLHUP | POLLERR));
}

void reset_and_close(int fd) {
    linger l{1, 0};   // close with RST instead of FIN
    ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    ::close(fd);
}

}  // namespace

std::unique_ptr<FaultProxy> FaultProxy::start(uint16_t upstream_port, std::string& error) {
    std::unique_ptr<FaultProxy> p(new FaultProxy);
    p->upstream_port_ = upstream_port;
    p->stop_fd_ = ::eventfd(0, EFD_CLOEXEC);
    p->wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (p->stop_fd_ < 0 || p->wake_fd_ < 0) {
        error = std::string("eventfd: ") + std::strerror(errno);
        return nullptr;
    }
    if (!p->listen_on(0, error)) return nullptr;
    p->acceptor_ = std::thread([raw = p.get()] { raw->accept_loop(); });
    return p;
}

FaultProxy::~FaultProxy() {
    stopping_ = true;
    uint64_t one = 1;
    if (stop_fd_ >= 0) (void)::write(stop_fd_, &one, sizeof one);
    if (acceptor_.joinable()) acceptor_.join();
    std::vector<std::thread> threads;
    {
        std::lock_guard lock(mutex_);
        for (int fd : open_fds_) ::shutdown(fd, SHUT_RDWR);
        threads.swap(threads_);
        if (listen_fd_ >= 0) ::close(listen_fd_);
        listen_fd_ = -1;
    }
    for (auto& t : threads) t.join();
    if (stop_fd_ >= 0) ::close(stop_fd_);
    if (wake_fd_ >= 0) ::close(wake_fd_);
}

bool FaultProxy::listen_on(uint16_t port, std::string& error) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a = loopback(port);
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 128) != 0) {
        error = std::string("proxy listen: ") + std::strerror(errno);
        if (fd >= 0) ::close(fd);
        return false;
    }
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    std::lock_guard lock(mutex_);
    port_ = ntohs(a.sin_port);
    listen_fd_ = fd;
    uint64_t wake = 1;
    (void)::write(wake_fd_, &wake, sizeof wake);
    return true;
}

void FaultProxy::accept_loop() {
    while (!stopping_) {
        int listen_fd;
        {
            std::lock_guard lock(mutex_);
            listen_fd = listen_fd_;
        }
        pollfd fds[3] = {{stop_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}, {listen_fd, POLLIN, 0}};
        if (::poll(fds, listen_fd >= 0 ? 3 : 2, -1) < 0 && errno != EINTR) return;
        if (fds[0].revents & POLLIN) return;
        if (fds[1].revents & POLLIN) {
            uint64_t drained;
            (void)::read(wake_fd_, &drained, sizeof drained);
            continue;   // the listener changed: poll the new one
        }
        if (listen_fd < 0 || !(fds[2].revents & POLLIN)) continue;
        std::lock_guard lock(mutex_);
        if (listen_fd_ != listen_fd) continue;   // closed by go_away meanwhile
        int client = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
        if (client < 0) continue;
        ++accepted_;
        Plan plan;
        if (remaining_ != 0) {
            plan = {mode_, amount_};
            if (remaining_ > 0) --remaining_;
        }
        open_fds_.push_back(client);
        threads_.emplace_back([this, client, plan] { serve(client, plan); });
    }
}

void FaultProxy::serve(int client, Plan plan) {
    auto forget = [&](int fd) {
        std::lock_guard lock(mutex_);
        open_fds_.erase(std::remove(open_fds_.begin(), open_fds_.end(), fd), open_fds_.end());
    };
    if (plan.mode != Mode::pass) ++faults_;
    if (plan.mode == Mode::reset) {
        wait_readable(client, stop_fd_, 5000);
        forget(client);
        reset_and_close(client);
        return;
    }
    if (plan.mode == Mode::fail_503) {
        std::string request;
        char buf[4096];
        while (request.find("\r\n\r\n") == std::string::npos && request.size() < (64 << 10) &&
               wait_readable(client, stop_fd_, 5000)) {
            ssize_t n = ::recv(client, buf, sizeof buf, 0);
            if (n <= 0) break;
            request.append(buf, static_cast<size_t>(n));
        }
        static constexpr std::string_view body = "<Error><Code>SlowDown</Code><Message>test</Message></Error>";
        std::string answer = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\nContent-Length: " +
                             std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + std::string(body);
        send_all(client, answer.data(), answer.size());
        ::shutdown(client, SHUT_WR);
        while (wait_readable(client, stop_fd_, 1000) && ::recv(client, buf, sizeof buf, 0) > 0) {
        }
        forget(client);
        ::close(client);
        return;
    }
    int upstream = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a = loopback(upstream_port_);
    int one = 1;
    ::setsockopt(upstream, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ::setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (upstream < 0 || ::connect(upstream, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        if (upstream >= 0) ::close(upstream);
        forget(client);
        ::close(client);
        return;
    }
    {
        std::lock_guard lock(mutex_);
        open_fds_.push_back(upstream);
    }
    bool delayed = false;
    std::string head;              // the first answer's bytes up to its blank line
    bool in_body = false, applied = false;
    uint64_t body_at = 0;
    char buf[16384];
    for (;;) {
        pollfd fds[3] = {{client, POLLIN, 0}, {upstream, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
        if (::poll(fds, 3, -1) < 0 && errno != EINTR) break;
        if (fds[2].revents & POLLIN) break;
        if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = ::recv(client, buf, sizeof buf, 0);
            if (n <= 0 || !send_all(upstream, buf, static_cast<size_t>(n))) break;
        }
        if (!(fds[1].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        ssize_t got = ::recv(upstream, buf, sizeof buf, 0);
        if (got <= 0) break;
        auto n = static_cast<size_t>(got);
        if (plan.mode == Mode::delay && !delayed) {
            delayed = true;
            pollfd stop{stop_fd_, POLLIN, 0};
            if (::poll(&stop, 1, static_cast<int>(plan.amount)) > 0) break;   // the injected latency
        }
        // Walk the first answer: its head up to the blank line, then its body.
        size_t forward = n;
        bool cut = false;
        if (plan.mode == Mode::corrupt || plan.mode == Mode::truncate) {
            for (size_t i = 0; i < n && !applied; ++i) {
                if (!in_body) {
                    head += buf[i];
                    in_body = head.size() >= 4 && head.compare(head.size() - 4, 4, "\r\n\r\n") == 0;
                    continue;
                }
                if (body_at == plan.amount) {
                    applied = true;   // the byte the mode acts on
                    if (plan.mode == Mode::corrupt) {
                        buf[i] = static_cast<char>(buf[i] ^ 0x01);
                    } else {
                        forward = i;
                        cut = true;
                    }
                }
                ++body_at;
            }
        }
        if (!send_all(client, buf, forward) || cut) break;
    }
    forget(client);
    forget(upstream);
    ::close(upstream);
    ::close(client);
}

void FaultProxy::cut_connections() {
    for (int fd : open_fds_) ::shutdown(fd, SHUT_RDWR);
}

void FaultProxy::set(Mode mode, int connections, uint64_t amount) {
    std::lock_guard lock(mutex_);
    mode_ = mode;
    remaining_ = connections;
    amount_ = amount;
    cut_connections();
}

void FaultProxy::go_away() {
    std::lock_guard lock(mutex_);
    if (listen_fd_ >= 0) ::close(listen_fd_);
    listen_fd_ = -1;
    uint64_t wake = 1;
    (void)::write(wake_fd_, &wake, sizeof wake);
    cut_connections();
}

bool FaultProxy::come_back() {
    std::string error;
    return listen_on(port_, error);
}

}  // namespace rgwtest
