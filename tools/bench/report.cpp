// The text table and the JSON file.
#include "report.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

namespace ringpager::bench {
namespace {

constexpr int kHandlerWidth = 16;
constexpr int kFigureWidth = 12;

nlohmann::json number_or_null(double value) {
    if (std::isnan(value) || std::isinf(value)) return nullptr;
    return value;
}

std::string group_title(const ScenarioSpec& spec) {
    char title[160];
    std::snprintf(title, sizeof title, "== %s, %u VM%s x %u vCPU%s, %llu MiB per VM ==", workload_name(spec.workload),
                  spec.vms, spec.vms == 1 ? "" : "s", spec.vcpus, spec.vcpus == 1 ? "" : "s",
                  static_cast<unsigned long long>(spec.vm_bytes >> 20));
    return title;
}

std::string verify_cell(const ScenarioResult& r) {
    if (!r.failures.empty()) return "FAILED";
    if (r.mismatches != 0) return "MISMATCH " + std::to_string(r.mismatches);
    return "ok " + std::to_string(r.pages_verified) + "p";
}

void print_group(std::FILE* out, const std::vector<const ScenarioResult*>& group) {
    std::fprintf(out, "\n%s\n%-*s", group_title(group.front()->spec).c_str(), kHandlerWidth, "handler");
    for (size_t f = 0; f < kFigureCount; ++f) std::fprintf(out, "%*s", kFigureWidth, figure_info(Figure(f)).header);
    std::fprintf(out, "  verify\n");
    for (const ScenarioResult* r : group) {
        std::fprintf(out, "%-*s", kHandlerWidth, handler_name(r->spec.handler));
        for (size_t f = 0; f < kFigureCount; ++f) {
            std::fprintf(out, "%*s", kFigureWidth, format_figure(r->figures[f], figure_info(Figure(f)).precision).c_str());
        }
        std::fprintf(out, "  %s\n", verify_cell(*r).c_str());
        if (r->spec.handler == HandlerKind::baseline) continue;
        std::fprintf(out, "%-*s", kHandlerWidth, "  vs baseline");
        for (size_t f = 0; f < kFigureCount; ++f) std::fprintf(out, "%*s", kFigureWidth, format_ratio(r->ratios[f]).c_str());
        std::fprintf(out, "\n");
    }
}

void print_failures(std::FILE* out, const std::vector<ScenarioResult>& results) {
    size_t bad = 0;
    for (const ScenarioResult& r : results) bad += !r.ok();
    if (bad == 0) {
        std::fprintf(out, "\nAll %zu scenarios: every VM's memory verified byte for byte, every handler exited cleanly.\n",
                     results.size());
        return;
    }
    std::fprintf(out, "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n");
    std::fprintf(out, "!!! rp-bench: %zu of %zu scenarios FAILED\n", bad, results.size());
    for (const ScenarioResult& r : results) {
        if (r.ok()) continue;
        std::fprintf(out, "!!! %s:\n", r.spec.name().c_str());
        if (r.mismatches != 0) {
            std::fprintf(out, "!!!   %llu MISMATCHING PAGES: %s\n", static_cast<unsigned long long>(r.mismatches),
                         r.verify_detail.c_str());
        }
        for (const std::string& f : r.failures) std::fprintf(out, "!!!   %s\n", f.c_str());
    }
    std::fprintf(out, "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n");
}

// {"done_s": [round 1, round 2, ...], ...}; empty for a single round.
nlohmann::json values_by_round(const std::vector<FigureValues>& rounds) {
    nlohmann::json out = nlohmann::json::object();
    if (rounds.size() < 2) return out;
    for (size_t f = 0; f < kFigureCount; ++f) {
        nlohmann::json values = nlohmann::json::array();
        for (const FigureValues& v : rounds) values.push_back(number_or_null(v[f]));
        out[figure_info(Figure(f)).key] = values;
    }
    return out;
}

// The median of the values that are not NaN; NaN when there are none.
double median_of(std::vector<double> values) {
    std::erase_if(values, [](double v) { return std::isnan(v); });
    if (values.empty()) return kNotApplicable;
    std::sort(values.begin(), values.end());
    const size_t mid = values.size() / 2;
    return values.size() % 2 == 1 ? values[mid] : (values[mid - 1] + values[mid]) / 2;
}

nlohmann::json result_json(const ScenarioResult& r) {
    nlohmann::json figures, ratios;
    for (size_t f = 0; f < kFigureCount; ++f) {
        figures[figure_info(Figure(f)).key] = number_or_null(r.figures[f]);
        ratios[figure_info(Figure(f)).key] = number_or_null(r.ratios[f]);
    }
    return {{"handler", handler_name(r.spec.handler)},
            {"workload", workload_name(r.spec.workload)},
            {"vms", r.spec.vms},
            {"vcpus", r.spec.vcpus},
            {"vm_memory_bytes", r.spec.vm_bytes},
            {"figures", figures},
            {"ratio_vs_baseline", ratios},
            {"first_fault_mean_ms", r.first_fault_mean_ms},
            {"latency_samples", r.latency_samples},
            {"resident_bytes", r.resident_bytes},
            {"vms_resident", r.vms_resident},
            {"pages_verified", r.pages_verified},
            {"mismatches", r.mismatches},
            {"verify_detail", r.verify_detail},
            {"handler_exit", r.handler_exit},
            {"wall_seconds", r.wall_seconds},
            {"store_bytes_fetched", r.store_bytes_fetched},
            {"failures", r.failures},
            {"rounds", std::max<size_t>(1, r.round_figures.size())},
            {"figures_by_round", values_by_round(r.round_figures)},
            {"ratio_vs_baseline_by_round", values_by_round(r.round_ratios)},
            {"ok", r.ok()}};
}

}  // namespace

std::string format_figure(double value, int precision) {
    if (std::isnan(value)) return "n/a";
    char text[32];
    // Small values keep two significant digits instead of printing as 0.00.
    if (value != 0 && std::fabs(value) < 0.1) std::snprintf(text, sizeof text, "%.2g", value);
    else std::snprintf(text, sizeof text, "%.*f", precision, value);
    return text;
}

std::string format_ratio(double ratio) {
    if (std::isnan(ratio) || std::isinf(ratio)) return "n/a";
    char text[32];
    std::snprintf(text, sizeof text, ratio >= 100 ? "x%.0f" : ratio >= 10 ? "x%.1f" : ratio >= 0.1 ? "x%.2f" : "x%.2g",
                  ratio);
    return text;
}

void compute_ratios(std::vector<ScenarioResult>& results) {
    std::map<std::string, const ScenarioResult*> baselines;
    for (const ScenarioResult& r : results) {
        if (r.spec.handler == HandlerKind::baseline && r.ok()) baselines[r.spec.group_key()] = &r;
    }
    for (ScenarioResult& r : results) {
        auto it = baselines.find(r.spec.group_key());
        if (it == baselines.end()) continue;
        for (size_t f = 0; f < kFigureCount; ++f) {
            const double base = it->second->figures[f];
            r.ratios[f] = std::isnan(base) || std::isnan(r.figures[f]) || base == 0 ? kNotApplicable : r.figures[f] / base;
        }
    }
}

ScenarioResult combine_rounds(const std::vector<ScenarioResult>& rounds) {
    if (rounds.size() == 1) return rounds.front();
    ScenarioResult out;
    out.spec = rounds.front().spec;
    std::vector<double> first_fault, fetched;
    for (size_t i = 0; i < rounds.size(); ++i) {
        const ScenarioResult& r = rounds[i];
        fetched.push_back(static_cast<double>(r.store_bytes_fetched));
        out.round_figures.push_back(r.figures);
        out.round_ratios.push_back(r.ratios);
        first_fault.push_back(r.first_fault_mean_ms);
        out.latency_samples += r.latency_samples;
        out.pages_verified += r.pages_verified;
        out.mismatches += r.mismatches;
        out.wall_seconds += r.wall_seconds;
        out.resident_bytes = i == 0 ? r.resident_bytes : std::min(out.resident_bytes, r.resident_bytes);
        out.vms_resident = i == 0 ? r.vms_resident : std::min(out.vms_resident, r.vms_resident);
        if (out.verify_detail.empty() && !r.verify_detail.empty())
            out.verify_detail = "round " + std::to_string(i + 1) + ": " + r.verify_detail;
        if (out.handler_exit.empty() || out.handler_exit == "exit 0") out.handler_exit = r.handler_exit;  // first bad exit
        for (const std::string& f : r.failures) out.failures.push_back("round " + std::to_string(i + 1) + ": " + f);
    }
    for (size_t f = 0; f < kFigureCount; ++f) {
        std::vector<double> figures, ratios;
        for (const ScenarioResult& r : rounds) {
            figures.push_back(r.figures[f]);
            ratios.push_back(r.ratios[f]);
        }
        out.figures[f] = median_of(figures);
        out.ratios[f] = median_of(ratios);
    }
    out.first_fault_mean_ms = median_of(first_fault);
    out.store_bytes_fetched = static_cast<uint64_t>(median_of(fetched));
    return out;
}

std::vector<std::vector<const ScenarioResult*>> group_results(const std::vector<ScenarioResult>& results) {
    std::vector<std::vector<const ScenarioResult*>> groups;
    std::map<std::string, size_t> index;
    for (const ScenarioResult& r : results) {
        auto [it, inserted] = index.emplace(r.spec.group_key(), groups.size());
        if (inserted) groups.emplace_back();
        groups[it->second].push_back(&r);
    }
    return groups;
}

void print_table(std::FILE* out, const std::vector<ScenarioResult>& results, const RunInfo& info) {
    std::fprintf(out, "\nrp-bench: %s (%llu MiB%s), kernel %s, %u CPUs, %.1f s\n", info.mem_file.c_str(),
                 static_cast<unsigned long long>(info.image_bytes >> 20),
                 info.generated ? (", generated: " + format_figure(info.zero_fraction * 100, 0) + "% zero pages in runs of " +
                                   std::to_string(info.zero_run_pages) + ", " +
                                   format_figure(info.duplicate_fraction * 100, 0) + "% duplicates").c_str()
                                : "",
                 info.kernel.c_str(), info.cpus, info.total_seconds);
    std::fprintf(out,
                 "times from the moment all VMs connect; 1st-fault and done: slowest VM; latency: first touch of "
                 "each page, all VMs; cpu/rss: handler process. Ratios: figure / baseline's (GiB/s: higher is "
                 "better, all others: lower is better).\n");
    if (info.rounds > 1) {
        std::fprintf(out,
                     "%u rounds, handler order alternating: each figure is the median over the rounds, each ratio the "
                     "median of the per-round ratios to the baseline of the same round.\n",
                     info.rounds);
    }
    for (const auto& group : group_results(results)) print_group(out, group);
    print_failures(out, results);
}

bool write_json(const std::string& path, const std::vector<ScenarioResult>& results, const BenchOptions& options,
                const RunInfo& info, std::string& error) {
    nlohmann::json doc;
    doc["tool"] = "rp-bench";
    doc["preset"] = options.preset;
    doc["image"] = {{"path", info.mem_file},
                    {"bytes", info.image_bytes},
                    {"generated", info.generated},
                    {"zero_fraction", number_or_null(info.zero_fraction)},
                    {"duplicate_fraction", number_or_null(info.duplicate_fraction)},
                    {"zero_run_pages", info.zero_run_pages}};
    doc["machine"] = {{"kernel", info.kernel}, {"cpus", info.cpus}, {"mem_available_bytes", info.mem_available_bytes}};
    doc["settings"] = {{"memory_budget_bytes", info.memory_budget_bytes},
                       {"sample_interval_us", options.sample_interval.count()},
                       {"stall_ms", options.stall.count()},
                       {"reactors", options.reactors},
                       {"seed", options.seed},
                       {"rounds", info.rounds}};
    doc["total_seconds"] = info.total_seconds;
    doc["results"] = nlohmann::json::array();
    bool ok = true;
    for (const ScenarioResult& r : results) {
        doc["results"].push_back(result_json(r));
        ok = ok && r.ok();
    }
    doc["ok"] = ok;
    std::ofstream out(path);
    out << doc.dump(2) << "\n";
    if (!out) {
        error = "cannot write " + path;
        return false;
    }
    return true;
}

}  // namespace ringpager::bench
