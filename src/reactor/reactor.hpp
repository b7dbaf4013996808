// Reactor: one thread, one io_uring, the VMs it owns. A loop turn reaps every
// completion, applies uffd events before faults, installs completed reads,
// issues reads for new faults, feeds the prefetcher, then submits once.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "io/io_loop.hpp"
#include "reactor/vm.hpp"
#include "ringpager/engine.hpp"

namespace ringpager {

class Reactor;

// State shared by all reactors of one engine. Counters are per reactor
// (see ReactorCounters); this holds configuration and the VM records.
struct EngineShared {
    EngineConfig config;
    std::vector<const Source*> sources;   // distinct sources, fixed-file order
    std::vector<unsigned> source_file_base;
    unsigned source_file_count = 0;
    std::vector<Reactor*> reactors;
    std::atomic<uint64_t> next_vm_id{1};
    std::atomic<uint64_t> vms_accepted{0};
    std::atomic<uint64_t> vms_refused{0};
    std::atomic<uint64_t> vms_released{0};
    // Budgets every VM takes its share of at the handshake (Reservation).
    uint64_t memory_limit_bytes = 0;       // config.memory_limit_bytes, resolved
    std::atomic<uint64_t> vm_state_bytes{0};
    uint64_t fd_budget = 0;                // fds the engine may hold for peers
    std::atomic<uint64_t> peer_fds{0};
    std::atomic<uint64_t> handshakes_pending{0};
    std::atomic<uint64_t> accept_pauses{0};
    unsigned vm_file_slots = 2000;         // fixed-file slots per reactor for uffds (sized to RLIMIT_NOFILE)

    mutable std::mutex mu;
    mutable std::condition_variable changed;
    std::vector<VmReport> reports;        // guarded by mu

    void notify() {
        std::lock_guard lock(mu);
        changed.notify_all();
    }
};

struct ReactorCounters {
    std::atomic<uint64_t> vms_active{0}, vms_failed{0}, faults{0}, pages_copied{0}, pages_prefetched{0},
        pages_zeroed{0}, copy_ioctls{0}, bytes_read{0}, removed_pages{0}, eagain_retries{0}, events_other{0}, vms_resident{0},
        buffers_busy{0}, stray_fds_closed{0}, page_cache_hits{0}, busy_poll_hits{0}, busy_poll_misses{0},
        ranges_unmapped{0}, pages_poisoned{0};
    void add(std::atomic<uint64_t>& c, uint64_t n) { c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
};

// Something else that runs on a reactor's ring (the acceptor/handshake).
class RingService {
public:
    virtual ~RingService() = default;
    virtual void start(Reactor& reactor) = 0;
    virtual void on_completion(Reactor& reactor, uint64_t cookie, const io::Completion& c) = 0;
    virtual void stop(Reactor& reactor) = 0;
    virtual bool idle() const = 0;
};

class Reactor {
public:
    Reactor(unsigned index, EngineShared& shared);
    ~Reactor();

    // Starts the thread; returns once the ring is set up (or failed, with `error`).
    bool start(std::string& error);
    // Runs `service` on this reactor's ring from its next turn. Thread-safe.
    void attach_service(std::unique_ptr<RingService> service);
    void request_stop();  // thread-safe
    // Graceful stop (Engine::request_drain) with this deadline. Thread-safe.
    void request_drain(std::chrono::steady_clock::time_point deadline);
    bool join();          // false if the loop failed
    // Hands a validated VM to this reactor. Thread-safe. Returns nullptr, or
    // the VM itself when the inbox is full (the caller refuses it).
    std::unique_ptr<VmSetup> hand_off(std::unique_ptr<VmSetup> vm);

    unsigned index() const { return index_; }
    uint64_t active_vms() const { return counters_.vms_active.load(std::memory_order_relaxed); }
    const ReactorCounters& counters() const { return counters_; }
    const std::string& setup_mode() const { return setup_mode_; }
    // The thread's nice value, and the errno of setting config.reactor_nice (0: set).
    int nice() const { return nice_; }
    int nice_error() const { return nice_error_; }

    // For services, on this reactor's thread only: their operations carry
    // service_op(cookie) and complete through on_completion(cookie).
    io::IoLoop& io();
    static io::OpData service_op(uint64_t cookie);
    void cancel_op(io::Tag tag);

    struct Impl;  // reactor_impl.hpp; public so the reactor's own files can name it

private:
    void thread_main();
    void apply_nice();

    unsigned index_;
    EngineShared& shared_;
    ReactorCounters counters_;
    std::unique_ptr<Impl> impl_;
    std::thread thread_;
    std::string setup_mode_;
    int nice_ = 0;
    int nice_error_ = 0;
    int exit_efd_ = -1;
    int wake_efd_ = -1;
    std::mutex inbox_mu_;
    std::vector<std::unique_ptr<VmSetup>> inbox_;
    std::unique_ptr<RingService> service_inbox_;
    std::atomic<bool> drain_requested_{false};
    std::atomic<std::chrono::steady_clock::rep> drain_deadline_{0};
    bool failed_ = false;
};

}  // namespace ringpager
