// Presenting results: ratios to baseline, the text table, the JSON file.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include "model.hpp"
#include "options.hpp"

namespace ringpager::bench {

// What the run was, for the report header and the JSON file.
struct RunInfo {
    std::string mem_file;
    bool generated = false;
    uint64_t image_bytes = 0;
    double zero_fraction = 0;       // of the generated image; NaN when given
    double duplicate_fraction = 0;
    uint64_t zero_run_pages = 0;    // zero pages come in aligned runs of this many pages (generated only)
    std::string kernel;
    unsigned cpus = 0;
    uint64_t mem_available_bytes = 0;
    uint64_t memory_budget_bytes = 0;
    double total_seconds = 0;
    unsigned rounds = 1;
};

// Fills every result's ratios with figure / baseline's figure in the same
// group (workload, VMs, vCPUs, memory per VM). Groups without a verified baseline
// result keep NaN ratios.
void compute_ratios(std::vector<ScenarioResult>& results);

// One scenario's results from several rounds, each with its ratios computed
// against the baseline of its own round, made into one: every figure is the
// median over the rounds, every ratio the median of the per-round ratios
// (paired ratios cancel load that drifts between rounds; a ratio of medians
// would not). Counts (pages verified, mismatches) are summed, failures kept
// with their round. The per-round values stay in round_figures/round_ratios.
ScenarioResult combine_rounds(const std::vector<ScenarioResult>& rounds);

// Scenarios grouped for presentation, in first-seen order.
std::vector<std::vector<const ScenarioResult*>> group_results(const std::vector<ScenarioResult>& results);

void print_table(std::FILE* out, const std::vector<ScenarioResult>& results, const RunInfo& info);
bool write_json(const std::string& path, const std::vector<ScenarioResult>& results, const BenchOptions& options,
                const RunInfo& info, std::string& error);

std::string format_figure(double value, int precision);  // "n/a" for NaN
std::string format_ratio(double ratio);                  // "x0.42", "n/a"

}  // namespace ringpager::bench
