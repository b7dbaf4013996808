// Counting without locks: a single writer thread bumps relaxed atomics that
// any thread may read (bump), and a latency histogram with fixed buckets
// built the same way (Histogram). Used on the fault path: no lock, no
// syscall, no locked instruction.
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
        // The upper bound of the bucket holding quantile q (0 when empty;
        // the last finite bound for the +Inf bucket).
        double quantile(double q) const {
            if (count == 0) return 0;
            const uint64_t rank = static_cast<uint64_t>(q * static_cast<double>(count - 1)) + 1;
            uint64_t seen = 0;
            for (size_t i = 0; i < kBounds.size(); i++)
                if ((seen += buckets[i]) >= rank) return kBounds[i];
            return kBounds.back();
        }
    };
    Snapshot snapshot() const {
        Snapshot s;
        add_to(s);
        return s;
    }
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

}  // namespace ringpager
