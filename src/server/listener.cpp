#include "server/listener.hpp"

#include <poll.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstring>
#include <deque>

#include "common/log.hpp"
#include "common/unix_socket.hpp"
#include "ringpager/protocol.hpp"

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif

namespace ringpager {

namespace {

using Clock = std::chrono::steady_clock;

// One connection between accept and a validated handshake.
struct Pending {
    bool busy = false;
    uint32_t gen = 0;
    FileDesc conn;
    ucred cred{};
    unsigned listener = 0;
    std::string bytes;
    std::vector<FileDesc> fds;
    Clock::time_point deadline;
    __kernel_timespec timeout{};
    uint64_t poll_op = 0;
};

// Cookie layout: kind in the top byte, then generation and index.
constexpr uint64_t kAcceptCookie = uint64_t{1} << 56;
constexpr uint64_t kPollCookie = uint64_t{2} << 56;

class Acceptor final : public RingService {
public:
    Acceptor(EngineShared& shared, std::vector<ListenerBinding>& listeners)
        : shared_(shared), listeners_(listeners), accept_ops_(listeners.size(), 0) {}

    void start(Reactor& reactor) override {
        for (unsigned i = 0; i < listeners_.size(); i++) arm_accept(reactor, i);
    }

    void stop(Reactor& reactor) override {
        stopping_ = true;
        for (uint64_t& op : accept_ops_)
            if (op != 0) reactor.cancel_op(op);
        for (auto& p : pending_)
            if (p.busy && p.poll_op != 0) reactor.cancel_op(p.poll_op);
    }

    bool idle() const override {
        return std::all_of(accept_ops_.begin(), accept_ops_.end(), [](uint64_t op) { return op == 0; }) &&
               std::none_of(pending_.begin(), pending_.end(), [](const Pending& p) { return p.busy; });
    }

    void on_completion(Reactor& reactor, uint64_t cookie, const Completion& c) override {
        if ((cookie & (uint64_t{0xff} << 56)) == kAcceptCookie)
            on_accept(reactor, static_cast<unsigned>(cookie & 0xffffffffu), c);
        else
            on_readable(reactor, cookie, c);
    }

private:
    void arm_accept(Reactor& reactor, unsigned listener) {
        io_uring_sqe* sqe = reactor.service_sqe(kAcceptCookie | listener);
        io_uring_prep_multishot_accept(sqe, listeners_[listener].socket.fd(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        accept_ops_[listener] = sqe->user_data;
    }

    void on_accept(Reactor& reactor, unsigned listener, const Completion& c) {
        const bool more = (c.flags & IORING_CQE_F_MORE) != 0;
        if (!more) accept_ops_[listener] = 0;
        if (c.res < 0) {
            if (c.res != -ECANCELED)
                RP_WARN("accept on %s failed: %s", listeners_[listener].socket.path().c_str(), std::strerror(-c.res));
        } else {
            admit(reactor, listener, FileDesc(c.res));
        }
        if (!more && !stopping_) arm_accept(reactor, listener);
    }

    void admit(Reactor& reactor, unsigned listener, FileDesc conn) {
        ucred cred{};
        socklen_t len = sizeof cred;
        if (getsockopt(conn.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
            RP_WARN("connection on %s refused: SO_PEERCRED: %s", listeners_[listener].socket.path().c_str(),
                    std::strerror(errno));
            return;
        }
        if (!uid_allowed(cred.uid)) {
            RP_WARN("connection from pid %d on %s refused: uid %u is not allowed (see --allow-uid)", cred.pid,
                    listeners_[listener].socket.path().c_str(), cred.uid);
            conn.reset();
            shared_.vms_refused.fetch_add(1);
            shared_.notify();
            return;
        }
        const uint32_t index = take_slot();
        Pending& p = pending_[index];
        p.conn = std::move(conn);
        p.cred = cred;
        p.listener = listener;
        p.deadline = Clock::now() + shared_.config.handshake_timeout;
        arm_poll(reactor, index);
    }

    bool uid_allowed(uid_t uid) const {
        const auto& allowed = shared_.config.allowed_uids;
        if (allowed.empty()) return uid == geteuid();
        return std::find(allowed.begin(), allowed.end(), uid) != allowed.end();
    }

    uint32_t take_slot() {
        for (uint32_t i = 0; i < pending_.size(); i++)
            if (!pending_[i].busy) {
                pending_[i].busy = true;
                pending_[i].gen++;
                return i;
            }
        pending_.emplace_back();
        pending_.back().busy = true;
        pending_.back().gen = 1;
        return static_cast<uint32_t>(pending_.size() - 1);
    }

    void arm_poll(Reactor& reactor, uint32_t index) {
        Pending& p = pending_[index];
        const auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(p.deadline - Clock::now());
        if (left.count() <= 0) return refuse(index, "no complete handshake within the handshake timeout");
        p.timeout.tv_sec = left.count() / 1000000000;
        p.timeout.tv_nsec = left.count() % 1000000000;
        io_uring_sqe* sqe = reactor.service_sqe(kPollCookie | (uint64_t{p.gen} << 32) | index);
        io_uring_prep_poll_add(sqe, p.conn.get(), POLLIN | POLLRDHUP);
        sqe->flags |= IOSQE_IO_LINK;
        p.poll_op = sqe->user_data;
        io_uring_sqe* timeout = reactor.plain_sqe();  // its completion carries nothing we need
        io_uring_prep_link_timeout(timeout, &p.timeout, 0);
    }

    void on_readable(Reactor& reactor, uint64_t cookie, const Completion& c) {
        const uint32_t index = static_cast<uint32_t>(cookie & 0xffffffffu);
        const uint32_t gen = static_cast<uint32_t>((cookie >> 32) & 0xffffffu);
        if (index >= pending_.size() || !pending_[index].busy || pending_[index].gen != gen) return;
        pending_[index].poll_op = 0;
        if (stopping_) return refuse(index, "engine shutting down");
        if (c.res == -ECANCELED) return refuse(index, "no complete handshake within the handshake timeout");
        if (c.res < 0) return refuse(index, std::string("poll: ") + std::strerror(-c.res));
        receive(reactor, index);
    }

    // Reads whatever the peer sent so far: bytes and fds (every fd is owned
    // at once, so every error path closes it).
    void receive(Reactor& reactor, uint32_t index) {
        Pending& p = pending_[index];
        bool eof = false;
        for (;;) {
            char data[4096];
            const Received r = receive_with_fds(p.conn.get(), data, sizeof data, p.fds);
            if (r.bytes < 0) {
                if (r.error == EAGAIN || r.error == EINTR) break;
                return refuse(index, std::string("recvmsg: ") + std::strerror(r.error));
            }
            if (r.fds_truncated) return refuse(index, "handshake carried more fds than the one userfaultfd");
            if (r.bytes == 0) {
                eof = true;
                break;
            }
            p.bytes.append(data, static_cast<size_t>(r.bytes));
            if (p.bytes.size() > kMaxHandshakeBytes)
                return refuse(index, "handshake larger than " + std::to_string(kMaxHandshakeBytes) + " bytes");
        }
        size_t end = 0;
        std::string error;
        switch (scan_json_array(p.bytes, end, error)) {
            case ScanStatus::invalid: return refuse(index, error);
            case ScanStatus::complete: return finish(index, std::string_view(p.bytes).substr(0, end));
            case ScanStatus::incomplete:
                if (eof)
                    return refuse(index, p.bytes.empty() ? "peer closed the connection without sending a handshake"
                                                         : "peer closed the connection in the middle of the handshake JSON");
                arm_poll(reactor, index);
        }
    }

    void finish(uint32_t index, std::string_view json) {
        Pending& p = pending_[index];
        const ListenerBinding& listener = listeners_[p.listener];
        Handshake handshake;
        std::string error;
        if (!parse_handshake(json, handshake, error)) return refuse(index, error);
        if (p.fds.size() != 1)
            return refuse(index, "handshake carried " + std::to_string(p.fds.size()) +
                                     " fds; expected exactly one (the userfaultfd)");
        if (!check_regions_fit(handshake.regions, listener.source->size_bytes(), error)) return refuse(index, error);
        auto uffd = Uffd::adopt(std::move(p.fds[0]));
        p.fds.clear();
        if (!uffd) return refuse(index, "the fd sent with the handshake is not a userfaultfd");
        auto vm = std::make_unique<VmSetup>();
        vm->id = shared_.next_vm_id.fetch_add(1);
        vm->pid = p.cred.pid;
        vm->uid = p.cred.uid;
        vm->conn = std::move(p.conn);
        vm->uffd = std::move(*uffd);
        vm->pidfd = open_pidfd(vm->conn.get(), p.cred.pid);
        vm->handshake = std::move(handshake);
        vm->source = listener.source;
        vm->source_index = listener.source_index;
        vm->mode = listener.mode;
        vm->socket_path = listener.socket.path();
        release(index);
        place(std::move(vm));
    }

    static FileDesc open_pidfd(int conn, pid_t pid) {
        // SO_PEERPIDFD names the exact peer process (no pid reuse window); older
        // kernels fall back to pidfd_open on the SO_PEERCRED pid.
        int fd = -1;
        socklen_t len = sizeof fd;
        if (getsockopt(conn, SOL_SOCKET, SO_PEERPIDFD, &fd, &len) == 0 && fd >= 0) return FileDesc(fd);
        fd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
        if (fd >= 0) fcntl(fd, F_SETFD, FD_CLOEXEC);
        return FileDesc(fd);
    }

    void place(std::unique_ptr<VmSetup> vm) {
        Reactor* target = shared_.reactors[0];
        for (Reactor* r : shared_.reactors)
            if (r->active_vms() + load_[r->index()] < target->active_vms() + load_[target->index()]) target = r;
        load_[target->index()]++;  // accepted but maybe not adopted yet
        uint64_t bytes = 0;
        for (const Region& r : vm->handshake.regions) bytes += r.size_bytes;
        RP_INFO("vm %llu (pid %d, uid %u) on %s: %zu region(s), %llu MiB, %llu KiB pages, %s handshake, %s mode -> reactor %u",
                (unsigned long long)vm->id, vm->pid, vm->uid, vm->socket_path.c_str(), vm->handshake.regions.size(),
                (unsigned long long)(bytes >> 20), (unsigned long long)(vm->handshake.regions[0].page_size_bytes >> 10),
                shape_name(vm->handshake.shape), vm->mode == ServeMode::lazy ? "lazy" : "prefetch", target->index());
        const uint64_t id = vm->id;
        if (!target->hand_off(std::move(vm))) {
            RP_ERROR("vm %llu refused: reactor %u's inbox is full", (unsigned long long)id, target->index());
            shared_.vms_refused.fetch_add(1);
        } else {
            shared_.vms_accepted.fetch_add(1);
        }
        shared_.notify();
        // The load estimate only needs to break ties between simultaneous accepts.
        if (++placed_ % 64 == 0) std::fill(load_.begin(), load_.end(), 0);
    }

    void refuse(uint32_t index, const std::string& why) {
        Pending& p = pending_[index];
        RP_WARN("connection from pid %d on %s refused: %s", p.cred.pid, listeners_[p.listener].socket.path().c_str(),
                why.c_str());
        if (shared_.config.kill_on_failure && p.cred.pid > 0 && p.cred.pid != getpid()) {
            // Without a pager the VM would hang forever; its operator asked for it to die instead.
            if (kill(p.cred.pid, SIGKILL) == 0) RP_WARN("killed pid %d (--kill-on-failure)", p.cred.pid);
        }
        release(index);  // close its fds before anyone can observe the refusal
        shared_.vms_refused.fetch_add(1);
        shared_.notify();
    }

    void release(uint32_t index) {
        Pending& p = pending_[index];
        p.busy = false;
        p.conn.reset();
        p.fds.clear();
        p.bytes.clear();
        p.bytes.shrink_to_fit();
        p.poll_op = 0;
    }

    EngineShared& shared_;
    std::vector<ListenerBinding>& listeners_;
    std::vector<uint64_t> accept_ops_;
    std::deque<Pending> pending_;  // deque: a link timeout points into its element
    std::vector<uint64_t> load_ = std::vector<uint64_t>(256, 0);
    uint64_t placed_ = 0;
    bool stopping_ = false;
};

}  // namespace

std::unique_ptr<RingService> make_acceptor(EngineShared& shared, std::vector<ListenerBinding>& listeners) {
    return std::make_unique<Acceptor>(shared, listeners);
}

}  // namespace ringpager
