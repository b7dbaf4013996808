// Touch workloads: which guest pages the simulated vCPUs access, in what
// order, and the fault latencies they observe.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace ringpager::sim {

enum class Pattern {
    sequential,  // the first `fraction` of pages in address order, split into one contiguous run per vCPU
    random,      // a seeded random `fraction` of pages in random order, split between vCPUs
    hot_set,     // a seeded random 10% of pages that every vCPU touches repeatedly (concurrent faults on one page)
    none,        // touch nothing
};

std::optional<Pattern> parse_pattern(std::string_view text);  // "sequential", "random", "hot-set"/"hot_set", "none"
const char* pattern_name(Pattern pattern);

struct TouchOptions {
    bool write = false;                // access with a write (a value-preserving atomic add of 0) instead of a read
    unsigned hot_set_rounds = 4;       // hot_set: passes each vCPU makes over the hot set
    double kill_at_fraction = 0.0;     // > 0: SIGKILL the whole process once this share of the plan is touched
};

struct LatencySummary {
    uint64_t count = 0;
    uint64_t p50_ns = 0;
    uint64_t p99_ns = 0;
    uint64_t p999_ns = 0;
    uint64_t max_ns = 0;
    double mean_ns = 0;
};

// Percentiles by nearest rank over `latencies_ns` (sorted in place).
LatencySummary summarize_latencies(std::vector<uint64_t>& latencies_ns);

struct TouchReport {
    uint64_t pages_touched = 0;          // pages in the plan (distinct for every Pattern)
    uint64_t touches = 0;                // accesses made, all vCPUs and rounds
    uint64_t total_ns = 0;               // from releasing the vCPUs to the last one finishing
    std::vector<uint64_t> latencies_ns;  // each vCPU's first access of each of its pages, sorted
    LatencySummary latency;
};

// The page indices (into the guest's linear page numbering) a pattern touches.
// For hot_set these are the hot pages, which every vCPU visits.
std::vector<uint64_t> plan_pages(Pattern pattern, uint64_t page_count, double fraction, uint64_t seed);

}  // namespace ringpager::sim
