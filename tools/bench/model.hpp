// The vocabulary of a benchmark run: handlers, workloads, the figures every
// scenario produces, and a scenario's spec and result.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ringpager::bench {

// Each handler runs as its own process (see HandlerProcess).
enum class HandlerKind {
    lazy,            // ringpager serve --mode lazy
    prefetch,        // ringpager serve --mode prefetch (its pace while faults flow: auto, the default)
    baseline,        // rp-baseline: one UFFDIO_COPY per fault
    baseline_eager,  // rp-baseline --copy-all-on-first-fault
    replay,          // ringpager serve --mode prefetch --working-set (recorded first by a lazy --record-ws run)
    prefetch_pause,  // ringpager serve --mode prefetch --prefetch-during-faults pause
    prefetch_steps,  // ringpager serve --mode prefetch --prefetch-during-faults steps
};

enum class Workload {
    none,        // touch one page, then wait for full residency
    sequential,  // touch every page in address order (one run per vCPU)
    random25,    // touch a random 25% of pages
    hotset,      // every vCPU touches the same random 10% of pages, 4 rounds
    hotset_fixed,  // a fixed 10% of pages in a fixed pseudo-random order (the same seed every run and VM), once
};

const char* handler_name(HandlerKind kind);
// ringpager serve (every handler but the baselines).
inline bool is_ringpager(HandlerKind kind) { return kind != HandlerKind::baseline && kind != HandlerKind::baseline_eager; }
std::optional<HandlerKind> parse_handler(std::string_view text);
const char* workload_name(Workload workload);
std::optional<Workload> parse_workload(std::string_view text);

// Figures are stored in the unit their key names; NaN means "not applicable"
// (printed n/a, written as JSON null).
enum class Figure { first_fault, done, resident, p50, p99, p999, throughput, cpu, rss, count };
inline constexpr size_t kFigureCount = static_cast<size_t>(Figure::count);

struct FigureInfo {
    const char* key;        // JSON key, unit last
    const char* header;     // table column header
    int precision;          // digits after the point in the table
    bool higher_is_better;  // throughput; every other figure is a cost
};
const FigureInfo& figure_info(Figure figure);

using FigureValues = std::array<double, kFigureCount>;
inline constexpr double kNotApplicable = NAN;

struct ScenarioSpec {
    HandlerKind handler = HandlerKind::lazy;
    Workload workload = Workload::sequential;
    unsigned vms = 1;
    unsigned vcpus = 1;
    uint64_t vm_bytes = 0;  // guest memory per VM (a prefix of the image)

    // The comparison group: every handler measured under the same conditions.
    std::string group_key() const;
    std::string name() const;  // "prefetch-sequential-10vm-2vcpu"
};

struct ScenarioResult {
    ScenarioSpec spec;
    FigureValues figures{};
    FigureValues ratios{};  // figure / baseline's figure in the same group; NaN when either is n/a
    // With several rounds: each round's figures and ratios; figures and
    // ratios above are then their medians (see combine_rounds).
    std::vector<FigureValues> round_figures;
    std::vector<FigureValues> round_ratios;

    double first_fault_mean_ms = 0;
    uint64_t latency_samples = 0;
    uint64_t resident_bytes = 0;  // resident guest memory (all VMs) at the end of the measured window
    unsigned vms_resident = 0;    // VMs that became fully resident
    uint64_t pages_verified = 0;
    uint64_t mismatches = 0;
    std::string verify_detail;    // the first mismatching VM's report
    std::string handler_exit;     // "exit 0", "signal 9", ...
    double wall_seconds = 0;      // the whole scenario, setup and verification included
    uint64_t store_bytes_fetched = 0;   // s3-* sources: what the chunk cache took from the store while measured
    std::vector<std::string> failures;  // anything that makes the run fail (exit 1)

    double& figure(Figure f) { return figures[static_cast<size_t>(f)]; }
    double figure(Figure f) const { return figures[static_cast<size_t>(f)]; }
    bool ok() const { return failures.empty() && mismatches == 0; }
};

}  // namespace ringpager::bench
