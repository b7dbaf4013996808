// The ringpager engine: listens on Unix sockets, takes Firecracker's
// handshake, and serves every VM's page faults from its reactor.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "ringpager/file_desc.hpp"
#include "ringpager/source.hpp"

namespace ringpager {

enum class ServeMode { lazy, prefetch };
// What the prefetcher does while a reactor's faults are flowing (one came
// within EngineConfig::fault_quiet_period): small steps between them
// (`steps`), or nothing until they have been quiet that long (`pause`; a
// replayed working set still goes, its pages being the ones faulted), or
// either, by the host's CPU pressure (`automatic`: pause while runnable
// tasks wait for a CPU; src/reactor/prefetch_pace.hpp).
enum class PrefetchDuringFaults { steps, pause, automatic };

// A run of guest pages (global page index across the VM's regions, in
// handshake order), e.g. one entry of a recorded working set.
struct PageRun {
    uint64_t first_page = 0;
    uint64_t pages = 0;
};

// Where a listener's VMs' working sets are recorded (serve --record-ws), and
// the identity of the snapshot they are recorded from (src/snapshot/working_set.hpp).
struct WorkingSetRecording {
    // "{vm}" in the path is replaced by the VM's id, so every VM keeps its own
    // file; without it each released VM's set replaces the file (last writer wins).
    std::string path;
    uint64_t source_size_bytes = 0;
    uint64_t source_fingerprint = 0;
};

struct ListenerConfig {
    ListenerConfig() = default;
    ListenerConfig(std::string socket, std::shared_ptr<const Source> from, ServeMode serve_mode = ServeMode::lazy,
                   std::shared_ptr<const std::vector<PageRun>> first = {})
        : socket_path(std::move(socket)), source(std::move(from)), mode(serve_mode), prefetch_first(std::move(first)) {}

    std::string socket_path;
    std::shared_ptr<const Source> source;
    ServeMode mode = ServeMode::lazy;
    // The prefetcher's order for this listener's VMs: these runs first, in
    // this order, then everything else ascending. Empty: ascending.
    std::shared_ptr<const std::vector<PageRun>> prefetch_first;
    // The page size prefetch_first was recorded with (0: any): a VM of
    // another page size is prefetched ascending, with one line.
    uint64_t prefetch_first_page_size = 0;
    // Record each VM's first on-demand faults, in order, and write them as a
    // working-set file when it is released (null: no recording).
    std::shared_ptr<const WorkingSetRecording> record_ws;
};

struct EngineConfig {
    std::vector<ListenerConfig> listeners;
    unsigned reactors = 0;                        // 0: one per online core
    std::vector<uid_t> allowed_uids;              // empty: only the engine's own uid
    std::chrono::milliseconds handshake_timeout{30000};
    bool kill_on_failure = false;                 // SIGKILL a VM that cannot be served
    uint64_t prefetch_batch_bytes = 512 * 1024;   // pages per prefetch copy (4 KiB pages)
    unsigned prefetch_inflight_batches = 8;       // per reactor, while no fault is arriving
    PrefetchDuringFaults prefetch_during_faults = PrefetchDuringFaults::automatic;
    // Faults are flowing while one came within this (the prefetcher's pace,
    // above; a graceful stop prefetches in steps whatever is set).
    std::chrono::microseconds fault_quiet_period{2000};
    // PrefetchDuringFaults::automatic: over windows this long while faults
    // flow, the pause begins when more than `pause_above` of a window was
    // stalled in steps, and steps begin when less than `resume_below` was
    // stalled while paused. Stalled is first the time the VM processes'
    // threads waited for a CPU, read under `proc_root` (empty: not read),
    // per unit of time; where they cannot be read, the host's CPU pressure
    // in the PSI file `cpu_pressure_path` (empty: not read).
    std::chrono::milliseconds cpu_pressure_window{50};
    // A burst's first window, and the one after a switch (0: the window).
    std::chrono::milliseconds cpu_pressure_first_window{5};
    std::string proc_root = "/proc";
    double vm_run_delay_pause_above = 0.15;
    double vm_run_delay_resume_below = 0.10;
    std::string cpu_pressure_path = "/proc/pressure/cpu";
    double cpu_pressure_pause_above = 0.10;
    double cpu_pressure_resume_below = 0.05;
    uint64_t readahead_bytes = 256 * 1024;        // page cache readahead around sequential faults
    bool page_cache_fast_path = true;             // fault reads try RWF_NOWAIT first, the ring on a miss
    // While faults are flowing, a reactor polls for completions up to this
    // long before it sleeps (adaptive; 0: always sleep at once).
    std::chrono::microseconds busy_poll_max{50};
    // Nice value of the reactor threads (each serves many vCPU threads).
    int reactor_nice = -10;
    // Largest guest one handshake may declare, summed over its regions
    // (0: the size of the listener's source).
    uint64_t max_vm_memory_bytes = 0;
    // Bound on the memory the engine keeps per VM (page states and VM
    // records), summed over all VMs; a VM that would pass it is refused at
    // the handshake. 0: a quarter of physical memory.
    uint64_t memory_limit_bytes = 0;
    // Connections that have not completed their handshake; at the bound the
    // engine stops accepting until one completes or times out.
    unsigned max_pending = 64;
    // VMs one reactor serves at most (each takes a fixed-file slot); 0: what
    // RLIMIT_NOFILE allows, at most 2000. Beyond it a VM is refused.
    unsigned vms_per_reactor = 0;
    // VMs handed to a reactor but not adopted yet; beyond it a VM is refused.
    unsigned mailbox_vms = 1024;
    // VMs the engine serves at once; the next one is refused at the
    // handshake (0: no bound but the others).
    unsigned max_vms = 0;
    // Serve Prometheus metrics on GET /metrics at this "ADDR:PORT" (empty: no).
    std::string metrics_listen;
    // Serve the control API on this Unix socket (empty: no).
    std::string control_path;
    // At start, raise the soft open-files limit to the hard one (each VM
    // holds three fds). Off: keep the limit the process was given.
    bool raise_open_files_limit = true;
};

// A listening socket this process inherited (systemd socket activation,
// src/server/socket_activation.hpp), validated: a listening AF_UNIX
// SOCK_STREAM socket bound to `path`. The engine serves it on the listener
// whose socket_path names the same path, and never unlinks that path
// (systemd owns it and keeps it across restarts).
struct InheritedSocket {
    FileDesc fd;
    std::string path;  // what getsockname() says it is bound to
    std::string name;  // its LISTEN_FDNAMES entry ("unknown" or "" when none was given)
};

// Counters summed over all reactors (monotonic except the *_active ones).
struct EngineStats {
    uint64_t vms_accepted = 0;
    uint64_t vms_refused = 0;           // handshake or validation failures
    uint64_t vms_active = 0;
    uint64_t vms_released = 0;
    uint64_t vms_failed = 0;            // torn down because they could not be served
    uint64_t vms_resident = 0;          // became fully resident (no page left to fault)
    uint64_t faults = 0;                // page fault messages read
    uint64_t pages_copied = 0;          // installed by UFFDIO_COPY (faults + prefetch)
    uint64_t pages_prefetched = 0;      // of which by the prefetcher
    uint64_t pages_zeroed = 0;          // installed by UFFDIO_ZEROPAGE or zero copies
    uint64_t copy_ioctls = 0;
    uint64_t bytes_read = 0;
    uint64_t removed_pages = 0;         // pages named by REMOVE events
    uint64_t eagain_retries = 0;
    uint64_t events_other = 0;          // UNMAP, REMAP, FORK
    uint64_t page_cache_hits = 0;       // fault reads served by the RWF_NOWAIT fast path
    uint64_t busy_poll_hits = 0;        // waits that a busy poll ended (no sleep)
    uint64_t busy_poll_misses = 0;      // busy polls that timed out and slept
    uint64_t stray_fds_closed = 0;      // fds a peer sent after its handshake (closed, never served)
    uint64_t read_buffers_busy = 0;     // registered read buffers held by in-flight or deferred installs
    uint64_t read_buffer_bytes = 0;     // read buffer memory pinned now (grows with load, shrinks when idle)
    uint64_t handshakes_pending = 0;    // accepted connections whose handshake is not complete
    uint64_t vm_state_bytes = 0;        // memory held for VMs' state, counted against memory_limit_bytes
    uint64_t accept_pauses = 0;         // times accepting paused at the fd limit (backoff)
    uint64_t ranges_unmapped = 0;       // address ranges dropped because the VM unmapped them (ENOENT)
    uint64_t pages_poisoned = 0;        // pages that could not be served correctly, poisoned instead
    // --prefetch-during-faults auto: reactors whose prefetcher holds back now
    // (faults flowing, CPUs contended), and how often the reactors' paces
    // switched between steps and pause.
    uint64_t reactors_prefetch_paused = 0;
    uint64_t prefetch_pace_switches = 0;
    // Reactors whose pace read, in its last window, its VMs' threads' run
    // delay, or the host's CPU pressure (their VMs could not be read).
    uint64_t reactors_paced_by_vm_run_delay = 0;
    uint64_t reactors_paced_by_host_pressure = 0;
};

// A finished VM's record, kept for reports and tests.
struct VmReport {
    uint64_t vm_id = 0;
    pid_t pid = 0;
    uint64_t pages_total = 0;
    uint64_t faults = 0;
    uint64_t pages_copied_on_fault = 0;
    uint64_t pages_prefetched = 0;
    uint64_t pages_zeroed = 0;
    uint64_t bytes_read = 0;
    double seconds_to_resident = -1;    // -1: never fully resident
    double seconds_served = 0;
    std::string end_reason;
    // Replaying a working set (ListenerConfig::prefetch_first): its pages, those
    // installed ahead of any fault on them (faults the replay saved), and
    // faults on set pages the replay had not installed yet (missed).
    uint64_t ws_pages = 0;
    uint64_t ws_saved = 0;
    uint64_t ws_missed = 0;
    uint64_t ws_recorded = 0;  // recording: pages of its first on-demand faults
    // Replaying: bytes the replay's reads read (set pages and the gaps read
    // to join them), and seconds from its first read issued to its last read
    // done (its read phase, for a comparison with one sequential read).
    uint64_t ws_read_bytes = 0;
    uint64_t ws_reads = 0;     // the reads that read them (each one contiguous range of one file)
    double ws_read_seconds = 0;
    // Of the read phase, the time some replay read was in flight (a ring
    // read issued and not completed, or an inline read running): what the
    // reads themselves took. The rest of the phase the replay waited for
    // read buffers, which its installs give back.
    double ws_read_busy_seconds = 0;
};

class Engine {
public:
    // Binds every socket, starts the reactors, and returns a running engine;
    // on failure returns nullptr with a one-line `error`.
    static std::unique_ptr<Engine> start(EngineConfig config, std::string& error);
    // The same, serving `inherited` sockets instead of binding their paths.
    // Each must match a listener's socket_path (compared absolute and
    // lexically normal); one that matches none refuses the start.
    static std::unique_ptr<Engine> start(EngineConfig config, std::vector<InheritedSocket> inherited,
                                         std::string& error);
    // Answers once every reactor has run its loop and answered a ping
    // through its mailbox within `timeout` (what the systemd watchdog asks).
    virtual bool reactors_responsive(std::chrono::milliseconds timeout) const = 0;
    virtual ~Engine() = default;

    // Asks every reactor to stop at once: no new VMs, all VMs released. Thread-safe.
    virtual void request_stop() = 0;
    // A graceful stop: stop accepting, prefetch every VM that is still
    // restoring until it is resident, and release each VM once it is; VMs
    // still not resident after `timeout` are released with one error line
    // each (killed under kill_on_failure). request_stop() afterwards cuts it
    // short. Thread-safe; wait() returns when it is done.
    virtual void request_drain(std::chrono::milliseconds timeout) = 0;
    // Writes the working set recorded so far of every VM that records one
    // (ListenerConfig::record_ws), as `ringpager ctl record-ws ID` does for
    // one VM (serve: SIGUSR1); recording goes on. Returns how many were
    // written; a failure is one line from the VM's reactor.
    virtual size_t write_working_sets() = 0;
    // Waits until every reactor has stopped. Returns false if a reactor failed.
    virtual bool wait() = 0;

    virtual EngineStats stats() const = 0;
    // Blocks until `count` VMs have been released (or timeout); true on success.
    virtual bool wait_released(uint64_t count, std::chrono::milliseconds timeout) const = 0;
    // Blocks until `count` VMs have been accepted and are being served.
    virtual bool wait_accepted(uint64_t count, std::chrono::milliseconds timeout) const = 0;
    // Blocks until `done(stats())` holds (re-checked on every accept, adoption, refusal,
    // accept pause, resident VM and release), or timeout; true on success.
    virtual bool wait_until(const std::function<bool(const EngineStats&)>& done,
                            std::chrono::milliseconds timeout) const = 0;
    virtual std::vector<VmReport> reports() const = 0;
    // The port metrics are served on (0: none).
    virtual int metrics_port() const = 0;
    virtual std::string setup_summary() const = 0;
};

}  // namespace ringpager
