// What the real-guest harness's parts share: its failure type, its clock, running a
// command to completion, and small file helpers.
#pragma once

#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace ringpager::realguest {

using Clock = std::chrono::steady_clock;

// A step of the harness that could not be done, or a check that failed: one message that
// names what was expected and what happened instead. The harness is not on any hot path,
// so it reports with exceptions and every caller turns them into a failed test or report.
struct Failure : std::runtime_error {
    using std::runtime_error::runtime_error;
};

inline double ms_between(Clock::time_point from, Clock::time_point to) {
    return std::chrono::duration<double, std::milli>(to - from).count();
}

// CLOCK_MONOTONIC in ns: the clock the shim stamps its lines with, shared by all processes.
uint64_t monotonic_ns();
// The steady_clock time of a CLOCK_MONOTONIC stamp from another process (same clock on Linux).
Clock::time_point from_monotonic_ns(uint64_t ns);

struct CommandResult {
    int status = -1;     // raw wait status
    std::string output;  // stdout and stderr together
    bool ok() const;
};

// Runs argv[0] (searched in PATH) with the given arguments in `cwd` (empty: the current
// directory), stdin from /dev/null, and waits for it. Throws only if it cannot be started.
CommandResult run_command(const std::vector<std::string>& argv, const std::string& cwd = "");

std::string read_file(const std::string& path);
void write_file_atomic(const std::string& path, const std::string& bytes);
// The last `max_bytes` of `text`, starting at a line boundary.
std::string tail_of(const std::string& text, size_t max_bytes = 1500);
// The program's own executable's directory (for finding files built beside it).
std::string self_dir();

}  // namespace ringpager::realguest
