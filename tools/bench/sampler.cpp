// The residency sampling thread.
#include "sampler.hpp"

#include <time.h>

#include <algorithm>

namespace ringpager::bench {

uint64_t monotonic_ns() {
    timespec ts{};
    // CLOCK_MONOTONIC with a valid pointer cannot fail.
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

ResidencySampler::ResidencySampler(std::vector<RegionList> regions_per_vm, std::chrono::microseconds interval,
                                   std::chrono::milliseconds stall)
    : resident_at_ns_(regions_per_vm.size(), 0), interval_(interval), stall_(stall) {
    for (const RegionList& regions : regions_per_vm) cursors_.emplace_back(regions);
}

void ResidencySampler::start(uint64_t t0_ns) {
    t0_ns_ = t0_ns;
    thread_ = std::thread([this] { run(); });
}

void ResidencySampler::workload_done() { workload_done_ns_.store(monotonic_ns(), std::memory_order_release); }

void ResidencySampler::join() {
    if (thread_.joinable()) thread_.join();
}

unsigned ResidencySampler::vms_resident() const {
    return static_cast<unsigned>(std::count_if(resident_at_ns_.begin(), resident_at_ns_.end(),
                                               [](uint64_t t) { return t != 0; }));
}

bool ResidencySampler::sample(uint64_t now_ns) {
    bool all = true;
    for (size_t i = 0; i < cursors_.size(); ++i) {
        if (resident_at_ns_[i] != 0) continue;
        if (cursors_[i].advance()) {
            resident_at_ns_[i] = std::max<uint64_t>(now_ns - t0_ns_, 1);
        } else {
            all = false;
        }
    }
    ++samples_;
    return all;
}

void ResidencySampler::run() {
    const uint64_t interval_ns = static_cast<uint64_t>(std::chrono::nanoseconds(interval_).count());
    const uint64_t stall_ns = static_cast<uint64_t>(std::chrono::nanoseconds(stall_).count());
    uint64_t next_ns = t0_ns_;
    uint64_t last_progress = 0;
    uint64_t last_change_ns = t0_ns_;
    for (;;) {
        const uint64_t now = monotonic_ns();
        if (sample(now)) return;
        uint64_t progress = 0;
        for (const ResidencyCursor& c : cursors_) progress += c.prefix_pages();
        if (progress != last_progress) {
            last_progress = progress;
            last_change_ns = now;
        }
        const uint64_t done_ns = workload_done_ns_.load(std::memory_order_acquire);
        if (done_ns != 0 && now > std::max(done_ns, last_change_ns) + stall_ns) return;
        // A fixed schedule, not a fixed sleep: a slow sample does not stretch
        // the interval, and a missed tick is skipped rather than caught up.
        next_ns = std::max(next_ns + interval_ns, monotonic_ns());
        timespec until{static_cast<time_t>(next_ns / 1'000'000'000ULL), static_cast<long>(next_ns % 1'000'000'000ULL)};
        while (::clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, nullptr) == EINTR) {
        }
    }
}

}  // namespace ringpager::bench
