// Engine: binds the listeners, starts the reactors, aggregates counters.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>

#include "common/log.hpp"
#include "reactor/reactor.hpp"
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
        for (const ListenerConfig& l : shared_.config.listeners) {
            auto socket = ListenSocket::bind(l.socket_path, error);
            if (!socket) return false;
            listeners_.push_back(ListenerBinding{std::move(*socket), l.source.get(), index_of[l.source.get()], l.mode});
        }
        reactors_[0]->attach_service(make_acceptor(shared_, listeners_));
        return true;
    }

    void request_stop() override {
        for (auto& r : reactors_) r->request_stop();
    }

    bool wait() override {
        bool ok = true;
        for (auto& r : reactors_) ok = r->join() && ok;
        listeners_.clear();  // removes the socket files
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
        }
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
        for (const ListenerBinding& l : listeners_)
            s += "; " + l.socket.path() + " <- " + l.source->describe() +
                 (l.mode == ServeMode::lazy ? " (lazy)" : " (prefetch)");
        return s;
    }

private:
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
    std::vector<ListenerBinding> listeners_;
    std::vector<std::unique_ptr<Reactor>> reactors_;
};

}  // namespace

std::unique_ptr<Engine> Engine::start(EngineConfig config, std::string& error) {
    auto engine = std::make_unique<EngineImpl>();
    if (!engine->init(std::move(config), error)) return nullptr;
    return engine;
}

}  // namespace ringpager
