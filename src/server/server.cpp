// Engine: binds the listeners, starts the reactors, aggregates counters.
#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>

#include "common/log.hpp"
#include "reactor/reactor.hpp"
#include "reactor/reactor_impl.hpp"
#include "ringpager/engine.hpp"
#include "server/listener.hpp"

namespace ringpager {
namespace {

class EngineImpl final : public Engine {
public:
    ~EngineImpl() override {
        request_stop();
        wait();
    }

    bool init(EngineConfig config, std::string& error) {
        if (config.listeners.empty()) {
            error = "nothing to serve: give at least one --socket with a --mem-file or --snapshot";
            return false;
        }
        raise_fd_limit();
        shared_.config = std::move(config);
        // Distinct sources get consecutive fixed-file ranges in every ring.
        std::map<const Source*, unsigned> index_of;
        for (const ListenerConfig& l : shared_.config.listeners) {
            if (!l.source) {
                error = "listener " + l.socket_path + " has no snapshot source";
                return false;
            }
            if (index_of.count(l.source.get())) continue;
            index_of[l.source.get()] = static_cast<unsigned>(shared_.sources.size());
            shared_.sources.push_back(l.source.get());
            shared_.source_file_base.push_back(shared_.source_file_count);
            shared_.source_file_count += static_cast<unsigned>(l.source->file_fds().size());
        }
        if (!resolve_budgets(error)) return false;
        // Reactors first: a socket must not accept connections before the
        // rings that serve them exist (Firecracker connects once, and its
        // restore waits on the first faults).
        unsigned count = shared_.config.reactors;
        if (count == 0) count = std::max(1L, sysconf(_SC_NPROCESSORS_ONLN));
        for (unsigned i = 0; i < count; i++) reactors_.push_back(std::make_unique<Reactor>(i, shared_));
        for (auto& r : reactors_) shared_.reactors.push_back(r.get());
        for (unsigned i = 0; i < count; i++) {
            if (!reactors_[i]->start(error)) {
                error = "reactor " + std::to_string(i) + ": " + error;
                return false;  // the destructor stops the reactors already running
            }
        }
        std::vector<ListenerBinding> bound;  // closed and removed again if a later one fails
        for (const ListenerConfig& l : shared_.config.listeners) {
            auto socket = ListenSocket::bind(l.socket_path, error);
            if (!socket) return false;
            bound.push_back(ListenerBinding{std::move(*socket), l.source.get(), index_of[l.source.get()], l.mode});
        }
        // The acceptor owns the sockets from here: it closes and removes them
        // when the engine stops accepting, on its reactor's thread.
        reactors_[0]->attach_service(make_acceptor(shared_, std::move(bound)));
        return true;
    }

    void request_stop() override {
        for (auto& r : reactors_) r->request_stop();
    }

    void request_drain(std::chrono::milliseconds timeout) override {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        for (auto& r : reactors_) r->request_drain(deadline);
    }

    bool wait() override {
        bool ok = true;
        for (auto& r : reactors_) ok = r->join() && ok;
        return ok;
    }

    EngineStats stats() const override {
        EngineStats s;
        s.vms_accepted = shared_.vms_accepted.load();
        s.vms_refused = shared_.vms_refused.load();
        s.vms_released = shared_.vms_released.load();
        for (const auto& r : reactors_) {
            const ReactorCounters& c = r->counters();
            s.vms_active += c.vms_active.load();
            s.vms_failed += c.vms_failed.load();
            s.vms_resident += c.vms_resident.load();
            s.faults += c.faults.load();
            s.pages_copied += c.pages_copied.load();
            s.pages_prefetched += c.pages_prefetched.load();
            s.pages_zeroed += c.pages_zeroed.load();
            s.copy_ioctls += c.copy_ioctls.load();
            s.bytes_read += c.bytes_read.load();
            s.removed_pages += c.removed_pages.load();
            s.eagain_retries += c.eagain_retries.load();
            s.events_other += c.events_other.load();
            s.read_buffers_busy += c.buffers_busy.load();
            s.stray_fds_closed += c.stray_fds_closed.load();
            s.page_cache_hits += c.page_cache_hits.load();
            s.busy_poll_hits += c.busy_poll_hits.load();
            s.busy_poll_misses += c.busy_poll_misses.load();
            s.ranges_unmapped += c.ranges_unmapped.load();
            s.pages_poisoned += c.pages_poisoned.load();
        }
        s.handshakes_pending = shared_.handshakes_pending.load();
        s.vm_state_bytes = shared_.vm_state_bytes.load();
        s.accept_pauses = shared_.accept_pauses.load();
        return s;
    }

    bool wait_released(uint64_t count, std::chrono::milliseconds timeout) const override {
        return wait_until([&](const EngineStats& s) { return s.vms_released >= count; }, timeout);
    }

    bool wait_accepted(uint64_t count, std::chrono::milliseconds timeout) const override {
        return wait_until([&](const EngineStats& s) { return s.vms_accepted >= count; }, timeout);
    }

    bool wait_until(const std::function<bool(const EngineStats&)>& done,
                    std::chrono::milliseconds timeout) const override {
        std::unique_lock lock(shared_.mu);
        return shared_.changed.wait_for(lock, timeout, [&] { return done(stats()); });
    }

    std::vector<VmReport> reports() const override {
        std::lock_guard lock(shared_.mu);
        return shared_.reports;
    }

    std::string setup_summary() const override {
        std::string s = std::to_string(reactors_.size()) + " reactor(s)";
        if (!reactors_.empty()) {
            s += " at nice " + std::to_string(reactors_[0]->nice());
            if (reactors_[0]->nice_error() != 0)
                s += " (nice " + std::to_string(shared_.config.reactor_nice) +
                     " refused: " + std::strerror(reactors_[0]->nice_error()) + ")";
        }
        s += ", io_uring " + (reactors_.empty() ? std::string("?") : reactors_[0]->setup_mode());
        for (const ListenerConfig& l : shared_.config.listeners)
            s += "; " + l.socket_path + " <- " + l.source->describe() +
                 (l.mode == ServeMode::lazy ? " (lazy)" : " (prefetch)");
        return s;
    }

private:
    // The memory bound (default: a quarter of physical memory) and the fd
    // budget: what RLIMIT_NOFILE leaves after the fds open now and a reserve
    // for the engine's own (snapshot files, rings, eventfds). Each VM holds
    // three fds (connection, uffd, pidfd) and one fixed-file slot in its
    // reactor's ring, so the slot table is sized from the same budget.
    bool resolve_budgets(std::string& error) {
        const EngineConfig& c = shared_.config;
        if (c.max_pending == 0) {
            error = "max_pending must be at least 1";
            return false;
        }
        shared_.memory_limit_bytes = c.memory_limit_bytes;
        if (shared_.memory_limit_bytes == 0) {
            const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
            shared_.memory_limit_bytes = pages > 0 && page > 0 ? uint64_t(pages) * uint64_t(page) / 4 : uint64_t{1} << 30;
        }
        rlimit lim{};
        if (getrlimit(RLIMIT_NOFILE, &lim) != 0) {
            error = std::string("getrlimit(RLIMIT_NOFILE): ") + std::strerror(errno);
            return false;
        }
        const uint64_t open_now = count_open_fds();
        const uint64_t reserve = kEngineFdReserve + 4 * (c.reactors == 0 ? 64 : c.reactors);
        const uint64_t limit = lim.rlim_cur == RLIM_INFINITY ? uint64_t{1} << 20 : uint64_t(lim.rlim_cur);
        if (limit < open_now + reserve + 3) {
            error = "the open-files limit (" + std::to_string(limit) + ") leaves no room to serve a VM: " +
                    std::to_string(open_now) + " fds are open and the engine keeps " + std::to_string(reserve) +
                    " for itself; raise it (ulimit -n, or LimitNOFILE= under systemd): each VM needs 3";
            return false;
        }
        shared_.fd_budget = limit - open_now - reserve;
        // The kernel refuses a fixed-file table larger than RLIMIT_NOFILE.
        const uint64_t fixed_before_vms = Reactor::Impl::kFirstVmFileSlot + shared_.source_file_count;
        const uint64_t table_room = limit > fixed_before_vms ? limit - fixed_before_vms : 1;
        shared_.vm_file_slots = static_cast<unsigned>(
            std::max<uint64_t>(1, std::min<uint64_t>({Reactor::Impl::kMaxVmsPerReactor, shared_.fd_budget / 3 + 1,
                                                      table_room})));
        return true;
    }

    static uint64_t count_open_fds() {
        uint64_t n = 0;
        if (DIR* dir = opendir("/proc/self/fd")) {
            while (const dirent* d = readdir(dir))
                if (d->d_name[0] != '.') n++;
            closedir(dir);
        }
        return n;
    }

    static constexpr uint64_t kEngineFdReserve = 64;

    static void raise_fd_limit() {
        // Each VM holds a uffd, a connection and a pidfd; the ring's sparse
        // file table is bounded by RLIMIT_NOFILE too.
        rlimit lim{};
        if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
            lim.rlim_cur = lim.rlim_max;
            (void)setrlimit(RLIMIT_NOFILE, &lim);
        }
    }

    EngineShared shared_;
    std::vector<std::unique_ptr<Reactor>> reactors_;
};

}  // namespace

std::unique_ptr<Engine> Engine::start(EngineConfig config, std::string& error) {
    auto engine = std::make_unique<EngineImpl>();
    if (!engine->init(std::move(config), error)) return nullptr;
    return engine;
}

}  // namespace ringpager
