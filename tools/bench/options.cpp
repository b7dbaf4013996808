// rp-bench's options, presets and validation.
#include "options.hpp"

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>

#include "guestsim/units.hpp"

namespace ringpager::bench {
namespace {

constexpr unsigned kMaxVcpus = 8;

struct Preset {
    std::vector<std::string> handlers, workloads;
    std::vector<unsigned> vms, vcpus;
    std::string image_size;
    int stall_ms;
    unsigned rounds;
};

// default: quick but meaningful; full: the complete matrix; smoke: seconds,
// run under `meson test` so the harness never rots.
Preset preset_named(const std::string& name) {
    const std::vector<std::string> all_handlers = {"lazy", "prefetch", "baseline", "baseline-eager"};
    if (name == "full") return {all_handlers, {"none", "sequential", "random25", "hotset"}, {1, 10, 100}, {1, 2, 8}, "512M", 500, 1};
    if (name == "smoke")
        return {{"lazy", "prefetch", "baseline", "baseline-eager", "replay", "prefetch-pause", "prefetch-steps"},
                {"none", "sequential", "random25", "hotset", "hotset-fixed"}, {1}, {2}, "8M", 200, 1};
    return {all_handlers, {"none", "sequential", "random25"}, {1, 10}, {2}, "128M", 500, 3};
}

template <typename T, typename Parse>
bool parse_names(const std::vector<std::string>& names, std::vector<T>& out, Parse parse, const char* what) {
    out.clear();
    for (const std::string& name : names) {
        auto parsed = parse(name);
        if (!parsed) {
            std::fprintf(stderr, "rp-bench: unknown %s '%s' (see --help)\n", what, name.c_str());
            return false;
        }
        if (std::find(out.begin(), out.end(), *parsed) == out.end()) out.push_back(*parsed);
    }
    return !out.empty();
}

struct RawOptions {
    std::vector<std::string> handlers, workloads;
    std::vector<unsigned> vms, vcpus;
    std::string image_size, memory_budget, snapshot_source = "local";
    int sample_us = 1000, stall_ms = 500, timeout_s = 300;
    bool full = false, smoke = false;
};

void add_options(CLI::App& app, RawOptions& raw, BenchOptions& o) {
    app.add_flag("--full", raw.full, "the full matrix: 512 MiB image, all workloads, --vms 1,10,100, --vcpus 1,2,8");
    app.add_flag("--smoke", raw.smoke, "a tiny run (8 MiB, 1 VM, every handler and workload) for meson test");
    app.add_option("--handlers", raw.handlers, "lazy,prefetch,baseline,baseline-eager,replay,prefetch-pause,prefetch-steps (default: all but the last three)")->delimiter(',');
    app.add_option("--workloads", raw.workloads, "none,sequential,random25,hotset,hotset-fixed (default: none,sequential,random25)")
        ->delimiter(',');
    app.add_option("--vms", raw.vms, "concurrent VMs per scenario, e.g. 1,10,100 (default 1,10)")
        ->delimiter(',')->check(CLI::Range(1u, 1000u));
    app.add_option("--vcpus", raw.vcpus, "vCPU threads per VM, 1..8, e.g. 1,2,8 (default 2)")
        ->delimiter(',')->check(CLI::Range(1u, kMaxVcpus));
    app.add_option("--image-size", raw.image_size, "size of the generated snapshot image (default 128M; --full 512M; --smoke 8M)");
    app.add_option("--zero-fraction", o.zero_fraction, "share of zero pages in the generated image (default 0.6)")
        ->check(CLI::Range(0.0, 1.0));
    app.add_option("--duplicate-fraction", o.duplicate_fraction, "share of duplicate pages (default 0.1)")
        ->check(CLI::Range(0.0, 1.0));
    app.add_option("--zero-run-pages", o.zero_run_pages,
                   "zero pages come in aligned runs of this many pages (default 64; 1: scattered at random)")
        ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 20));
    app.add_option("--mem-file", o.mem_file, "serve this memory file instead of generating one")->check(CLI::ExistingFile);
    app.add_option("--ringpager", o.ringpager_path, "ringpager binary (default: next to rp-bench's build dir)");
    app.add_option("--baseline", o.baseline_path, "rp-baseline binary (default: next to rp-bench's build dir)");
    app.add_option("--reactors", o.reactors, "ringpager --reactors (default: its own, one per core)");
    app.add_option("--memory-budget", raw.memory_budget,
                   "guest memory of all VMs together; each VM gets min(image, budget / VMs) (default: 60% of MemAvailable)");
    app.add_option("--sample-us", raw.sample_us, "residency sampling interval in microseconds (default 1000)")
        ->check(CLI::Range(100, 100000));
    app.add_option("--stall-ms", raw.stall_ms, "after the workload, give up on full residency after this long "
                                               "without progress (default 500)")->check(CLI::Range(10, 60000));
    app.add_option("--timeout", raw.timeout_s, "seconds per scenario before a stuck handler aborts the run (default 300)")
        ->check(CLI::Range(1, 86400));
    app.add_option("--seed", o.seed, "seed for the image and the touch plans (default 1)");
    app.add_option("--rounds", o.rounds,
                   "run the matrix this many times, alternating the handler order; report medians over rounds "
                   "and the median of each round's ratio to that round's baseline (default 3; --full, --smoke 1)")
        ->check(CLI::Range(1u, 99u));
    app.add_option("--json", o.json_path, "write every figure and ratio as JSON to FILE");
    app.add_option("--svg", o.svg_path, "write a plot of the results normalized to baseline to FILE");
    app.add_option("--work-dir", o.work_dir, "directory for the image, sockets and handler logs (kept)");
    app.add_flag("--cold-cache", o.cold_cache,
                 "drop the snapshot image from the page cache (POSIX_FADV_DONTNEED) before every scenario");
    app.add_flag("--keep", o.keep_work_dir, "keep the temporary work directory (handler logs)");
    app.add_option("--snapshot-source", raw.snapshot_source,
                   "what ringpager serves: local (the memory file), layered, layered-zstd (a snapshot built from it), layered-packed (replay: that snapshot packed with the recorded set), "
                   "s3-cold, s3-warm (that snapshot pushed to a throwaway Ceph RGW, served through an empty or a "
                   "filled chunk cache) (default local)");
    app.add_option("--rgw-script", o.rgw_script,
                   "the store for s3-*: tests/remote/rgw.sh (default: $RINGPAGER_RGW_SCRIPT)");
}

// Fills what the user left unset from the preset, then converts and checks.
bool resolve(const CLI::App& app, RawOptions& raw, BenchOptions& o) {
    if (raw.full && raw.smoke) {
        std::fprintf(stderr, "rp-bench: give --full or --smoke, not both\n");
        return false;
    }
    o.preset = raw.full ? "full" : raw.smoke ? "smoke" : "default";
    const Preset p = preset_named(o.preset);
    if (app.count("--handlers") == 0) raw.handlers = p.handlers;
    if (app.count("--workloads") == 0) raw.workloads = p.workloads;
    if (app.count("--vms") == 0) raw.vms = p.vms;
    if (app.count("--vcpus") == 0) raw.vcpus = p.vcpus;
    if (app.count("--image-size") == 0) raw.image_size = p.image_size;
    if (app.count("--stall-ms") == 0) raw.stall_ms = p.stall_ms;
    if (app.count("--rounds") == 0) o.rounds = p.rounds;
    if (!parse_names(raw.handlers, o.handlers, parse_handler, "handler")) return false;
    if (!parse_names(raw.workloads, o.workloads, parse_workload, "workload")) return false;
    o.vms = raw.vms;
    o.vcpus = raw.vcpus;
    auto image = sim::parse_size(raw.image_size);
    if (!image || *image == 0 || *image % (2 << 20) != 0) {
        std::fprintf(stderr, "rp-bench: --image-size must be a non-zero multiple of 2M, like 256M\n");
        return false;
    }
    o.image_bytes = *image;
    if (!raw.memory_budget.empty()) {
        auto budget = sim::parse_size(raw.memory_budget);
        if (!budget || *budget == 0) {
            std::fprintf(stderr, "rp-bench: --memory-budget wants a size like 12G\n");
            return false;
        }
        o.memory_budget_bytes = *budget;
    }
    if (auto source = parse_snapshot_source(raw.snapshot_source)) {
        o.snapshot_source = *source;
    } else {
        std::fprintf(stderr, "rp-bench: --snapshot-source is local, layered, layered-zstd, layered-packed, s3-cold or s3-warm\n");
        return false;
    }
    if (o.rgw_script.empty()) {
        const char* script = std::getenv("RINGPAGER_RGW_SCRIPT");
        if (script != nullptr) o.rgw_script = script;
    }
    o.sample_interval = std::chrono::microseconds(raw.sample_us);
    o.stall = std::chrono::milliseconds(raw.stall_ms);
    o.timeout = std::chrono::seconds(raw.timeout_s);
    return true;
}

}  // namespace

std::optional<BenchOptions> parse_options(int argc, char** argv, int& exit_code) {
    CLI::App app{
        "rp-bench: restores the same snapshot with several page-fault handlers in one run and compares them.\n"
        "Each handler runs as its own process; simulated guests (threads) connect, run a workload, and have\n"
        "every byte verified. Prints a table; --json and --svg write the results. Every figure is also\n"
        "given as a ratio to `baseline` measured in the same run. See docs/benchmarks.md.",
        "rp-bench"};
    RawOptions raw;
    BenchOptions options;
    add_options(app, raw, options);
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        exit_code = app.exit(e) == 0 ? 0 : 2;
        return std::nullopt;
    }
    if (!resolve(app, raw, options)) {
        exit_code = 2;
        return std::nullopt;
    }
    return options;
}

}  // namespace ringpager::bench
