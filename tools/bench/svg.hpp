// A hand-written SVG plot of a run: grouped bars per scenario, one bar per
// handler, normalized to baseline on a log2 axis (below the line is better).
#pragma once

#include <string>
#include <vector>

#include "model.hpp"
#include "report.hpp"

namespace ringpager::bench {

// Two panels: time until the workload finished (for `none`: until fully
// resident) and p99 first-touch fault latency. Each group is normalized to
// baseline, or to baseline-eager where baseline has no value (baseline never
// becomes resident under `none`); the group label names the reference.
std::string render_svg(const std::vector<ScenarioResult>& results, const RunInfo& info);

bool write_svg(const std::string& path, const std::vector<ScenarioResult>& results, const RunInfo& info,
               std::string& error);

}  // namespace ringpager::bench
