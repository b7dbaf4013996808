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
#include "common/pidfd.hpp"
#include "common/rate_limit.hpp"
#include "common/unix_socket.hpp"
#include "ringpager/protocol.hpp"

namespace ringpager {

namespace {

using Clock = std::chrono::steady_clock;

// A connection holds up to three fds from accept to release: the connection,
// the peer's pidfd and its userfaultfd.
constexpr uint64_t kFdsPerPeer = 3;
// Handshake fds per peer: the userfaultfd. A second one is refused as it arrives.
constexpr size_t kHandshakeFds = 1;
constexpr std::chrono::milliseconds kFirstBackoff{10};
constexpr std::chrono::milliseconds kMaxBackoff{1000};

// One connection between accept and a validated handshake.
struct Pending {
    bool busy = false;
    uint32_t gen = 0;
    FileDesc conn;
    FileDesc pidfd;        // taken at accept: the only way this peer is ever killed
    ucred cred{};
    unsigned listener = 0;
    std::string bytes;
    std::vector<FileDesc> fds;
    Reservation fd_share;  // kFdsPerPeer of the engine's fd budget
    Clock::time_point deadline;
    __kernel_timespec timeout{};
    uint64_t poll_op = 0;
};

// Cookie layout: kind in the top byte, then generation and index.
constexpr uint64_t kKindMask = uint64_t{0xff} << 56;
constexpr uint64_t kAcceptCookie = uint64_t{1} << 56;
constexpr uint64_t kPollCookie = uint64_t{2} << 56;
constexpr uint64_t kBackoffCookie = uint64_t{3} << 56;

using Refusal = StatsTable::Refusal;

class Acceptor final : public RingService {
public:
    Acceptor(AcceptorContext context, std::vector<ListenerBinding> listeners)
        : ctx_(std::move(context)),
          stats_(ctx_.stats),
          listeners_(std::move(listeners)),
          accept_ops_(listeners_.size(), 0),
          accept_shares_(listeners_.size()) {
        for (const ListenerBinding& l : listeners_) paths_.push_back(l.socket.path());
    }

    void start(Reactor& reactor) override {
        reactor_ = &reactor;
        maybe_accept(reactor);
    }

    // Stops accepting for good: accepts and handshakes in progress are
    // cancelled and the sockets closed and removed, so a VM that tries to
    // connect now fails at once instead of waiting in a backlog nobody reads.
    void stop(Reactor& reactor) override {
        stopping_ = true;
        for (uint64_t& op : accept_ops_)
            if (op != 0) reactor.cancel_op(op);
        if (backoff_op_ != 0) reactor.cancel_op(backoff_op_);
        for (auto& p : pending_)
            if (p.busy && p.poll_op != 0) reactor.cancel_op(p.poll_op);
        for (ListenerBinding& l : listeners_) {
            ListenSocket closing = std::move(l.socket);  // unlinks its path and closes it here
        }
        stats_.changed();  // whoever waits for the sockets to go
    }

    bool idle() const override {
        return std::all_of(accept_ops_.begin(), accept_ops_.end(), [](uint64_t op) { return op == 0; }) &&
               backoff_op_ == 0 && std::none_of(pending_.begin(), pending_.end(), [](const Pending& p) { return p.busy; });
    }

    void on_completion(Reactor& reactor, uint64_t cookie, const io::Completion& c) override {
        switch (cookie & kKindMask) {
            case kAcceptCookie: on_accept(reactor, static_cast<unsigned>(cookie & 0xffffffffu), c); break;
            case kBackoffCookie: backoff_op_ = 0; break;
            default: on_readable(cookie, c); break;
        }
        maybe_accept(reactor);
    }

private:
    // Arms one accept per listener while the bounds allow: pending handshakes
    // below max_pending (counting accepts already armed) and the fd budget
    // able to hold one more peer. A single-shot accept keeps both bounds exact.
    void maybe_accept(Reactor& reactor) {
        if (stopping_ || backoff_op_ != 0) return;
        for (unsigned i = 0; i < listeners_.size(); i++) {
            if (accept_ops_[i] != 0) continue;
            if (pending_count_ + armed_accepts() >= ctx_.config.max_pending) return;
            Reservation share = Reservation::take(ctx_.budgets.peer_fds, kFdsPerPeer, ctx_.budgets.fd_budget);
            if (!share.held()) {
                return pause(reactor, "the engine holds " + std::to_string(ctx_.budgets.peer_fds.load()) +
                                          " file descriptors for VMs, its budget under the open-files limit is " +
                                          std::to_string(ctx_.budgets.fd_budget));
            }
            accept_shares_[i] = std::move(share);
            accept_ops_[i] = reactor.io().accept(Reactor::service_op(kAcceptCookie | i), listeners_[i].socket.fd());
        }
    }

    unsigned armed_accepts() const {
        return static_cast<unsigned>(std::count_if(accept_ops_.begin(), accept_ops_.end(), [](uint64_t op) { return op != 0; }));
    }

    // Accepting waits `backoff_` (doubling up to kMaxBackoff) before it tries
    // again; connections meanwhile wait in the listen backlog. One line per
    // ten seconds at most, however often it happens.
    void pause(Reactor& reactor, const std::string& why) {
        stats_.accept_pauses.fetch_add(1, std::memory_order_relaxed);
        stats_.changed();
        uint64_t suppressed = 0;
        if (pause_line_.allow(Clock::now(), suppressed)) {
            RP_WARN("accepting paused for %lld ms: %s (%llu more pauses not logged)",
                    static_cast<long long>(backoff_.count()), why.c_str(), static_cast<unsigned long long>(suppressed));
        }
        backoff_ts_.tv_sec = backoff_.count() / 1000;
        backoff_ts_.tv_nsec = (backoff_.count() % 1000) * 1000000;
        backoff_op_ = reactor.io().timeout(Reactor::service_op(kBackoffCookie), &backoff_ts_);
        backoff_ = std::min(backoff_ * 2, kMaxBackoff);
    }

    void on_accept(Reactor& reactor, unsigned listener, const io::Completion& c) {
        accept_ops_[listener] = 0;
        Reservation share = std::move(accept_shares_[listener]);
        if (c.outcome == io::Outcome::ok) {
            backoff_ = kFirstBackoff;
            return admit(listener, FileDesc(c.res), std::move(share));
        }
        const int err = io::error_of(c.res);
        if (c.outcome == io::Outcome::cancelled) return;
        if (c.outcome == io::Outcome::no_fds)
            return pause(reactor, "accept on " + paths_[listener] + ": " + std::strerror(err));
        // ECONNABORTED and the like concern one connection: accept the next.
        RP_DEBUG("accept on %s: %s", paths_[listener].c_str(), std::strerror(err));
    }

    void admit(unsigned listener, FileDesc conn, Reservation fd_share) {
        ucred cred{};
        socklen_t len = sizeof cred;
        if (getsockopt(conn.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
            RP_WARN("connection on %s refused: SO_PEERCRED: %s", paths_[listener].c_str(),
                    std::strerror(errno));
            return;
        }
        if (!uid_allowed(cred.uid)) {
            RP_WARN("connection from pid %d on %s refused: uid %u is not allowed (see --allow-uid)", cred.pid,
                    paths_[listener].c_str(), cred.uid);
            conn.reset();
            stats_.refused(Refusal::uid);
            return;
        }
        const uint32_t index = take_slot();
        Pending& p = pending_[index];
        p.pidfd = open_peer_pidfd(conn.get(), cred.pid);
        p.conn = std::move(conn);
        p.cred = cred;
        p.listener = listener;
        p.fd_share = std::move(fd_share);
        p.deadline = Clock::now() + ctx_.config.handshake_timeout;
        arm_poll(index);
        stats_.changed();  // handshakes_pending changed
    }

    bool uid_allowed(uid_t uid) const {
        const auto& allowed = ctx_.config.allowed_uids;
        if (allowed.empty()) return uid == geteuid();
        return std::find(allowed.begin(), allowed.end(), uid) != allowed.end();
    }

    uint32_t take_slot() {
        pending_count_++;
        stats_.handshakes_pending.fetch_add(1, std::memory_order_relaxed);
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

    void arm_poll(uint32_t index) {
        Pending& p = pending_[index];
        const auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(p.deadline - Clock::now());
        if (left.count() <= 0) return refuse(index, "no complete handshake within the handshake timeout");
        p.timeout.tv_sec = left.count() / 1000000000;
        p.timeout.tv_nsec = left.count() % 1000000000;
        p.poll_op = reactor_->io().poll_until(Reactor::service_op(kPollCookie | (uint64_t{p.gen} << 32) | index),
                                              p.conn.get(), POLLIN | POLLRDHUP, &p.timeout);
    }

    void on_readable(uint64_t cookie, const io::Completion& c) {
        const uint32_t index = static_cast<uint32_t>(cookie & 0xffffffffu);
        const uint32_t gen = static_cast<uint32_t>((cookie >> 32) & 0xffffffu);
        if (index >= pending_.size() || !pending_[index].busy || pending_[index].gen != gen) return;
        pending_[index].poll_op = 0;
        if (stopping_) return refuse(index, "engine shutting down", Refusal::stopping);
        if (c.outcome == io::Outcome::cancelled) return refuse(index, "no complete handshake within the handshake timeout");
        if (c.res < 0) return refuse(index, std::string("poll: ") + std::strerror(-c.res));
        receive(index);
    }

    // Reads whatever the peer sent so far: bytes and fds. Every fd is owned
    // at once, so every error path closes it, and counted as it arrives: a
    // peer never holds more than kHandshakeFds + 1 of the engine's fds.
    void receive(uint32_t index) {
        Pending& p = pending_[index];
        bool eof = false;
        for (;;) {
            char data[4096];
            const Received r = receive_with_fds(p.conn.get(), data, sizeof data, p.fds, kHandshakeFds + 1);
            if (r.bytes < 0) {
                if (r.error == EAGAIN || r.error == EINTR) break;
                return refuse(index, std::string("recvmsg: ") + std::strerror(r.error));
            }
            if (r.fds_lost)
                return refuse(index, "the fd it sent could not be received: the engine is out of file descriptors "
                                     "(raise the open-files limit)", Refusal::fds);
            if (r.fds_truncated || p.fds.size() > kHandshakeFds)
                return refuse(index, "handshake carried more fds than the one userfaultfd");
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
                arm_poll(index);
        }
    }

    // Validates the handshake as a contract (SPEC §5) before anything is
    // sized from it, then takes the VM's share of the memory bound and
    // allocates its page states here, where a failure refuses one VM.
    void finish(uint32_t index, std::string_view json) {
        Pending& p = pending_[index];
        const ListenerBinding& listener = listeners_[p.listener];
        Handshake handshake;
        std::string error;
        if (!parse_handshake(json, handshake, error)) return refuse(index, error);
        if (p.fds.size() != 1)
            return refuse(index, "handshake carried " + std::to_string(p.fds.size()) +
                                     " fds; expected exactly one (the userfaultfd)");
        const HandshakeLimits limits{listener.source->size_bytes(), ctx_.config.max_vm_memory_bytes};
        if (!check_handshake_limits(handshake, limits, error)) return refuse(index, error, Refusal::limits);
        const uint64_t page_size = handshake.regions[0].page_size_bytes;
        if (listener.source->verifies_reads() && listener.source->block_size_bytes() > page_size)
            return refuse(index, "its " + std::to_string(page_size) + "-byte pages are smaller than the snapshot's " +
                                     std::to_string(listener.source->block_size_bytes()) +
                                     "-byte blocks, so reads cannot be verified page by page (build the snapshot "
                                     "with that block size, or serve with --no-verify-reads)",
                          Refusal::limits);
        auto uffd = Uffd::adopt(std::move(p.fds[0]));
        p.fds.clear();
        if (!uffd) return refuse(index, "the fd sent with the handshake is not a userfaultfd");
        Reservation admission = Reservation::take(ctx_.budgets.vms_admitted, 1, ctx_.budgets.max_vms);
        if (!admission.held())
            return refuse(index, "the engine serves its maximum of " + std::to_string(ctx_.budgets.max_vms) +
                                     " VMs (--max-vms); the VMs it serves are not affected",
                          Refusal::max_vms);
        uint64_t pages = 0;
        for (const Region& r : handshake.regions) pages += r.page_count();
        const uint64_t states_bytes = PageStates::bytes_for(pages);
        const size_t replay_runs = listener.prefetch_first ? listener.prefetch_first->size() : 0;
        const uint64_t ws_bytes = VmPager::working_set_bytes(pages, listener.record_ws != nullptr, replay_runs);
        const uint64_t state_bytes =
            states_bytes + ws_bytes + sizeof(Vm) + handshake.regions.size() * sizeof(AddressExtent);
        const uint64_t limit = ctx_.budgets.memory_limit_bytes;
        Reservation memory = Reservation::take(ctx_.budgets.vm_state_bytes, state_bytes, limit);
        if (!memory.held()) {
            const uint64_t used = ctx_.budgets.vm_state_bytes.load();
            const uint64_t left = limit > used ? limit - used : 0;
            return refuse(index, "its state would take " + std::to_string(state_bytes >> 10) + " KiB (" +
                                     std::to_string(states_bytes >> 10) + " KiB of page states" +
                                     (ws_bytes != 0 ? ", " + std::to_string(ws_bytes >> 10) + " KiB for its working set"
                                                    : std::string()) +
                                     ")" +
                                     " and the engine's memory bound (--memory-limit " +
                                     std::to_string(limit >> 20) + " MiB) has " +
                                     std::to_string(left >> 10) + " KiB left",
                          Refusal::memory);
        }
        std::unique_ptr<VmSetup> vm;
        try {
            vm = std::make_unique<VmSetup>();
            vm->states = PageStates(pages);
        } catch (const std::bad_alloc&) {
            return refuse(index, "cannot allocate its page states (" + std::to_string(state_bytes >> 10) + " KiB)",
                          Refusal::memory);
        }
        vm->id = ctx_.next_vm_id.fetch_add(1);
        vm->pid = p.cred.pid;
        vm->uid = p.cred.uid;
        vm->conn = std::move(p.conn);
        vm->uffd = std::move(*uffd);
        vm->pidfd = std::move(p.pidfd);
        vm->handshake = std::move(handshake);
        vm->source = listener.source;
        vm->source_index = listener.source_index;
        vm->listener_index = p.listener;
        vm->mode = listener.mode;
        vm->prefetch_first = listener.prefetch_first;
        vm->prefetch_first_page_size = listener.prefetch_first_page_size;
        vm->record_ws = listener.record_ws;
        vm->socket_path = paths_[p.listener];
        vm->memory = std::move(memory);
        vm->admission = std::move(admission);
        vm->fds = std::move(p.fd_share);
        release(index);
        place(std::move(vm));
    }

    void place(std::unique_ptr<VmSetup> vm) {
        Reactor* target = &ctx_.placement.choose();
        uint64_t bytes = 0;
        for (const Region& r : vm->handshake.regions) bytes += r.size_bytes;
        const uint64_t page_kib = vm->handshake.regions[0].page_size_bytes >> 10;
        const char* mode = vm->mode == ServeMode::lazy ? "lazy" : "prefetch";
        char text[512];
        snprintf(text, sizeof text, "vm %llu (pid %d, uid %u) on %s: %zu region(s), %llu MiB, %llu KiB pages, %s handshake, %s mode -> reactor %u",
                 (unsigned long long)vm->id, vm->pid, vm->uid, vm->socket_path.c_str(), vm->handshake.regions.size(),
                 (unsigned long long)(bytes >> 20), (unsigned long long)page_kib, shape_name(vm->handshake.shape), mode,
                 target->index());
        RP_EVENT(LogLevel::info, "vm_connected",
                 {{"vm", vm->id}, {"pid", vm->pid}, {"uid", vm->uid}, {"listener", vm->socket_path},
                  {"regions", vm->handshake.regions.size()}, {"bytes", bytes}, {"page_kib", page_kib},
                  {"handshake", shape_name(vm->handshake.shape)}, {"mode", mode}, {"reactor", target->index()}},
                 text);
        const uint64_t id = vm->id;
        const pid_t pid = vm->pid;
        if (auto refused = target->hand_off(std::move(vm))) {
            RP_ERROR("vm %llu refused: reactor %u's mailbox is full", (unsigned long long)id, target->index());
            kill_refused(pid, refused->pidfd);
            stats_.refused(Refusal::reactor_full);
        } else {
            stats_.vms_accepted.fetch_add(1);
        }
        stats_.changed();
    }

    // Without a pager the VM would hang forever; its operator asked for it to
    // die instead (--kill-on-failure). Only ever through the pidfd taken at
    // accept: the pid alone may name another process by now.
    void kill_refused(pid_t pid, const FileDesc& pidfd) {
        if (!ctx_.config.kill_on_failure || pid == getpid()) return;
        const std::string why_not = kill_through_pidfd(pidfd);
        if (why_not.empty()) RP_WARN("killed pid %d through its pidfd (--kill-on-failure)", pid);
        else RP_WARN("pid %d not killed: %s", pid, why_not.c_str());
    }

    void refuse(uint32_t index, const std::string& why, Refusal cause = Refusal::handshake) {
        Pending& p = pending_[index];
        RP_EVENT(LogLevel::warn, "vm_refused",
                 {{"pid", p.cred.pid}, {"uid", p.cred.uid}, {"listener", paths_[p.listener]},
                  {"cause", StatsTable::refusal_name(cause)}, {"reason", why}},
                 "connection from pid " + std::to_string(p.cred.pid) + " on " + paths_[p.listener] + " refused: " + why);
        kill_refused(p.cred.pid, p.pidfd);
        release(index);  // close its fds before anyone can observe the refusal
        stats_.refused(cause);
    }

    void release(uint32_t index) {
        Pending& p = pending_[index];
        p.busy = false;
        p.conn.reset();
        p.pidfd.reset();
        p.fds.clear();
        p.fd_share.reset();
        p.bytes.clear();
        p.bytes.shrink_to_fit();
        p.poll_op = 0;
        pending_count_--;
        stats_.handshakes_pending.fetch_sub(1, std::memory_order_relaxed);
    }

    AcceptorContext ctx_;
    StatsTable& stats_;
    std::vector<ListenerBinding> listeners_;
    std::vector<std::string> paths_;  // the listeners' paths, for log lines after the sockets are closed
    Reactor* reactor_ = nullptr;      // the reactor this service runs on (set at start)
    std::vector<uint64_t> accept_ops_;
    std::vector<Reservation> accept_shares_;  // the fd share of each armed accept
    std::deque<Pending> pending_;  // deque: a link timeout points into its element
    unsigned pending_count_ = 0;
    bool stopping_ = false;
    uint64_t backoff_op_ = 0;
    std::chrono::milliseconds backoff_ = kFirstBackoff;
    __kernel_timespec backoff_ts_{};
    RateLimitedLine pause_line_;
};

}  // namespace

std::unique_ptr<RingService> make_acceptor(AcceptorContext context, std::vector<ListenerBinding> listeners) {
    return std::make_unique<Acceptor>(std::move(context), std::move(listeners));
}

}  // namespace ringpager
