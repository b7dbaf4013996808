// StatsTable: the engine's one table of counters. Each reactor writes its
// own blocks (ReactorCounters, and one VmCounters per listener fed by its
// pagers' events); the acceptor its own atomics; readers sum them
// (EngineStats, or per listener for metrics). It keeps the reports of the
// VMs served, bounded (the newest kMaxReports), and wakes whoever waits for
// a count to move.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "engine/budgets.hpp"
#include "reactor/reactor_config.hpp"

namespace ringpager {

class StatsTable final : public ReactorSink {
public:
    static constexpr size_t kMaxReports = 4096;

    StatsTable(unsigned reactors, unsigned listeners);

    ReactorCounters& reactor(unsigned index) { return reactors_[index]; }
    // Reactor `index`'s blocks, one per listener.
    std::span<VmCounters> listeners_of(unsigned index) { return {&vms_[size_t{index} * listener_count_], listener_count_}; }

    // One listener's figures summed over the reactors (what metrics show).
    struct ListenerSnapshot {
        uint64_t vms_active = 0, vms_served = 0, vms_failed = 0, vms_resident = 0, faults = 0, pages_copied = 0,
                 pages_prefetched = 0, pages_zeroed = 0, pages_poisoned = 0, copy_ioctls = 0, bytes_read = 0,
                 removed_pages = 0, eagain_retries = 0, page_cache_hits = 0;
        Histogram::Snapshot fault_service, time_to_resident;
    };
    ListenerSnapshot listener(unsigned index) const;
    unsigned listener_count() const { return listener_count_; }

    // The acceptor's counters.
    std::atomic<uint64_t> vms_accepted{0}, vms_refused{0}, handshakes_pending{0}, accept_pauses{0};
    // Refusals by cause (metrics: ringpager_vms_refused_total{reason=...}).
    enum class Refusal : uint8_t { handshake, limits, memory, max_vms, fds, uid, stopping, reactor_full, count };
    static const char* refusal_name(Refusal r);
    void refused(Refusal why) {
        refusals_[static_cast<size_t>(why)].fetch_add(1, std::memory_order_relaxed);
        vms_refused.fetch_add(1);
        changed();
    }
    uint64_t refusals(Refusal why) const { return refusals_[static_cast<size_t>(why)].load(); }

    EngineStats snapshot(const Budgets& budgets) const;
    std::vector<VmReport> reports() const;
    // Blocks until `done(snapshot)` holds (re-checked whenever changed() is
    // called), or timeout.
    bool wait_until(const Budgets& budgets, const std::function<bool(const EngineStats&)>& done,
                    std::chrono::milliseconds timeout) const;

    // ReactorSink
    void vm_released(const VmReport& report) override;
    void vm_dropped() override;
    void changed() override;

private:
    std::unique_ptr<ReactorCounters[]> reactors_;
    unsigned reactor_count_;
    unsigned listener_count_;
    std::unique_ptr<VmCounters[]> vms_;  // reactor-major: [reactor * listeners + listener]
    std::atomic<uint64_t> vms_released_{0};
    std::array<std::atomic<uint64_t>, static_cast<size_t>(Refusal::count)> refusals_{};
    mutable std::mutex mu_;
    mutable std::condition_variable changed_;
    std::deque<VmReport> reports_;  // guarded by mu_
};

}  // namespace ringpager
