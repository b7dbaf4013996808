// One scenario: start a handler process, restore `vms` simulated guests
// through it at once, run the workload, measure, verify every byte, stop it.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "guestsim/expected_image.hpp"
#include "model.hpp"
#include "snapshot_source.hpp"

namespace ringpager::bench {

struct ScenarioContext {
    std::string mem_file;        // the snapshot image every handler serves
    const sim::ExpectedImage* expected = nullptr;  // the same file, for verification
    std::string work_dir;        // sockets and handler logs go here
    std::string ringpager_path;  // binary for lazy / prefetch
    std::string baseline_path;   // binary for baseline / baseline-eager
    unsigned reactors = 0;       // ringpager --reactors; 0: its default
    uint64_t seed = 1;
    std::string log_suffix;      // "" or "-round2": keeps every round's handler log
    std::chrono::microseconds sample_interval{1000};
    std::chrono::milliseconds stall{500};
    std::chrono::seconds timeout{300};  // per scenario; a stuck handler aborts the run
    bool cold_cache = false;     // drop mem_file (and a layered source's files) from the page cache before each scenario
    const PreparedSource* source = nullptr;   // what ringpager serves; null: mem_file
};

// The handler's command line for a scenario (`working_set`: what replay replays).
std::vector<std::string> handler_argv(const ScenarioContext& context, HandlerKind kind, const std::string& socket,
                                      const std::string& working_set);
// Where the replay handler keeps the working set of a spec's workload and size.
std::string working_set_path(const ScenarioContext& context, const ScenarioSpec& spec);

// Runs one scenario. Failures (handler would not start, a VM could not
// connect, mismatching bytes, unclean handler exit) are recorded in the
// result. A handler that dies or stalls while guests wait on it cannot be
// recovered from (the guests' faults would block forever): that aborts the
// process with exit status 1 after saying why.
ScenarioResult run_scenario(const ScenarioSpec& spec, const ScenarioContext& context);

}  // namespace ringpager::bench
