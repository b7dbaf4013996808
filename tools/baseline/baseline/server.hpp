// The baseline page-fault handler: the design most people write first
// (Firecracker's example handler style). One thread per VM, a poll() loop,
// one uffd_msg read at a time, one UFFDIO_COPY of one page per fault,
// straight from an mmap of the memory file. It is the comparison point for
// ringpager's benchmarks and the handler the guest simulator's tests run
// against, so it favours obviously-correct over fast.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "guestsim/mapping.hpp"
#include "ringpager/file_desc.hpp"
#include "ringpager/result.hpp"

namespace ringpager::baseline {

struct Options {
    std::string socket_path;
    std::string mem_file_path;
    // On a VM's first fault, copy all of its memory region by region (the
    // "eager" baseline); later faults (only possible on removed pages) are
    // still served.
    bool copy_all_on_first_fault = false;
    // A deliberately wrong handler for tests: REMOVE events are read (the kernel waits for
    // that) but not acted on, so a page the VM gave back (balloon, free page reporting) is
    // served from the snapshot again instead of as zeros, as Firecracker's first example
    // handlers did. The real-guest test shows that its checks catch this.
    bool ignore_remove = false;
    int handshake_timeout_ms = 30'000;
};

struct Stats {
    uint64_t connections_accepted = 0;
    uint64_t connections_active = 0;    // accepted and not yet finished (handshake or serving)
    uint64_t connections_finished = 0;
    uint64_t handshake_failures = 0;
    uint64_t faults = 0;                // page-fault messages handled
    uint64_t pages_copied = 0;          // pages installed with snapshot bytes
    uint64_t pages_zeroed = 0;          // pages installed as zeros (removed ranges)
    uint64_t eexist = 0;                // installs that found the page present
    uint64_t eagain = 0;                // installs retried after draining events
    uint64_t remove_events = 0;
};

// Counters shared by the VM threads; read through Server::stats().
struct Counters;

class Server {
public:
    // Opens and maps the memory file, then binds and listens on the socket
    // (a stale socket file at the path is replaced).
    static Result<std::unique_ptr<Server>> create(const Options& options);
    ~Server();  // stop(), then removes the socket file
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;

    // Runs the accept loop on a background thread.
    void start();
    // Runs the accept loop on the calling thread until stop(); returns once
    // every VM thread has finished.
    void run();
    // Thread-safe and idempotent: wakes every loop; when start() was used,
    // also joins the background thread (do not call it from a VM thread).
    void stop();

    Stats stats() const;
    // Waits (on a condition variable) until at least `count` connections
    // have finished; false on timeout.
    bool wait_for_finished(uint64_t count, std::chrono::milliseconds timeout);
    const Options& options() const { return options_; }

private:
    struct Worker {
        std::thread thread;
        bool done = false;
    };

    Server() = default;
    void serve_connection(FileDesc conn);
    void reap_workers(bool all);

    Options options_;
    FileDesc listen_;
    FileDesc stop_event_;  // an eventfd that becomes readable forever on stop()
    sim::Mapping file_map_;
    uint64_t file_size_bytes_ = 0;
    std::unique_ptr<Counters> counters_;

    mutable std::mutex mutex_;  // guards workers_ and the connection counts
    std::condition_variable finished_cv_;
    std::list<Worker> workers_;
    uint64_t connections_active_ = 0;
    uint64_t connections_finished_ = 0;
    std::thread accept_thread_;
};

}  // namespace ringpager::baseline
