// The baseline's accept loop and per-VM threads.
#include "baseline/server.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "baseline/handshake.hpp"
#include "common/regular_file.hpp"
#include "counters.hpp"
#include "vm_session.hpp"

namespace ringpager::baseline {
namespace {

Result<FileDesc> listen_on(const std::string& path) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.empty() || path.size() >= sizeof addr.sun_path) {
        return Error{ENAMETOOLONG, "socket path empty or longer than sun_path"};
    }
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    FileDesc sock(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!sock.valid()) return errno_error("socket");
    // Replace a stale socket left by an earlier run, never any other file.
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) && ::unlink(path.c_str()) != 0) {
        return errno_error("unlink(stale socket)");
    }
    if (::bind(sock.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) return errno_error("bind");
    if (::listen(sock.get(), 128) != 0) return errno_error("listen");
    return sock;
}

}  // namespace

Result<std::unique_ptr<Server>> Server::create(const Options& options) {
    std::unique_ptr<Server> server(new Server());
    server->options_ = options;
    server->counters_ = std::make_unique<Counters>();
    struct stat st {};
    std::string line;  // unused: create() reports an Error, which main prints with the path
    auto file = open_regular_file(options.mem_file_path, "--mem-file", line, &st);
    if (!file) return file.error();
    if (st.st_size <= 0) return Error{EINVAL, "--mem-file is empty"};
    server->file_size_bytes_ = static_cast<uint64_t>(st.st_size);
    auto map = sim::Mapping::map(nullptr, server->file_size_bytes_, PROT_READ, MAP_SHARED, file->get(), 0);
    if (!map) return Error{map.error().code, "mmap(--mem-file)"};
    server->file_map_ = std::move(*map);
    server->stop_event_ = FileDesc(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!server->stop_event_.valid()) return errno_error("eventfd");
    auto listening = listen_on(options.socket_path);
    if (!listening) return listening.error();
    server->listen_ = std::move(*listening);
    return server;
}

Server::~Server() {
    stop();
    // Destroyed after its loops ended: no thread still uses the socket path.
    ::unlink(options_.socket_path.c_str());
}

void Server::start() {
    accept_thread_ = std::thread([this] { run(); });
}

void Server::stop() {
    // The event is never read, so it stays readable for every poller.
    const uint64_t one = 1;
    if (::write(stop_event_.get(), &one, sizeof one) != static_cast<ssize_t>(sizeof one) && errno != EAGAIN) {
        std::fprintf(stderr, "rp-baseline: write(stop eventfd): %s\n", std::strerror(errno));
    }
    if (accept_thread_.joinable() && accept_thread_.get_id() != std::this_thread::get_id()) accept_thread_.join();
}

void Server::run() {
    for (;;) {
        reap_workers(false);
        pollfd fds[2] = {{listen_.get(), POLLIN, 0}, {stop_event_.get(), POLLIN, 0}};
        int ready = ::poll(fds, 2, -1);
        if (ready < 0 && errno == EINTR) continue;
        if (ready < 0) {
            std::fprintf(stderr, "rp-baseline: poll: %s\n", std::strerror(errno));
            break;
        }
        if (fds[1].revents != 0) break;
        if ((fds[0].revents & POLLIN) == 0) continue;
        FileDesc conn(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
        if (!conn.valid()) {
            if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED) {
                std::fprintf(stderr, "rp-baseline: accept: %s\n", std::strerror(errno));
            }
            continue;
        }
        counters_->connections_accepted.fetch_add(1, std::memory_order_relaxed);
        std::lock_guard lock(mutex_);
        ++connections_active_;
        Worker& worker = workers_.emplace_back();
        worker.thread = std::thread([this, c = std::move(conn), &worker]() mutable {
            serve_connection(std::move(c));
            std::lock_guard done_lock(mutex_);
            worker.done = true;
            --connections_active_;
            ++connections_finished_;
            finished_cv_.notify_all();
        });
    }
    reap_workers(true);
}

void Server::serve_connection(FileDesc conn) {
    std::string error;
    auto handshake = read_handshake(conn.get(), stop_event_.get(), options_.handshake_timeout_ms,
                                    file_size_bytes_, error);
    if (!handshake) {
        counters_->handshake_failures.fetch_add(1, std::memory_order_relaxed);
        std::fprintf(stderr, "rp-baseline: handshake refused: %s\n", error.c_str());
        return;
    }
    VmSession session(std::move(handshake->regions), std::move(handshake->uffd), conn.get(), stop_event_.get(),
                      file_map_.data(), options_.copy_all_on_first_fault, options_.ignore_remove, *counters_);
    session.run();
}

void Server::reap_workers(bool all) {
    std::list<Worker> finished;
    {
        std::lock_guard lock(mutex_);
        for (auto it = workers_.begin(); it != workers_.end();) {
            auto next = std::next(it);
            if (all || it->done) finished.splice(finished.end(), workers_, it);
            it = next;
        }
    }
    // Joined outside the lock: a finishing worker takes it to mark itself done.
    for (Worker& worker : finished) worker.thread.join();
}

Stats Server::stats() const {
    Stats s;
    s.connections_accepted = counters_->connections_accepted.load();
    s.handshake_failures = counters_->handshake_failures.load();
    s.faults = counters_->faults.load();
    s.pages_copied = counters_->pages_copied.load();
    s.pages_zeroed = counters_->pages_zeroed.load();
    s.eexist = counters_->eexist.load();
    s.eagain = counters_->eagain.load();
    s.remove_events = counters_->remove_events.load();
    std::lock_guard lock(mutex_);
    s.connections_active = connections_active_;
    s.connections_finished = connections_finished_;
    return s;
}

bool Server::wait_for_finished(uint64_t count, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    return finished_cv_.wait_for(lock, timeout, [&] { return connections_finished_ >= count; });
}

}  // namespace ringpager::baseline
