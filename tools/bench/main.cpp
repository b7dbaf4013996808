// rp-bench: restores one snapshot several ways in one run (ringpager lazy and
// prefetch, the baseline handler, the eager baseline), each handler in its
// own process, guests simulated in-process; prints a table, writes JSON and
// an SVG. Exit status: 0 all verified, 1 any failure or mismatch, 2 usage.
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "guestsim/expected_image.hpp"
#include "guestsim/image.hpp"
#include "options.hpp"
#include "report.hpp"
#include "sampler.hpp"
#include "scenario.hpp"
#include "svg.hpp"
#include "uffd/uffd.hpp"

namespace fs = std::filesystem;
using namespace ringpager;
using namespace ringpager::bench;

namespace {

constexpr uint64_t kMiB = 1 << 20;

bool needs_ringpager(const BenchOptions& o) {
    return std::any_of(o.handlers.begin(), o.handlers.end(), is_ringpager);
}

bool needs_baseline(const BenchOptions& o) {
    return std::any_of(o.handlers.begin(), o.handlers.end(), [](HandlerKind k) {
        return k == HandlerKind::baseline || k == HandlerKind::baseline_eager;
    });
}

// Finds a handler binary: the flag, else the build tree rp-bench was built
// in (build/tools/bench/rp-bench -> build/<relative>), else rp-bench's own
// directory (an install prefix's bin/).
bool locate(std::string& path, const std::string& relative, const char* flag) {
    if (path.empty()) {
        const fs::path self = fs::read_symlink("/proc/self/exe").parent_path();
        for (const fs::path& candidate : {self / ".." / ".." / relative, self / fs::path(relative).filename()}) {
            if (::access(candidate.c_str(), X_OK) == 0) {
                path = fs::weakly_canonical(candidate).string();
                break;
            }
        }
    }
    if (path.empty() || ::access(path.c_str(), X_OK) != 0) {
        std::fprintf(stderr, "rp-bench: cannot find %s: build it (ninja %s) or give %s PATH\n",
                     path.empty() ? relative.c_str() : path.c_str(), relative.c_str(), flag);
        return false;
    }
    return true;
}

uint64_t mem_available_bytes() {
    std::ifstream in("/proc/meminfo");
    std::string key;
    uint64_t kib = 0;
    std::string unit;
    while (in >> key >> kib >> unit) {
        if (key == "MemAvailable:") return kib * 1024;
    }
    return 0;
}

// Each VM gets the image, or its share of the memory budget when VMs x image
// would not fit (rounded down to 16 MiB, or 2 MiB for small shares).
uint64_t vm_bytes_for(uint64_t image_bytes, uint64_t budget_bytes, unsigned vms) {
    uint64_t share = budget_bytes / vms;
    share -= share % (share >= 64 * kMiB ? 16 * kMiB : 2 * kMiB);
    return std::max<uint64_t>(2 * kMiB, std::min(image_bytes - image_bytes % 4096, share));
}

std::vector<ScenarioSpec> build_matrix(const BenchOptions& o, uint64_t image_bytes, uint64_t budget_bytes) {
    std::vector<ScenarioSpec> specs;
    for (Workload workload : o.workloads) {
        for (unsigned vms : o.vms) {
            // `none` touches one page: the vCPU count cannot matter, so it runs once.
            const std::vector<unsigned> vcpus_list =
                workload == Workload::none ? std::vector<unsigned>{o.vcpus.front()} : o.vcpus;
            for (unsigned vcpus : vcpus_list) {
                for (HandlerKind handler : o.handlers) {
                    specs.push_back({handler, workload, vms, vcpus, vm_bytes_for(image_bytes, budget_bytes, vms)});
                }
            }
        }
    }
    return specs;
}

// Generates the image (or adopts --mem-file) and reads it once, so every
// handler starts from the same warm page cache.
bool prepare_image(BenchOptions& o, const std::string& work_dir, RunInfo& info) {
    info.generated = o.mem_file.empty();
    info.zero_fraction = info.generated ? o.zero_fraction : NAN;
    info.duplicate_fraction = info.generated ? o.duplicate_fraction : NAN;
    info.zero_run_pages = info.generated ? o.zero_run_pages : 0;
    if (info.generated) {
        o.mem_file = work_dir + "/snapshot.mem";
        sim::GenerateOptions g;
        g.zero_fraction = o.zero_fraction;
        g.duplicate_fraction = o.duplicate_fraction;
        g.seed = o.seed;
        g.zero_run_pages = o.zero_run_pages;
        std::fprintf(stderr, "rp-bench: generating a %llu MiB image in %s (zero pages in runs of %llu)\n",
                     static_cast<unsigned long long>(o.image_bytes / kMiB), o.mem_file.c_str(),
                     static_cast<unsigned long long>(o.zero_run_pages));
        if (auto stats = sim::generate_image(o.mem_file, o.image_bytes, g); !stats) {
            std::fprintf(stderr, "rp-bench: generating %s failed: %s\n", o.mem_file.c_str(), stats.error().message().c_str());
            return false;
        }
    }
    info.mem_file = fs::weakly_canonical(o.mem_file).string();
    o.mem_file = info.mem_file;
    info.image_bytes = fs::file_size(o.mem_file);
    if (info.image_bytes < 2 * kMiB) {
        std::fprintf(stderr, "rp-bench: %s is smaller than 2 MiB\n", o.mem_file.c_str());
        return false;
    }
    return true;
}

RunInfo machine_info() {
    RunInfo info;
    utsname u{};
    ::uname(&u);
    info.kernel = u.release;
    info.cpus = std::thread::hardware_concurrency();
    info.mem_available_bytes = mem_available_bytes();
    return info;
}

std::string make_work_dir(const BenchOptions& o) {
    if (!o.work_dir.empty()) {
        std::error_code ec;
        fs::create_directories(o.work_dir, ec);
        return fs::weakly_canonical(o.work_dir).string();
    }
    char pattern[] = "/tmp/rp-bench-XXXXXX";
    return ::mkdtemp(pattern) != nullptr ? std::string(pattern) : std::string();
}

// The order to run the matrix in for one round: handlers of a scenario run
// back to back, in reverse on odd rounds, so no handler always goes first
// (on a warm or a cooling machine).
std::vector<size_t> round_order(const std::vector<ScenarioSpec>& specs, unsigned round) {
    std::vector<size_t> order(specs.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    if (round % 2 == 0) return order;
    for (size_t begin = 0; begin < order.size();) {
        size_t end = begin + 1;
        while (end < order.size() && specs[end].group_key() == specs[begin].group_key()) ++end;
        std::reverse(order.begin() + static_cast<ptrdiff_t>(begin), order.begin() + static_cast<ptrdiff_t>(end));
        begin = end;
    }
    return order;
}

void print_progress(size_t index, size_t count, unsigned round, unsigned rounds, const ScenarioResult& r) {
    if (rounds > 1) std::fprintf(stderr, "round %u/%u ", round + 1, rounds);
    std::fprintf(stderr, "[%3zu/%zu] %-15s %-10s %3u VM x %u vCPU %5llu MiB/VM: done %s s, resident %s s, %s (%.1f s)\n",
                 index + 1, count, handler_name(r.spec.handler), workload_name(r.spec.workload), r.spec.vms,
                 r.spec.vcpus, static_cast<unsigned long long>(r.spec.vm_bytes / kMiB),
                 format_figure(r.figure(Figure::done), 3).c_str(), format_figure(r.figure(Figure::resident), 3).c_str(),
                 r.ok() ? "verified" : "FAILED", r.wall_seconds);
}

bool write_outputs(const BenchOptions& o, const std::vector<ScenarioResult>& results, const RunInfo& info) {
    bool ok = true;
    std::string error;
    if (!o.json_path.empty() && !write_json(o.json_path, results, o, info, error)) {
        std::fprintf(stderr, "rp-bench: %s\n", error.c_str());
        ok = false;
    }
    if (!o.svg_path.empty() && !write_svg(o.svg_path, results, info, error)) {
        std::fprintf(stderr, "rp-bench: %s\n", error.c_str());
        ok = false;
    }
    return ok;
}

int run(BenchOptions& o) {
    const uint64_t start_ns = monotonic_ns();
    if ((needs_ringpager(o) && !locate(o.ringpager_path, "src/cli/ringpager", "--ringpager")) ||
        (needs_baseline(o) && !locate(o.baseline_path, "tools/baseline/rp-baseline", "--baseline"))) {
        return 2;
    }
    if (std::string why = userfaultfd_unavailable_reason(); !why.empty()) {
        std::fprintf(stderr, "rp-bench: %s\n", why.c_str());
        return 1;
    }
    const std::string work_dir = make_work_dir(o);
    if (work_dir.empty()) {
        std::fprintf(stderr, "rp-bench: cannot create a work directory: %s\n", std::strerror(errno));
        return 1;
    }
    RunInfo info = machine_info();
    if (!prepare_image(o, work_dir, info)) return 1;
    std::string image_error;
    auto expected = sim::ExpectedImage::open(o.mem_file, &image_error);
    if (!expected) {
        std::fprintf(stderr, "rp-bench: %s\n", image_error.c_str());
        return 1;
    }
    (void)expected->hash(0, expected->size_bytes());  // warms the page cache
    info.memory_budget_bytes = o.memory_budget_bytes != 0 ? o.memory_budget_bytes : info.mem_available_bytes / 10 * 6;

    std::string source_error;
    auto source = PreparedSource::prepare(o.snapshot_source, o.mem_file, work_dir, o.rgw_script, source_error);
    if (!source) {
        std::fprintf(stderr, "rp-bench: --snapshot-source %s: %s\n", snapshot_source_name(o.snapshot_source),
                     source_error.c_str());
        return 1;
    }
    ScenarioContext context{o.mem_file, &*expected, work_dir, o.ringpager_path, o.baseline_path, o.reactors, o.seed,
                            "", o.sample_interval, o.stall, o.timeout, o.cold_cache, source.get()};
    const std::vector<ScenarioSpec> specs = build_matrix(o, info.image_bytes, info.memory_budget_bytes);
    info.rounds = o.rounds;
    std::vector<std::vector<ScenarioResult>> by_spec(specs.size());
    size_t done = 0;
    for (unsigned round = 0; round < o.rounds; ++round) {
        // Fresh touch plans each round (same image); each round keeps its logs.
        context.seed = o.seed + round * 1000003;
        context.log_suffix = o.rounds > 1 ? "-round" + std::to_string(round + 1) : "";
        std::vector<ScenarioResult> this_round(specs.size());
        for (size_t i : round_order(specs, round)) {
            this_round[i] = run_scenario(specs[i], context);
            print_progress(done++, specs.size() * o.rounds, round, o.rounds, this_round[i]);
        }
        compute_ratios(this_round);  // against this round's baseline
        for (size_t i = 0; i < specs.size(); ++i) by_spec[i].push_back(std::move(this_round[i]));
    }
    std::vector<ScenarioResult> results;
    for (const std::vector<ScenarioResult>& rounds : by_spec) results.push_back(combine_rounds(rounds));
    info.total_seconds = static_cast<double>(monotonic_ns() - start_ns) / 1e9;
    print_table(stdout, results, info);
    std::printf("ringpager served the image from: %s\n", snapshot_source_name(o.snapshot_source));
    if (o.snapshot_source == SnapshotSource::s3_cold || o.snapshot_source == SnapshotSource::s3_warm) {
        for (const ScenarioResult& r : results) {
            if (!is_ringpager(r.spec.handler)) continue;
            std::printf("  %s: %.1f MiB fetched from the store while measured (median of rounds)\n", r.spec.name().c_str(),
                        static_cast<double>(r.store_bytes_fetched) / (1 << 20));
        }
    }
    std::fflush(stdout);
    const bool outputs_ok = write_outputs(o, results, info);
    const bool all_ok = std::all_of(results.begin(), results.end(), [](const ScenarioResult& r) { return r.ok(); });
    source.reset();   // stops the store it started, whose pid files are in the work directory
    if (o.work_dir.empty() && !o.keep_work_dir && all_ok) {
        std::error_code ec;
        fs::remove_all(work_dir, ec);
    } else {
        std::fprintf(stderr, "rp-bench: image, sockets and handler logs kept in %s\n", work_dir.c_str());
    }
    if (!all_ok) std::fprintf(stderr, "rp-bench: FAILED: see the report above\n");
    return all_ok && outputs_ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    int exit_code = 0;
    auto options = parse_options(argc, argv, exit_code);
    if (!options) return exit_code;
    return run(*options);
}
