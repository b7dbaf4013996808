// Reactor: one thread, one io_uring, the VMs it owns. A loop turn reaps every
// completion, applies uffd events before faults, installs completed reads,
// issues reads for new faults, feeds the prefetcher, then submits once.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "io/io_loop.hpp"
#include "reactor/mailbox.hpp"
#include "reactor/reactor_config.hpp"
#include "reactor/vm.hpp"
#include "ringpager/engine.hpp"

namespace ringpager {

class Reactor;

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
    // `counters` (its own), `listener_counters` (one block per listener of the
    // engine, for its VMs) and `sink` outlive the reactor.
    Reactor(ReactorConfig config, ReactorCounters& counters, std::span<VmCounters> listener_counters,
            ReactorSink& sink);
    ~Reactor();

    // Starts the thread; returns once the ring is set up (or failed, with `error`).
    bool start(std::string& error);
    // Runs `service` on this reactor's ring from its next turn. Thread-safe.
    void attach_service(std::unique_ptr<RingService> service);
    void request_stop();  // thread-safe
    // Graceful stop (Engine::request_drain) with this deadline. Thread-safe.
    void request_drain(std::chrono::steady_clock::time_point deadline);
    // The control API's question about this reactor's VMs; it answers into
    // `query` from its own thread. Thread-safe.
    void ask(std::shared_ptr<VmQuery> query) { mailbox_->post(Query{std::move(query)}); }
    // Stop accepting (the acceptor runs on this reactor), keep serving. Thread-safe.
    void stop_accepting() { mailbox_->post(StopAccepting{}); }
    bool join();          // false if the loop failed
    // Hands a validated VM to this reactor. Thread-safe. Returns nullptr, or
    // the VM itself when its mailbox is full (the caller refuses it).
    std::unique_ptr<VmSetup> hand_off(std::unique_ptr<VmSetup> vm);

    unsigned index() const { return config_.index; }
    const ReactorConfig& config() const { return config_; }
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

    const ReactorConfig config_;
    ReactorCounters& counters_;
    std::span<VmCounters> listener_counters_;
    ReactorSink& sink_;
    std::shared_ptr<Mailbox> mailbox_;  // made in start(); fetches in flight may outlive the reactor
    std::unique_ptr<Impl> impl_;
    std::thread thread_;
    std::string setup_mode_;
    int nice_ = 0;
    int nice_error_ = 0;
    int exit_efd_ = -1;
    int wake_efd_ = -1;
    bool failed_ = false;
};

}  // namespace ringpager
