// Adaptive busy polling before a reactor sleeps.
//
// During a restore a vCPU faults again a few microseconds after its last
// fault was served. Sleeping in io_uring_enter and being woken costs far more
// than that: the faulting thread has to wake us (an IPI when we sleep on
// another core), and an idle core has to come out of its idle state. So when
// faults are flowing, the reactor first polls its completion queue for a
// short window and only then sleeps.
//
// The window adapts like the kernel's cpuidle-haltpoll governor: a sleep that
// ended soon after the window (a longer poll would have caught the
// completion) doubles it, up to the configured maximum; a sleep much longer
// than the maximum (the VMs went quiet) halves it, down to zero. Polling
// that finds a completion keeps the window as it is.
#pragma once

#include <algorithm>
#include <chrono>

namespace ringpager {

class BusyPollWindow {
public:
    using ns = std::chrono::nanoseconds;

    explicit BusyPollWindow(ns max) : max_(max), window_(max) {}

    // How long to poll before sleeping; zero: sleep at once.
    ns window() const { return window_; }
    ns max() const { return max_; }

    // The reactor polled for window() without a completion, slept, and was
    // woken after `slept`.
    void woke_after(ns slept) {
        if (max_.count() == 0) return;
        if (window_ + slept <= max_) {
            window_ = window_.count() == 0 ? std::max(min_grow(), ns(1)) : std::min(max_, window_ * 2);
        } else if (slept > max_) {
            window_ /= 2;
            if (window_ < min_grow()) window_ = ns(0);
        }
    }

private:
    // Below a quarter of the maximum a poll rarely pays for itself.
    ns min_grow() const { return max_ / 4; }

    ns max_;
    ns window_;
};

}  // namespace ringpager
