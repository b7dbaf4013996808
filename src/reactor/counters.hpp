// The counters a reactor writes (one thread each: relaxed atomics, no lock,
// no syscall) and anyone reads: per listener the VM-level figures
// (VmCounters, what metrics label by listener), per reactor its own
// (ReactorCounters). The engine's StatsTable owns them and sums them.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>

namespace ringpager {

inline void bump(std::atomic<uint64_t>& c, uint64_t n = 1) {
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

// A latency histogram with fixed bucket bounds (seconds), written by one
// thread. Buckets are not cumulative here; readers make them so.
class Histogram {
public:
    static constexpr std::array<double, 16> kBounds = {10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3,
                                                       5e-3,  10e-3, 25e-3, 50e-3,  100e-3, 250e-3, 1.0,  5.0};
    void observe(double seconds, uint64_t count = 1) {
        size_t i = 0;
        while (i < kBounds.size() && seconds > kBounds[i]) i++;
        bump(buckets_[i], count);
        bump(count_, count);
        sum_ns_.store(sum_ns_.load(std::memory_order_relaxed) + static_cast<uint64_t>(seconds * 1e9) * count,
                      std::memory_order_relaxed);
    }
    struct Snapshot {
        std::array<uint64_t, kBounds.size() + 1> buckets{};  // the last is +Inf
        uint64_t count = 0;
        double sum_seconds = 0;
    };
    void add_to(Snapshot& s) const {
        for (size_t i = 0; i < buckets_.size(); i++) s.buckets[i] += buckets_[i].load(std::memory_order_relaxed);
        s.count += count_.load(std::memory_order_relaxed);
        s.sum_seconds += static_cast<double>(sum_ns_.load(std::memory_order_relaxed)) / 1e9;
    }

private:
    std::array<std::atomic<uint64_t>, kBounds.size() + 1> buckets_{};
    std::atomic<uint64_t> count_{0};
    std::atomic<uint64_t> sum_ns_{0};
};

// What the VMs of one listener on one reactor did.
struct VmCounters {
    std::atomic<uint64_t> vms_active{0}, vms_served{0}, vms_failed{0}, vms_resident{0}, faults{0}, pages_copied{0},
        pages_prefetched{0}, pages_zeroed{0}, copy_ioctls{0}, bytes_read{0}, removed_pages{0}, eagain_retries{0},
        events_other{0}, stray_fds_closed{0}, page_cache_hits{0}, ranges_unmapped{0}, pages_poisoned{0};
    Histogram fault_service;     // from the fault message read to the install that wakes it
    Histogram time_to_resident;  // from adoption to every page present or removed
};

// The reactor's own figures.
struct ReactorCounters {
    std::atomic<uint64_t> vms_active{0}, buffers_busy{0}, busy_poll_hits{0}, busy_poll_misses{0};
    void add(std::atomic<uint64_t>& c, uint64_t n) { bump(c, n); }
};

}  // namespace ringpager
