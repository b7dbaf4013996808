// rp-bench's command line: the scenario matrix and how to measure it.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "model.hpp"
#include "snapshot_source.hpp"

namespace ringpager::bench {

struct BenchOptions {
    std::vector<HandlerKind> handlers;
    std::vector<Workload> workloads;
    std::vector<unsigned> vms;
    std::vector<unsigned> vcpus;
    uint64_t image_bytes = 0;        // generated image size (ignored with mem_file)
    double zero_fraction = 0.6;
    double duplicate_fraction = 0.1;
    // Zero pages come in aligned runs of this many 4 KiB pages (64 = 256 KiB):
    // guest memory keeps unused memory contiguous. 1 scatters them at random,
    // the worst case for any pager that skips zeros.
    uint64_t zero_run_pages = 64;
    std::string mem_file;            // serve this image instead of generating one
    std::string ringpager_path;
    std::string baseline_path;
    unsigned reactors = 0;
    uint64_t memory_budget_bytes = 0;  // all VMs' guest memory together; 0: 60% of MemAvailable
    std::chrono::microseconds sample_interval{1000};
    std::chrono::milliseconds stall{500};
    std::chrono::seconds timeout{300};
    uint64_t seed = 1;
    // The whole matrix runs this many times, handler order alternating; the
    // report gives medians (default 3; --full and --smoke 1).
    unsigned rounds = 3;
    std::string json_path;
    std::string svg_path;
    std::string work_dir;            // empty: a fresh /tmp/rp-bench-XXXXXX, removed at the end
    bool keep_work_dir = false;
    bool cold_cache = false;         // drop the image from the page cache before every scenario
    std::string preset = "default";  // default, full or smoke
    // What ringpager serves the image from (the baseline always serves the
    // memory file); s3-* start a store with this script (tests/remote/rgw.sh).
    SnapshotSource snapshot_source = SnapshotSource::local;
    std::string rgw_script;
};

// Parses argv. Returns nullopt after printing help (exit_code 0) or a usage
// error (exit_code 2).
std::optional<BenchOptions> parse_options(int argc, char** argv, int& exit_code);

}  // namespace ringpager::bench
