// Prefetcher: one per reactor. A round robin over the reactor's prefetching
// VMs, one run each per round, within a budget of prefetch reads in flight
// (DESIGN.md "Prefetch"). Faults come first: while faults keep arriving it
// takes small steps, so a fault waits behind little, or none at all
// (Config::pause_during_faults); once the VMs go quiet it takes full batches.
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

#include "pager/vm_pager.hpp"

namespace ringpager {

class Prefetcher {
public:
    struct Config {
        uint64_t batch_bytes = 512 * 1024;  // a run, when the reactor is quiet
        unsigned batches_in_flight = 8;     // prefetch reads in flight, when quiet
        bool pause_during_faults = false;   // PrefetchDuringFaults::pause: no run while faults flow
    };
    static constexpr uint64_t kBusyBatchBytes = 64 * 1024;
    static constexpr unsigned kBusyBatchesInFlight = 2;

    // Starts prefetching `vm` (it stays in the round until it is done).
    void add(VmPager& vm);
    void remove(VmPager& vm);
    bool empty() const { return round_.empty(); }
    size_t size() const { return round_.size(); }

    // Issues runs until the budget is used or nothing is left to do; a VM
    // with nothing left leaves the round (and may be resident now). Returns
    // true when it held runs back because faults are flowing and the config
    // pauses then: call again once they have been quiet.
    bool step(const ReadJobs& jobs, PagerHost& host, bool faults_recent, const Config& config);

private:
    std::vector<VmPager*> round_;
    size_t pos_ = 0;
};

}  // namespace ringpager
