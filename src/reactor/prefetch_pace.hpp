// PrefetchPace: whether a reactor's prefetcher pauses while faults flow,
// for PrefetchDuringFaults::automatic. Prefetch in steps between faults
// costs the faults' tail only when the host's CPUs are contended: a touch
// it answers does not block, so it keeps vCPUs runnable, and a faulting
// vCPU, once woken, waits for a core behind them (docs/benchmarks.md). The
// signal is the kernel's CPU pressure (/proc/pressure/cpu, "some": the
// share of time at least one runnable task waited for a CPU), taken over
// windows while faults flow, with hysteresis:
// - paused, the reactor serves faults only, so the window shows the host
//   without prefetch: below `resume_below`, steps begin;
// - in steps, the window shows the host with them: above `pause_above`,
//   the pause begins.
// A reactor starts paused, so its first window is a measurement without
// prefetch. Windows run only while faults flow; quiet, the prefetcher
// takes full batches whatever the state.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "ringpager/file_desc.hpp"

namespace ringpager {

// The cumulative "some" stall time, in microseconds, of a PSI file
// (/proc/pressure/cpu): its first line, "some avg10=... total=N".
class CpuPressure {
public:
    // Opens `path`; a missing or unreadable file (a kernel without PSI) is
    // reported in `error`, and read() then gives nothing.
    explicit CpuPressure(const std::string& path, std::string& error);
    std::optional<uint64_t> read() const;

    // Parses "some ... total=N\n..." (exposed for tests).
    static std::optional<uint64_t> parse_some_total(std::string_view text);

private:
    FileDesc fd_;
};

class PrefetchPace {
public:
    using Clock = std::chrono::steady_clock;
    struct Config {
        std::chrono::milliseconds window{50};
        double pause_above = 0.10;   // share of the window stalled, measured in steps
        double resume_below = 0.05;  // share of the window stalled, measured paused
    };
    // `stall_total_us` reads the cumulative stall time (CpuPressure::read);
    // when it gives nothing, the pace is steps.
    PrefetchPace(Config config, std::function<std::optional<uint64_t>()> stall_total_us);

    // Whether the prefetcher pauses this turn; `faults_recent` as the
    // reactor sees it (a fault within its quiet period).
    bool pause(Clock::time_point now, bool faults_recent);
    // When the current window ends (the reactor wakes for it while paused).
    Clock::time_point window_end() const { return window_start_ + config_.window; }
    uint64_t switches() const { return switches_; }
    double last_share() const { return last_share_; }

private:
    void start_window(Clock::time_point now);

    Config config_;
    std::function<std::optional<uint64_t>()> stall_total_us_;
    bool paused_ = true;
    bool in_window_ = false;
    Clock::time_point window_start_{};
    uint64_t window_stall_start_ = 0;
    uint64_t switches_ = 0;
    double last_share_ = 0;
};

}  // namespace ringpager
