// Names, parsing and figure metadata.
#include "model.hpp"

namespace ringpager::bench {
namespace {

constexpr std::array<FigureInfo, kFigureCount> kFigures = {{
    {"first_fault_ms", "1st-fault ms", 2, false},
    {"workload_done_s", "done s", 3, false},
    {"resident_s", "resident s", 3, false},
    {"latency_p50_us", "p50 us", 1, false},
    {"latency_p99_us", "p99 us", 1, false},
    {"latency_p999_us", "p999 us", 1, false},
    {"throughput_gib_s", "GiB/s", 2, true},
    {"handler_cpu_s", "cpu s", 2, false},
    {"handler_peak_rss_mib", "rss MiB", 1, false},
}};

}  // namespace

const char* handler_name(HandlerKind kind) {
    switch (kind) {
        case HandlerKind::lazy: return "lazy";
        case HandlerKind::prefetch: return "prefetch";
        case HandlerKind::baseline: return "baseline";
        case HandlerKind::baseline_eager: return "baseline-eager";
        case HandlerKind::replay: return "replay";
        case HandlerKind::prefetch_pause: return "prefetch-pause";
        case HandlerKind::prefetch_steps: return "prefetch-steps";
    }
    return "?";
}

std::optional<HandlerKind> parse_handler(std::string_view text) {
    for (HandlerKind k : {HandlerKind::lazy, HandlerKind::prefetch, HandlerKind::baseline, HandlerKind::baseline_eager,
                          HandlerKind::replay, HandlerKind::prefetch_pause, HandlerKind::prefetch_steps}) {
        if (text == handler_name(k)) return k;
    }
    return std::nullopt;
}

const char* workload_name(Workload workload) {
    switch (workload) {
        case Workload::none: return "none";
        case Workload::sequential: return "sequential";
        case Workload::random25: return "random25";
        case Workload::hotset: return "hotset";
        case Workload::hotset_fixed: return "hotset-fixed";
    }
    return "?";
}

std::optional<Workload> parse_workload(std::string_view text) {
    for (Workload w : {Workload::none, Workload::sequential, Workload::random25, Workload::hotset, Workload::hotset_fixed}) {
        if (text == workload_name(w)) return w;
    }
    return std::nullopt;
}

const FigureInfo& figure_info(Figure figure) { return kFigures[static_cast<size_t>(figure)]; }

std::string ScenarioSpec::group_key() const {
    return std::string(workload_name(workload)) + "/" + std::to_string(vms) + "/" + std::to_string(vcpus) + "/" +
           std::to_string(vm_bytes);
}

std::string ScenarioSpec::name() const {
    return std::string(handler_name(handler)) + "-" + workload_name(workload) + "-" + std::to_string(vms) + "vm-" +
           std::to_string(vcpus) + "vcpu";
}

}  // namespace ringpager::bench
