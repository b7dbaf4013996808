// Engine: resolves the budgets, starts the reactors, binds the listeners and
// hands them to the acceptor; stopping, waiting, stats and reports.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>

#include "common/log.hpp"
#include "engine/budgets.hpp"
#include "engine/placement.hpp"
#include "control/control_server.hpp"
#include "control/metrics.hpp"
#include "engine/stats.hpp"
#include "reactor/reactor.hpp"
#include "ringpager/engine.hpp"
#include "server/listener.hpp"
#include "server/socket_activation.hpp"
#include "snapshot/working_set.hpp"

namespace ringpager {
namespace {

// A snapshot with a packed working set (`snapshot pack-ws`) replays it first
// to every VM of a prefetch listener that names no set of its own: the
// packed order table (touch order), its data read from the packed layer
// front to back.
void packed_replay(const ListenerConfig& l, std::shared_ptr<const std::vector<PageRun>>& first,
                   uint64_t& first_page_size) {
    std::vector<PageRun> runs = packed_working_set_runs(*l.source, l.source->block_size_bytes());
    if (runs.empty()) return;
    uint64_t pages = 0;
    for (const PageRun& r : runs) pages += r.pages;
    RP_INFO("%s: the snapshot's packed working set (%llu pages in %zu runs) is replayed first to its VMs",
            l.socket_path.c_str(), (unsigned long long)pages, runs.size());
    first = std::make_shared<const std::vector<PageRun>>(std::move(runs));
    first_page_size = l.source->block_size_bytes();
}

// The exit and wake eventfds take the first fixed-file slots of every ring.
constexpr unsigned kEventfdSlots = 2;

class EngineImpl final : public Engine, public ControlTarget {
public:
    ~EngineImpl() override {
        control_.reset();  // it asks the reactors: gone first
        request_stop();
        wait();
    }

    bool init(EngineConfig config, std::vector<InheritedSocket> inherited, std::string& error) {
        if (config.listeners.empty()) {
            error = "nothing to serve: give at least one --socket with a --mem-file or --snapshot";
            return false;
        }
        std::vector<FileDesc> adopted;  // per listener: the inherited socket it serves, or none
        if (!match_inherited(config.listeners, inherited, adopted, error)) return false;
        if (config.raise_open_files_limit) raise_fd_limit();
        config_ = std::move(config);
        // One index per distinct source; every ring registers all their files.
        std::map<const Source*, unsigned> index_of;
        unsigned source_files = 0;
        for (const ListenerConfig& l : config_.listeners) {
            if (!l.source) {
                error = "listener " + l.socket_path + " has no snapshot source";
                return false;
            }
            if (index_of.count(l.source.get())) continue;
            index_of[l.source.get()] = static_cast<unsigned>(sources_.size());
            sources_.push_back(l.source.get());
            source_files += static_cast<unsigned>(l.source->file_fds().size());
        }
        if (!resolve_budgets(config_, kEventfdSlots + source_files, budgets_, error)) return false;
        // Reactors first: a socket must not accept connections before the
        // rings that serve them exist (Firecracker connects once, and its
        // restore waits on the first faults).
        unsigned count = config_.reactors;
        if (count == 0) count = static_cast<unsigned>(std::max(1L, sysconf(_SC_NPROCESSORS_ONLN)));
        stats_ = std::make_unique<StatsTable>(count, static_cast<unsigned>(config_.listeners.size()));
        for (unsigned i = 0; i < count; i++)
            reactors_.push_back(
                std::make_unique<Reactor>(reactor_config(i), stats_->reactor(i), stats_->listeners_of(i), *stats_));
        for (unsigned i = 0; i < count; i++) {
            if (!reactors_[i]->start(error)) {
                error = "reactor " + std::to_string(i) + ": " + error;
                return false;  // the destructor stops the reactors already running
            }
        }
        std::vector<Reactor*> all;
        for (auto& r : reactors_) all.push_back(r.get());
        placement_ = std::make_unique<Placement>(std::move(all));
        std::vector<ListenerBinding> bound;  // closed and removed again if a later one fails
        for (size_t i = 0; i < config_.listeners.size(); i++) {
            const ListenerConfig& l = config_.listeners[i];
            ListenSocket socket;
            inherited_.push_back(adopted[i].valid());
            if (adopted[i].valid()) {
                socket = ListenSocket::adopt(std::move(adopted[i]), l.socket_path);
            } else {
                auto fresh = ListenSocket::bind(l.socket_path, error);
                if (!fresh) return false;
                socket = std::move(*fresh);
            }
            auto first = l.prefetch_first;
            uint64_t first_page_size = l.prefetch_first_page_size;
            if (!first && l.mode == ServeMode::prefetch) packed_replay(l, first, first_page_size);
            bound.push_back(ListenerBinding{std::move(socket), l.source.get(), index_of[l.source.get()], l.mode,
                                            std::move(first), first_page_size, l.record_ws});
        }
        if (!config_.metrics_listen.empty()) {
            std::vector<std::string> names;
            for (const ListenerConfig& l : config_.listeners) names.push_back(l.socket_path);
            metrics_ = MetricsServer::start(config_.metrics_listen, *stats_, budgets_, std::move(names), error);
            if (!metrics_) return false;
        }
        if (!config_.control_path.empty()) {
            control_ = ControlServer::start(config_.control_path, *this, error);
            if (!control_) return false;
        }
        // The acceptor owns the sockets from here: it closes and removes them
        // when the engine stops accepting, on its reactor's thread.
        AcceptorContext context{acceptor_config(), budgets_, *stats_, *placement_, next_vm_id_};
        reactors_[0]->attach_service(make_acceptor(context, std::move(bound)));
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

    EngineStats stats() const override { return stats_ ? stats_->snapshot(budgets_) : EngineStats{}; }

    bool wait_released(uint64_t count, std::chrono::milliseconds timeout) const override {
        return wait_until([&](const EngineStats& s) { return s.vms_released >= count; }, timeout);
    }

    bool wait_accepted(uint64_t count, std::chrono::milliseconds timeout) const override {
        return wait_until([&](const EngineStats& s) { return s.vms_accepted >= count; }, timeout);
    }

    bool wait_until(const std::function<bool(const EngineStats&)>& done,
                    std::chrono::milliseconds timeout) const override {
        return stats_->wait_until(budgets_, done, timeout);
    }

    std::vector<VmReport> reports() const override { return stats_->reports(); }

    bool reactors_responsive(std::chrono::milliseconds timeout) const override {
        std::lock_guard lock(ping_mu_);
        // One ping in flight at most: while a reactor has not answered the
        // last one it is asked nothing new, so a stuck reactor's mailbox
        // does not grow by a ping per watchdog period.
        if (!ping_ || ping_->wait(std::chrono::milliseconds(0))) {
            ping_ = std::make_shared<VmQuery>();
            ping_->action = VmQuery::Action::ping;
            ping_->remaining = static_cast<unsigned>(reactors_.size());
            for (auto& r : reactors_) r->ask(ping_);
        }
        return ping_->wait(timeout);
    }

    int metrics_port() const override { return metrics_ ? metrics_->port() : 0; }

    // ---- ControlTarget ----
    bool query_vms(VmQuery::Action action, uint64_t vm_id, std::vector<VmInfo>& out) override {
        auto query = std::make_shared<VmQuery>();
        query->action = action;
        query->vm_id = vm_id;
        query->remaining = static_cast<unsigned>(reactors_.size());
        for (auto& r : reactors_) r->ask(query);
        if (!query->wait(std::chrono::seconds(2))) return false;
        std::lock_guard lock(query->mu);
        out = std::move(query->found);
        return true;
    }
    size_t write_working_sets() override {
        std::vector<VmInfo> vms;
        if (!query_vms(VmQuery::Action::record_ws, 0, vms)) {
            RP_WARN("working sets: a reactor did not answer in time; some may not be written");
            return 0;
        }
        return static_cast<size_t>(
            std::count_if(vms.begin(), vms.end(), [](const VmInfo& v) { return v.ws_error.empty(); }));
    }
    EngineStats totals() const override { return stats(); }
    std::vector<std::string> listener_names() const override {
        std::vector<std::string> names;
        for (const ListenerConfig& l : config_.listeners) names.push_back(l.socket_path);
        return names;
    }
    void stop_accepting() override { reactors_[0]->stop_accepting(); }

    std::string setup_summary() const override {
        std::string s = std::to_string(reactors_.size()) + " reactor(s)";
        if (!reactors_.empty()) {
            s += " at nice " + std::to_string(reactors_[0]->nice());
            if (reactors_[0]->nice_error() != 0)
                s += " (nice " + std::to_string(config_.reactor_nice) +
                     " refused: " + std::strerror(reactors_[0]->nice_error()) + ")";
        }
        s += ", io_uring " + (reactors_.empty() ? std::string("?") : reactors_[0]->setup_mode());
        for (size_t i = 0; i < config_.listeners.size(); i++) {
            const ListenerConfig& l = config_.listeners[i];
            s += "; " + l.socket_path + (inherited_[i] ? " (from systemd)" : "") + " <- " + l.source->describe() +
                 (l.mode == ServeMode::lazy                                          ? " (lazy)"
                  : config_.prefetch_during_faults == PrefetchDuringFaults::pause ? " (prefetch, paused while faults flow)"
                  : config_.prefetch_during_faults == PrefetchDuringFaults::automatic
                      ? " (prefetch, paused while faults flow on contended CPUs)"
                      : " (prefetch, in steps while faults flow)");
        }
        if (metrics_) s += "; metrics on port " + std::to_string(metrics_->port());
        return s;
    }

private:
    // Each reactor gets its own copy of what it needs: nothing it reads
    // later belongs to the engine.
    ReactorConfig reactor_config(unsigned index) const {
        ReactorConfig r;
        r.index = index;
        r.sources = sources_;
        r.max_vms = config_.vms_per_reactor != 0 ? std::min(config_.vms_per_reactor, budgets_.vm_slots_per_reactor)
                                                 : budgets_.vm_slots_per_reactor;
        r.mailbox_vms = std::max(1u, config_.mailbox_vms);
        r.busy_poll_max = config_.busy_poll_max;
        r.nice = config_.reactor_nice;
        r.kill_on_failure = config_.kill_on_failure;
        r.pager = PagerConfig{config_.readahead_bytes, config_.page_cache_fast_path, config_.kill_on_failure};
        r.prefetch = Prefetcher::Config{config_.prefetch_batch_bytes, config_.prefetch_inflight_batches,
                                        config_.prefetch_during_faults == PrefetchDuringFaults::pause};
        r.fault_quiet_period = config_.fault_quiet_period;
        if (config_.prefetch_during_faults == PrefetchDuringFaults::automatic) {
            r.pace_prefetch = true;
            r.cpu_pressure_path = config_.cpu_pressure_path;
            r.proc_root = config_.proc_root;
            r.pace = PrefetchPace::Config{
                .window = config_.cpu_pressure_window,
                .first_window = config_.cpu_pressure_first_window,
                .host_pressure = {config_.cpu_pressure_pause_above, config_.cpu_pressure_resume_below},
                .vm_run_delay = {config_.vm_run_delay_pause_above, config_.vm_run_delay_resume_below}};
        }
        return r;
    }

    AcceptorConfig acceptor_config() const {
        return AcceptorConfig{config_.allowed_uids, config_.handshake_timeout, config_.max_pending,
                              config_.max_vm_memory_bytes, config_.kill_on_failure};
    }

    // Pairs each inherited socket with the listener of the same path (as
    // absolute, lexically normal paths): `adopted[i]` is listener i's socket
    // or none. A socket that matches no listener refuses the start: the
    // socket unit and the configuration disagree.
    static bool match_inherited(const std::vector<ListenerConfig>& listeners, std::vector<InheritedSocket>& inherited,
                                std::vector<FileDesc>& adopted, std::string& error) {
        adopted.resize(listeners.size());
        for (InheritedSocket& s : inherited) {
            const std::string path = comparable_socket_path(s.path);
            size_t i = 0;
            while (i < listeners.size() && (adopted[i].valid() || comparable_socket_path(listeners[i].socket_path) != path))
                i++;
            if (i == listeners.size()) {
                error = "socket activation: the passed socket " + escape_for_log(s.path) + " (fd " +
                        std::to_string(s.fd.get()) + ") is no listener's --socket (or config \"socket\"), or is "
                        "passed twice: make the socket unit's ListenStream= and the listeners agree";
                return false;
            }
            adopted[i] = std::move(s.fd);
        }
        return true;
    }

    static void raise_fd_limit() {
        // Each VM holds a uffd, a connection and a pidfd; the ring's sparse
        // file table is bounded by RLIMIT_NOFILE too.
        rlimit lim{};
        if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
            lim.rlim_cur = lim.rlim_max;
            (void)setrlimit(RLIMIT_NOFILE, &lim);
        }
    }

    EngineConfig config_;
    std::vector<const Source*> sources_;
    std::vector<bool> inherited_;  // per listener: its socket came from systemd
    mutable std::mutex ping_mu_;
    mutable std::shared_ptr<VmQuery> ping_;  // the last liveness ping (reactors_responsive), guarded by ping_mu_
    Budgets budgets_;
    std::atomic<uint64_t> next_vm_id_{1};
    // Destroyed in reverse: the reactors (and with reactor 0 the acceptor,
    // which refers to the placement and the stats) go before them.
    std::unique_ptr<StatsTable> stats_;
    std::unique_ptr<MetricsServer> metrics_;  // reads stats_: declared after it, so it goes first
    std::unique_ptr<Placement> placement_;
    std::vector<std::unique_ptr<Reactor>> reactors_;
    std::unique_ptr<ControlServer> control_;  // asks the reactors: stopped first (see the destructor)
};

}  // namespace

std::unique_ptr<Engine> Engine::start(EngineConfig config, std::string& error) {
    return start(std::move(config), {}, error);
}

std::unique_ptr<Engine> Engine::start(EngineConfig config, std::vector<InheritedSocket> inherited, std::string& error) {
    auto engine = std::make_unique<EngineImpl>();
    if (!engine->init(std::move(config), std::move(inherited), error)) return nullptr;
    return engine;
}

}  // namespace ringpager
