// `ringpager serve`: the engine process (SPEC §4).
#include <signal.h>
#include <unistd.h>

#include <mimalloc.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <thread>
#include <tuple>

#include "cli/serve_config.hpp"
#include "cli/service_notifier.hpp"
#include "common/log.hpp"
#include "remote/chunk_cache.hpp"
#include "remote/s3_client.hpp"
#include "source/remote_source.hpp"
#include "ringpager/engine.hpp"
#include "ringpager/snapshot.hpp"
#include "server/socket_activation.hpp"
#include "snapshot/working_set.hpp"
#include "uffd/uffd.hpp"

using namespace ringpager;

namespace {

struct ServeOptions {
    std::vector<std::string> sockets, mem_files, snapshots, modes;
    std::string config_file;
    std::string record_ws, working_set;
    unsigned reactors = 0;
    std::vector<uid_t> allow_uids;
    double handshake_timeout_s = 30;
    bool kill_on_failure = false;
    bool verify_reads = false;  // the default now; kept so existing command lines still parse
    bool no_verify_reads = false;
    std::string max_vm_memory;
    std::string memory_limit;
    unsigned max_pending = 64;
    unsigned max_vms = 0;
    std::string metrics_listen;
    std::string control_path;
    double stop_timeout_s = 30;
    std::string log_level = "info";
    std::string log_format = "text";
    uint64_t readahead_kib = 256;
    unsigned busy_poll_us = 50;
    int reactor_nice = -10;
    bool no_fast_path = false;
    uint64_t prefetch_batch_kib = 512;
    std::string prefetch_during_faults = "auto";
    std::vector<double> prefetch_pressure = {5, 10};  // auto: resume steps below, pause above (% stalled)
    std::string cache_dir;      // s3:// snapshots: the chunk cache
    std::string cache_size;     // its bound ("" or "0": none)
    double fetch_deadline_s = 30;
};

// The acceptor keeps a per-reactor table of this size (src/server/listener.cpp).
constexpr unsigned kMaxReactors = 256;

// A config file names every listener: a listener flag beside it would be ignored.
bool flags_fit_config(const ServeOptions& o, std::string& error) {
    const std::pair<const char*, bool> listener_flags[] = {{"--socket", !o.sockets.empty()},
                                                           {"--mem-file", !o.mem_files.empty()},
                                                           {"--snapshot", !o.snapshots.empty()},
                                                           {"--mode", !o.modes.empty()},
                                                           {"--record-ws", !o.record_ws.empty()},
                                                           {"--working-set", !o.working_set.empty()}};
    for (const auto& [flag, given] : listener_flags) {
        if (given) {
            error = std::string(flag) + " cannot be given with --config: the config file names every listener";
            return false;
        }
    }
    return true;
}

bool listeners_from_config_file(const std::string& path, std::vector<ListenerSpec>& out, std::string& error) {
    std::string text;
    return read_config_file(path, text, error) && parse_serve_config(text, path, out, error);
}

// Pairs sockets with sources: the i-th socket serves the i-th source, or all
// sockets serve the single source given.
bool listeners_from_flags(const ServeOptions& o, std::vector<ListenerSpec>& out, std::string& error) {
    if (!o.mem_files.empty() && !o.snapshots.empty()) {
        error = "give --mem-file or --snapshot, not both (use a --config file to mix them)";
        return false;
    }
    const bool layered = !o.snapshots.empty();
    const auto& sources = layered ? o.snapshots : o.mem_files;
    if (o.sockets.empty() || sources.empty()) {
        error = "serve needs --socket and --mem-file (or --snapshot)";
        return false;
    }
    if (sources.size() != 1 && sources.size() != o.sockets.size()) {
        error = "give one source for all sockets, or one per --socket (" + std::to_string(o.sockets.size()) +
                " sockets, " + std::to_string(sources.size()) + " sources)";
        return false;
    }
    if (o.modes.size() > 1 && o.modes.size() != o.sockets.size()) {
        error = "give one --mode for all sockets, or one per --socket";
        return false;
    }
    for (size_t i = 0; i < o.sockets.size(); i++) {
        out.push_back({o.sockets[i], sources[sources.size() == 1 ? 0 : i], layered,
                       !o.modes.empty() && o.modes[o.modes.size() == 1 ? 0 : i] == "prefetch" ? ServeMode::prefetch
                                                                                              : ServeMode::lazy,
                       o.record_ws, o.working_set});
        if (!o.working_set.empty() && out.back().mode != ServeMode::prefetch) {
            error = "--working-set needs --mode prefetch (the prefetcher replays it)";
            return false;
        }
    }
    return true;
}

// "512M", "8G", "1073741824": bytes with an optional binary suffix.
bool parse_size(const std::string& text, uint64_t& out) {
    size_t used = 0;
    unsigned long long value = 0;
    try {
        value = std::stoull(text, &used, 10);
    } catch (const std::exception&) {
        return false;
    }
    if (text.empty() || text[0] == '-') return false;
    const std::string suffix = text.substr(used);
    unsigned shift = 0;
    if (suffix == "K" || suffix == "k") shift = 10;
    else if (suffix == "M" || suffix == "m") shift = 20;
    else if (suffix == "G" || suffix == "g") shift = 30;
    else if (suffix == "T" || suffix == "t") shift = 40;
    else if (!suffix.empty()) return false;
    if (shift != 0 && value > (UINT64_MAX >> shift)) return false;
    out = static_cast<uint64_t>(value) << shift;
    return true;
}

// Snapshots in an object store (--snapshot s3://BUCKET/NAME) share one S3
// client for their manifests and one chunk cache under --cache-dir.
class RemoteSources {
public:
    explicit RemoteSources(const ServeOptions& o) : o_(o) {}

    std::shared_ptr<const Source> open(const std::string& url, std::string& error) {
        remote::S3Location at;
        if (error = remote::parse_s3_url(url, remote::KeyRule::required, at); !error.empty()) return nullptr;
        if (!cache_ && !start(error)) return nullptr;
        LayeredSourceOptions options;
        options.verify_reads = !o_.no_verify_reads;
        return remote::open_remote_source(*client_, at, cache_, options, error);
    }

private:
    bool start(std::string& error) {
        auto config = remote::S3Config::from_environment();
        if (!config) {
            error = config.error().message;
            return false;
        }
        auto client = remote::S3Client::create(*config);
        if (!client) {
            error = client.error().message;
            return false;
        }
        client_ = std::move(*client);
        remote::ChunkCacheOptions options;
        options.directory = o_.cache_dir;
        options.fetch_deadline = std::chrono::milliseconds(static_cast<int64_t>(o_.fetch_deadline_s * 1000));
        if (!o_.cache_size.empty() && !parse_size(o_.cache_size, options.capacity_bytes)) {
            error = "--cache-size: '" + o_.cache_size + "' is not a size (a number with an optional K, M, G or T suffix)";
            return false;
        }
        error = remote::ChunkCache::open(std::move(*config), options, cache_);
        return error.empty();
    }

    const ServeOptions& o_;
    std::unique_ptr<remote::S3Client> client_;
    std::shared_ptr<remote::ChunkCache> cache_;
};

// The listener's working sets: the file it records to, and the set it
// replays. A set that cannot be used (missing, truncated, corrupt, another
// snapshot's) is one error line and the listener serves without replay; only
// a snapshot that cannot be read for its identity stops the start.
bool use_working_sets(const ListenerSpec& spec, const Source& source, ListenerConfig& listener, std::string& error) {
    if (spec.record_ws.empty() && spec.working_set.empty()) return true;
    SnapshotIdentity identity;
    if (!snapshot_identity(source, identity, error)) return false;
    if (!spec.record_ws.empty())
        listener.record_ws = std::make_shared<WorkingSetRecording>(
            WorkingSetRecording{spec.record_ws, identity.size_bytes, identity.fingerprint});
    if (spec.working_set.empty()) return true;
    WorkingSet set;
    std::string why;
    if (!load_working_set_for(spec.working_set, identity, set, why)) {
        RP_ERROR("%s; %s is served without replay", why.c_str(), spec.socket.c_str());
        return true;
    }
    RP_INFO("working set %s: %llu pages in %zu runs, replayed first to VMs of %s", spec.working_set.c_str(),
            (unsigned long long)set.pages(), set.runs.size(), spec.socket.c_str());
    listener.prefetch_first = std::make_shared<const std::vector<PageRun>>(std::move(set.runs));
    listener.prefetch_first_page_size = set.page_size_bytes;
    return true;
}

LogLevel parse_level(const std::string& s) {
    if (s == "debug") return LogLevel::debug;
    if (s == "warn") return LogLevel::warn;
    if (s == "error") return LogLevel::error;
    if (s == "quiet") return LogLevel::quiet;
    return LogLevel::info;
}

// SIGUSR1: every recording VM's working set so far, written now (each VM's
// reactor logs its file); the VMs are served and recorded on.
void write_working_sets(Engine& engine) {
    const size_t written = engine.write_working_sets();
    RP_INFO("User defined signal 1 received: %zu working set(s) written; recording goes on", written);
}

}  // namespace

int serve_main(int argc, char** argv) {
    CLI::App app{"Serve Firecracker memory snapshots to VMs over userfaultfd.\n"
                 "Firecracker connects to --socket (mem_backend {\"backend_type\":\"Uffd\"}) and every page "
                 "fault of its guest is served from the snapshot.",
                 "ringpager serve"};
    ServeOptions o;
    app.add_option("--socket", o.sockets,
                   "Unix socket to listen on (repeatable); a socket systemd passes (LISTEN_FDS) with this path is "
                   "served instead of binding it");
    app.add_option("--mem-file", o.mem_files, "Firecracker memory file to serve (one, or one per --socket)");
    app.add_option("--snapshot", o.snapshots,
                   "layered snapshot manifest to serve instead of --mem-file, or s3://BUCKET/NAME (with --cache-dir; "
                   "AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION from the environment)");
    app.add_option("--cache-dir", o.cache_dir,
                   "s3:// snapshots: the chunk cache directory, shared by every VM of this engine (locked: one engine "
                   "per directory; cached chunks are verified and reused after a restart)");
    app.add_option("--cache-size", o.cache_size,
                   "s3:// snapshots: bound on the chunk cache, e.g. 20G (default: none; chunks not read lately go first (CLOCK))");
    app.add_option("--fetch-deadline", o.fetch_deadline_s,
                   "s3:// snapshots: seconds a chunk may take to arrive while the store fails (away, 5xx, resets) "
                   "before the VMs waiting on it fail (default 30)")
        ->check(CLI::PositiveNumber);
    app.add_option("--mode", o.modes, "lazy: serve faults only; prefetch: also install every page in the background")
        ->check(CLI::IsMember({"lazy", "prefetch"}));
    app.add_option("--record-ws", o.record_ws,
                   "record each VM's working set (its first on-demand faults, in order) and write it to FILE when "
                   "the VM is released (or now: SIGUSR1 for every VM, ringpager ctl record-ws for one); \"{vm}\" in "
                   "FILE becomes the VM's id, else the last VM written wins");
    app.add_option("--working-set", o.working_set,
                   "with --mode prefetch: install this recorded working set first (4 MiB windows in recorded order, each "
                   "read in offset order), then the rest");
    app.add_option("--config", o.config_file, "JSON file: {\"listeners\":[{\"socket\":..,\"mem_file\"|\"snapshot\":..,\"mode\":..,\"record_ws\":..,\"working_set\":..}]}");
    app.add_option("--reactors", o.reactors, "reactor threads, at most 256 (default, 0: one per online core)")
        ->check(CLI::Range(0u, kMaxReactors));
    app.add_option("--allow-uid", o.allow_uids, "uid allowed to connect (repeatable; default: this process's uid)");
    app.add_option("--handshake-timeout", o.handshake_timeout_s, "seconds a peer has to send its handshake")
        ->check(CLI::PositiveNumber);
    app.add_flag("--kill-on-failure", o.kill_on_failure, "SIGKILL a VM that cannot be served instead of leaving it hung");
    app.add_flag("--verify-reads", o.verify_reads, "check every block read from a layered snapshot (the default)");
    app.add_flag("--no-verify-reads", o.no_verify_reads,
                 "do not check blocks read from a layered snapshot against their checksums (default: every read is checked)");
    app.add_option("--max-vm-memory", o.max_vm_memory,
                   "largest guest memory one VM may declare, e.g. 8G (default: the size of its snapshot)");
    app.add_option("--memory-limit", o.memory_limit,
                   "bound on the memory the engine keeps for VMs' page states, e.g. 2G (default: a quarter of RAM); "
                   "a VM that would pass it is refused at the handshake");
    app.add_option("--metrics-listen", o.metrics_listen,
                   "serve Prometheus metrics on GET /metrics at ADDR:PORT, e.g. 127.0.0.1:9464");
    app.add_option("--control", o.control_path,
                   "serve the control API on this Unix socket (ringpager ctl PATH list|stats|vm|release|prefetch|drain)");
    app.add_option("--max-vms", o.max_vms,
                   "VMs served at once; the next is refused at the handshake with one line (default: no bound)");
    app.add_option("--max-pending", o.max_pending,
                   "connections whose handshake is not complete yet; at the bound accepting waits (default 64)")
        ->check(CLI::Range(1u, 65536u));
    app.add_option("--stop-timeout", o.stop_timeout_s,
                   "on SIGTERM/SIGINT, seconds to let VMs still restoring become resident before they are released "
                   "(default 30; a second signal stops at once)")
        ->check(CLI::NonNegativeNumber);
    app.add_option("--readahead-kib", o.readahead_kib, "page cache readahead around sequential faults, KiB (0: off)");
    app.add_flag("--no-page-cache-fast-path", o.no_fast_path,
                 "always read fault pages through io_uring (default: try a non-blocking page cache read first)");
    app.add_option("--busy-poll-us", o.busy_poll_us,
                   "while faults are flowing, poll up to this long for the next one before sleeping (adaptive; 0: off)")
        ->check(CLI::Range(0u, 1000u));
    app.add_option("--reactor-nice", o.reactor_nice,
                   "nice value of the reactor threads, which serve many vCPUs each (needs CAP_SYS_NICE below 0)")
        ->check(CLI::Range(-20, 19));
    app.add_option("--prefetch-batch-kib", o.prefetch_batch_kib, "bytes the prefetcher reads and copies per batch, KiB")
        ->check(CLI::Range(4, 2048));
    app.add_option("--prefetch-during-faults", o.prefetch_during_faults,
                   "while faults are flowing (one in the last 2 ms), the prefetcher takes small steps between them "
                   "(steps), or installs nothing until they stop (pause), or chooses by how long the VMs' threads "
                   "wait for a CPU (auto, the default: steps while they hardly wait, from /proc/PID/task/*/schedstat, "
                   "or where those cannot be read /proc/pressure/cpu; a pause while vCPUs outnumber the cores, where "
                   "steps lengthen the fault tail)")
        ->check(CLI::IsMember({"steps", "pause", "auto"}));
    app.add_option("--prefetch-pressure", o.prefetch_pressure,
                   "auto's bounds on the host's CPU pressure (used where the VMs' threads cannot be read), "
                   "RESUME,PAUSE in % of a 50 ms window in which runnable tasks waited for a CPU: "
                   "steps begin after a paused window below RESUME, a pause after a window of steps above PAUSE "
                   "(default 5,10)")
        ->expected(2)
        ->delimiter(',')
        ->check(CLI::Range(0.0, 100.0));
    app.add_option("--log-level", o.log_level, "debug, info, warn, error or quiet")
        ->check(CLI::IsMember({"debug", "info", "warn", "error", "quiet"}));
    app.add_option("--log-format", o.log_format,
                   "text, or json: one object per line, VM lifecycle events (vm_connected, vm_resident, "
                   "vm_released, vm_refused) with their fields")
        ->check(CLI::IsMember({"text", "json"}));
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        if (e.get_exit_code() == 0) return app.exit(e);  // --help
        fprintf(stderr, "ringpager serve: %s (see --help)\n", e.what());
        return 2;
    }
    if (o.prefetch_pressure[0] > o.prefetch_pressure[1]) {
        fprintf(stderr, "ringpager serve: --prefetch-pressure: RESUME (%g %%) is above PAUSE (%g %%) (see --help)\n",
                o.prefetch_pressure[0], o.prefetch_pressure[1]);
        return 2;
    }
    set_log_level(parse_level(o.log_level));
    set_log_format(o.log_format == "json" ? LogFormat::json : LogFormat::text);

    // Sockets systemd passed come first, before this process opens any fd of
    // its own: LISTEN_FDS names fds from 3 up, and they are taken (validated,
    // and closed on a refusal) by number.
    std::vector<InheritedSocket> inherited;
    std::string error;
    if (!take_activated_sockets(inherited, error)) {
        fprintf(stderr, "ringpager serve: %s\n", error.c_str());
        return 1;
    }
    std::vector<ListenerSpec> specs;
    if (o.config_file.empty() ? !listeners_from_flags(o, specs, error) : !flags_fit_config(o, error)) {
        fprintf(stderr, "ringpager serve: %s (see --help)\n", error.c_str());
        return 2;
    }
    if (!o.config_file.empty() && !listeners_from_config_file(o.config_file, specs, error)) {
        fprintf(stderr, "ringpager serve: %s\n", error.c_str());
        return 2;
    }
    if (std::string why = userfaultfd_unavailable_reason(); !why.empty()) {
        fprintf(stderr, "ringpager serve: %s\n", why.c_str());
        return 1;
    }
    EngineConfig config;
    std::map<std::string, std::shared_ptr<const Source>> opened;  // one Source per distinct file
    RemoteSources remote_sources(o);
    const bool any_remote = std::any_of(specs.begin(), specs.end(),
                                        [](const ListenerSpec& s) { return s.layered && s.path.rfind("s3://", 0) == 0; });
    if (any_remote == o.cache_dir.empty()) {
        fprintf(stderr, "ringpager serve: %s (see --help)\n",
                any_remote ? "an s3:// snapshot needs --cache-dir DIR" : "--cache-dir is for s3:// snapshots only");
        return 2;
    }
    for (const ListenerSpec& spec : specs) {
        auto& source = opened[(spec.layered ? "L:" : "R:") + spec.path];
        if (!source) {
            const bool remote = spec.layered && spec.path.rfind("s3://", 0) == 0;
            source = remote         ? remote_sources.open(spec.path, error)
                     : spec.layered ? open_layered_source(spec.path, !o.no_verify_reads, error)
                                    : open_raw_source(spec.path, error);
            if (!source) {
                fprintf(stderr, "ringpager serve: %s\n", error.c_str());
                return 1;
            }
        }
        config.listeners.push_back({spec.socket, source, spec.mode});
        if (!use_working_sets(spec, *source, config.listeners.back(), error)) {
            fprintf(stderr, "ringpager serve: %s\n", error.c_str());
            return 1;
        }
    }
    config.reactors = o.reactors;
    config.allowed_uids = o.allow_uids;
    config.handshake_timeout = std::chrono::milliseconds(static_cast<int64_t>(o.handshake_timeout_s * 1000));
    config.kill_on_failure = o.kill_on_failure;
    config.readahead_bytes = o.readahead_kib * 1024;
    config.page_cache_fast_path = !o.no_fast_path;
    config.busy_poll_max = std::chrono::microseconds(o.busy_poll_us);
    config.reactor_nice = o.reactor_nice;
    config.prefetch_batch_bytes = o.prefetch_batch_kib * 1024;
    config.prefetch_during_faults = o.prefetch_during_faults == "pause"  ? PrefetchDuringFaults::pause
                                    : o.prefetch_during_faults == "auto" ? PrefetchDuringFaults::automatic
                                                                         : PrefetchDuringFaults::steps;
    config.cpu_pressure_resume_below = o.prefetch_pressure[0] / 100;
    config.cpu_pressure_pause_above = o.prefetch_pressure[1] / 100;
    config.max_pending = o.max_pending;
    config.max_vms = o.max_vms;
    config.metrics_listen = o.metrics_listen;
    config.control_path = o.control_path;
    for (auto [text, out, name] : {std::tuple{&o.max_vm_memory, &config.max_vm_memory_bytes, "--max-vm-memory"},
                                   std::tuple{&o.memory_limit, &config.memory_limit_bytes, "--memory-limit"}}) {
        if (text->empty()) continue;
        if (!parse_size(*text, *out) || *out == 0) {
            fprintf(stderr, "ringpager serve: %s: '%s' is not a size (a number with an optional K, M, G or T suffix)\n",
                    name, text->c_str());
            return 2;
        }
    }

    // Signals become a sigwait in this thread; reactors inherit the mask and never see them.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGUSR2);  // only ever sent by this process to its own watcher thread
    sigaddset(&stop_signals, SIGUSR1);  // write the working sets recorded so far (--record-ws)
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    signal(SIGPIPE, SIG_IGN);

    auto engine = Engine::start(std::move(config), std::move(inherited), error);
    if (!engine) {
        fprintf(stderr, "ringpager serve: %s\n", error.c_str());
        return 1;
    }
    // READY=1 now that every listener listens; destroyed before the engine.
    ServiceNotifier notifier(*engine);
    // mimalloc replaces malloc process-wide (it is linked first); naming it here
    // also keeps the link from being dropped as unused.
    RP_INFO("serving: %s; allocator mimalloc %d", engine->setup_summary().c_str(), mi_version());
    int signal_number = 0;
    while (sigwait(&stop_signals, &signal_number) == 0 && signal_number == SIGUSR1) write_working_sets(*engine);
    const auto stop_timeout = std::chrono::milliseconds(static_cast<int64_t>(o.stop_timeout_s * 1000));
    RP_INFO("%s received: no new VMs; finishing restores within %.1f s, then releasing every VM (a second signal "
            "stops at once)", strsignal(signal_number), o.stop_timeout_s);
    notifier.stopping();
    engine->request_drain(stop_timeout);
    // A second signal cuts the graceful stop short. The watcher thread waits
    // for it; once the engine is done it is woken with a signal of its own.
    std::thread second_signal([&] {
        int again = 0;
        while (sigwait(&stop_signals, &again) == 0 && again == SIGUSR1) write_working_sets(*engine);
        if (again == SIGTERM || again == SIGINT) {
            RP_INFO("%s received again: stopping at once", strsignal(again));
            engine->request_stop();
        }
    });
    const bool clean = engine->wait();
    pthread_kill(second_signal.native_handle(), SIGUSR2);
    second_signal.join();
    const EngineStats s = engine->stats();
    RP_INFO("stopped: %llu VMs served (%llu refused, %llu failed), %llu faults, %llu pages copied (%llu prefetched), "
            "%llu zero-filled, %llu copy ioctls, %.1f MiB read; busy polls %llu hit, %llu missed",
            (unsigned long long)s.vms_accepted, (unsigned long long)s.vms_refused, (unsigned long long)s.vms_failed,
            (unsigned long long)s.faults, (unsigned long long)s.pages_copied, (unsigned long long)s.pages_prefetched,
            (unsigned long long)s.pages_zeroed, (unsigned long long)s.copy_ioctls, s.bytes_read / 1048576.0,
            (unsigned long long)s.busy_poll_hits, (unsigned long long)s.busy_poll_misses);
    return clean ? 0 : 1;
}
