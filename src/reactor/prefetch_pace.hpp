// PrefetchPace: whether a reactor's prefetcher pauses while faults flow,
// for PrefetchDuringFaults::automatic. Prefetch in steps between faults
// costs the faults' tail only when the VMs' threads wait for a CPU: a
// touch it answers does not block, so it keeps vCPUs runnable, and a
// faulting vCPU, once woken, waits for a core behind them (docs/
// benchmarks.md). Two signals say so, taken over windows while faults
// flow, each with its own bounds:
// - the VM threads' run delay (ThreadRunDelay): the time the reactor's VM
//   processes' threads spent waiting on a run queue, per unit of time (so
//   0.2 is one thread waiting a fifth of the time, or two a tenth);
// - where those cannot be read, the host's CPU pressure (CpuPressure,
//   /proc/pressure/cpu "some": the share of time at least one runnable
//   task waited), which also counts other processes and the restore's own
//   start-up.
// With hysteresis:
// - paused, the reactor serves faults only, so the window shows the VMs
//   without prefetch: below `resume_below`, steps begin;
// - in steps, the window shows them with it: above `pause_above`, the
//   pause begins.
// A window whose signal changed between its start and end decides nothing.
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
    struct Bounds {
        double pause_above;   // stalled per unit of time, measured in steps
        double resume_below;  // stalled per unit of time, measured paused
    };
    enum class Signal { vm_run_delay, host_pressure };
    struct Config {
        std::chrono::milliseconds window{50};
        // The first window of a burst and the one after a switch: short, so
        // that a restore over in a few windows is not spent measuring, and a
        // wrong turn is soon put right (0: `window`).
        std::chrono::milliseconds first_window{0};
        Bounds host_pressure{0.10, 0.05};
        Bounds vm_run_delay{0.15, 0.10};
    };
    struct Stall {
        uint64_t total_us = 0;  // cumulative
        Signal signal = Signal::host_pressure;
    };
    // `stall` reads the cumulative stall time of whichever signal is
    // available; when it gives nothing, the pace is steps.
    PrefetchPace(Config config, std::function<std::optional<Stall>()> stall);

    // Whether the prefetcher pauses this turn; `faults_recent` as the
    // reactor sees it (a fault within its quiet period).
    bool pause(Clock::time_point now, bool faults_recent);
    // When the current window ends (the reactor wakes for it while paused).
    Clock::time_point window_end() const { return window_start_ + window_; }
    uint64_t switches() const { return switches_; }
    double last_share() const { return last_share_; }
    // The signal the last reading came from (none: no reading yet, or it failed).
    std::optional<Signal> signal() const { return signal_; }

private:
    std::optional<Stall> read();
    void start_window(Clock::time_point now);
    Clock::duration short_window() const {
        return config_.first_window.count() > 0 ? config_.first_window : config_.window;
    }

    Config config_;
    std::function<std::optional<Stall>()> stall_;
    bool paused_ = true;
    bool in_window_ = false;
    Clock::time_point window_start_{};
    Clock::duration window_{};
    Stall window_stall_start_{};
    std::optional<Signal> signal_;
    uint64_t switches_ = 0;
    double last_share_ = 0;
};

}  // namespace ringpager
