// StatsTable: the engine's one table of counters. Each reactor writes its
// own block (ReactorCounters, fed by its pagers' events); the acceptor its
// own atomics; readers sum them (EngineStats). It keeps the reports of the
// VMs served, bounded (the newest kMaxReports), and wakes whoever waits for
// a count to move.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "engine/budgets.hpp"
#include "reactor/reactor_config.hpp"

namespace ringpager {

class StatsTable final : public ReactorSink {
public:
    static constexpr size_t kMaxReports = 4096;

    explicit StatsTable(unsigned reactors);

    ReactorCounters& reactor(unsigned index) { return reactors_[index]; }

    // The acceptor's counters.
    std::atomic<uint64_t> vms_accepted{0}, vms_refused{0}, handshakes_pending{0}, accept_pauses{0};

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
    std::atomic<uint64_t> vms_released_{0};
    mutable std::mutex mu_;
    mutable std::condition_variable changed_;
    std::deque<VmReport> reports_;  // guarded by mu_
};

}  // namespace ringpager
