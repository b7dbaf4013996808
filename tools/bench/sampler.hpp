// ResidencySampler: a thread that samples every guest's residency at a fixed
// interval and records when each one became fully resident.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#include "residency.hpp"

namespace ringpager::bench {

class ResidencySampler {
public:
    // `regions_per_vm` must stay mapped until join() returns.
    ResidencySampler(std::vector<RegionList> regions_per_vm, std::chrono::microseconds interval,
                     std::chrono::milliseconds stall);
    ~ResidencySampler() { join(); }
    ResidencySampler(const ResidencySampler&) = delete;
    ResidencySampler& operator=(const ResidencySampler&) = delete;

    // Starts sampling; times are measured from `t0_ns` (CLOCK_MONOTONIC).
    void start(uint64_t t0_ns);
    // The workload has finished: from now on the sampler gives up once no VM
    // has made progress for `stall` (a lazy handler never gets further).
    void workload_done();
    // Returns when every VM is resident or the sampler gave up.
    void join();

    // After join(): when VM i became fully resident (ns after t0), or 0 if never.
    uint64_t resident_at_ns(size_t vm) const { return resident_at_ns_[vm]; }
    unsigned vms_resident() const;
    uint64_t samples() const { return samples_; }

private:
    void run();
    bool sample(uint64_t now_ns);  // true when every VM is resident

    std::vector<ResidencyCursor> cursors_;
    std::vector<uint64_t> resident_at_ns_;
    std::chrono::microseconds interval_;
    std::chrono::milliseconds stall_;
    uint64_t t0_ns_ = 0;
    uint64_t samples_ = 0;
    std::atomic<uint64_t> workload_done_ns_{0};
    std::thread thread_;
};

uint64_t monotonic_ns();

}  // namespace ringpager::bench
