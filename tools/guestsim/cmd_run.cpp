// rp-guestsim run: one simulated Firecracker restore against a live handler.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "guestsim/clock.hpp"
#include "guestsim/guest.hpp"
#include "guestsim/hugepages.hpp"
#include "guestsim/units.hpp"

namespace ringpager::sim::cli {
namespace {

// Balloon discards come in chunks of this many bytes (at least one page).
constexpr uint64_t kBalloonChunkBytes = 256 * kKiB;

struct RunArgs {
    std::string socket;
    std::string mem_file;
    std::string regions = "64M";
    std::string page_size = "4K";
    std::string shape = "1.12";
    unsigned vcpus = 1;
    std::string pattern = "sequential";
    double fraction = 1.0;
    uint64_t seed = 1;
    double balloon = 0.0;
    double kill_at = 0.0;
    bool write = false;
    bool no_verify = false;
    bool hold = false;
    bool json = false;
};

struct ParsedRun {
    GuestConfig config;
    Pattern pattern = Pattern::sequential;
};

std::optional<ParsedRun> parse_run(const RunArgs& args) {
    ParsedRun parsed;
    auto regions = parse_size_list(args.regions);
    const uint64_t page = parse_size(args.page_size).value_or(0);
    auto shape = parse_handshake_shape(args.shape);
    auto pattern = parse_pattern(args.pattern);
    if (!regions) std::fprintf(stderr, "rp-guestsim run: --regions wants sizes like 64M,32M\n");
    const bool page_ok = page == kSmallPageBytes || page == kHugePageBytes;
    if (!page_ok) std::fprintf(stderr, "rp-guestsim run: --page-size must be 4K or 2M\n");
    if (!shape) std::fprintf(stderr, "rp-guestsim run: --shape must be 1.1, 1.7 or 1.12\n");
    if (!pattern) std::fprintf(stderr, "rp-guestsim run: --pattern must be sequential, random, hot-set or none\n");
    if (args.mem_file.empty() && !args.no_verify) {
        std::fprintf(stderr, "rp-guestsim run: --mem-file is required unless --no-verify\n");
        return std::nullopt;
    }
    if (!regions || !page_ok || !shape || !pattern) return std::nullopt;
    parsed.config.socket_path = args.socket;
    parsed.config.region_sizes_bytes = *regions;
    parsed.config.page_size_bytes = page;
    parsed.config.shape = *shape;
    parsed.pattern = *pattern;
    return parsed;
}

double us(uint64_t ns) { return static_cast<double>(ns) / 1e3; }
double seconds(uint64_t ns) { return static_cast<double>(ns) / 1e9; }

nlohmann::json report_json(const Guest& guest, const RunArgs& args, const TouchReport& touch,
                           const std::optional<VerifyReport>& verify, uint64_t balloon_pages, uint64_t total_ns) {
    nlohmann::json j;
    j["pages"] = guest.page_count();
    j["page_size"] = guest.page_size_bytes();
    j["memory_bytes"] = guest.memory_bytes();
    j["regions"] = guest.regions().size();
    j["shape"] = args.shape;
    j["pattern"] = args.pattern;
    j["vcpus"] = args.vcpus;
    j["touched_pages"] = touch.pages_touched;
    j["touches"] = touch.touches;
    j["touch_seconds"] = seconds(touch.total_ns);
    j["fault_latency_us"] = {{"p50", us(touch.latency.p50_ns)}, {"p99", us(touch.latency.p99_ns)},
                             {"p999", us(touch.latency.p999_ns)}, {"max", us(touch.latency.max_ns)},
                             {"mean", touch.latency.mean_ns / 1e3}};
    j["balloon_pages"] = balloon_pages;
    if (verify) {
        j["verified_pages"] = verify->pages_checked;
        j["zero_pages_checked"] = verify->zero_pages_checked;
        j["mismatches"] = verify->mismatches;
        j["verify_seconds"] = seconds(verify->total_ns);
        nlohmann::json list = nlohmann::json::array();
        for (const Mismatch& m : verify->first_mismatches) {
            list.push_back({{"page", m.guest_page_index}, {"region", m.region_index}, {"addr", m.addr},
                            {"file_offset", m.file_offset_bytes}, {"expected_zero", m.expected_zero}});
        }
        j["first_mismatches"] = list;
    } else {
        j["mismatches"] = nullptr;
    }
    j["total_seconds"] = seconds(total_ns);
    return j;
}

std::string summary_line(const Guest& guest, const RunArgs& args, const TouchReport& touch,
                         const std::optional<VerifyReport>& verify, uint64_t total_ns) {
    char line[512];
    std::snprintf(line, sizeof line,
                  "rp-guestsim: %llu pages (%s, %zu regions, %s pages, shape %s); touched %llu with %u vCPUs (%s) in "
                  "%.3f s; fault latency p50 %.1f us p99 %.1f us p999 %.1f us max %.1f us; %s; total %.3f s",
                  static_cast<unsigned long long>(guest.page_count()), format_size(guest.memory_bytes()).c_str(),
                  guest.regions().size(), format_size(guest.page_size_bytes()).c_str(), args.shape.c_str(),
                  static_cast<unsigned long long>(touch.pages_touched), args.vcpus, args.pattern.c_str(),
                  seconds(touch.total_ns), us(touch.latency.p50_ns), us(touch.latency.p99_ns),
                  us(touch.latency.p999_ns), us(touch.latency.max_ns),
                  verify ? verify->describe().c_str() : "not verified", seconds(total_ns));
    return line;
}

// --balloon F: discard F of memory in random chunks, then touch those pages
// again (they must read zeros; verification checks). Returns the pages discarded.
Result<uint64_t> inflate_balloon(Guest& guest, const RunArgs& args) {
    if (args.balloon <= 0) return uint64_t{0};
    const uint64_t chunk = std::max(kBalloonChunkBytes, guest.page_size_bytes());
    auto discarded = guest.discard_random(args.balloon, chunk, args.seed);
    if (!discarded) return discarded.error();
    TouchOptions options;
    options.write = args.write;
    (void)guest.touch_pages(*discarded, args.vcpus, options);
    return uint64_t{discarded->size()};
}

int run(const RunArgs& args) {
    auto parsed = parse_run(args);
    if (!parsed) return kExitUsage;
    const uint64_t start = monotonic_ns();
    std::optional<ExpectedImage> expected;
    if (!args.no_verify) {
        std::string error;
        auto opened = ExpectedImage::open(args.mem_file, &error);
        if (!opened) {
            std::fprintf(stderr, "rp-guestsim run: %s\n", error.c_str());
            return kExitFailure;
        }
        expected.emplace(std::move(*opened));
    }
    if (parsed->config.page_size_bytes == kHugePageBytes) {
        uint64_t total = 0;
        for (uint64_t size : parsed->config.region_sizes_bytes) total += size;
        if (std::string error = ensure_hugepages(total / kHugePageBytes); !error.empty()) {
            std::fprintf(stderr, "rp-guestsim run: %s\n", error.c_str());
            return kExitFailure;
        }
    }
    auto guest = Guest::create(parsed->config);
    if (!guest) {
        std::fprintf(stderr, "rp-guestsim run: creating the guest failed: %s\n", guest.error().message().c_str());
        return kExitFailure;
    }
    if (auto sent = guest->connect_and_send(); !sent) {
        std::fprintf(stderr, "rp-guestsim run: handshake to %s failed: %s (is the handler listening?)\n",
                     args.socket.c_str(), sent.error().message().c_str());
        return kExitFailure;
    }
    TouchOptions options;
    options.write = args.write;
    options.kill_at_fraction = args.kill_at;
    TouchReport touch = guest->touch(parsed->pattern, args.vcpus, args.fraction, args.seed, options);
    if (args.hold) {
        // A VM still restoring: it stays connected, with the rest of its
        // memory untouched, until SIGUSR1 (then it goes on to verify) or
        // until something kills it (the handler under --kill-on-failure).
        sigset_t usr1;
        sigemptyset(&usr1);
        sigaddset(&usr1, SIGUSR1);
        pthread_sigmask(SIG_BLOCK, &usr1, nullptr);
        std::printf("holding after %llu touches\n", static_cast<unsigned long long>(touch.pages_touched));
        std::fflush(stdout);
        int signal_number = 0;
        sigwait(&usr1, &signal_number);
    }
    auto balloon_pages = inflate_balloon(*guest, args);
    if (!balloon_pages) {
        std::fprintf(stderr, "rp-guestsim run: balloon discard failed: %s\n", balloon_pages.error().message().c_str());
        return kExitFailure;
    }
    std::optional<VerifyReport> verify;
    if (expected) verify = guest->verify(*expected);
    const uint64_t total_ns = monotonic_ns() - start;
    const std::string summary = summary_line(*guest, args, touch, verify, total_ns);
    if (args.json) {
        std::fprintf(stderr, "%s\n", summary.c_str());
        std::printf("%s\n", report_json(*guest, args, touch, verify, *balloon_pages, total_ns).dump().c_str());
    } else {
        std::printf("%s\n", summary.c_str());
    }
    return verify && !verify->ok() ? kExitFailure : kExitOk;
}

}  // namespace

void add_run_command(CLI::App& app, Action& action) {
    auto args = std::make_shared<RunArgs>();
    CLI::App* sub = app.add_subcommand("run", "Restore a simulated guest through a handler socket and verify it");
    sub->add_option("--socket", args->socket, "Handler's Unix socket (must be listening)")->required();
    sub->add_option("--mem-file", args->mem_file, "Expected flattened memory file to verify against");
    sub->add_option("--regions", args->regions, "Region sizes, e.g. 64M or 32M,16M,8M (default 64M)");
    sub->add_option("--page-size", args->page_size, "4K, or 2M for a hugetlb guest (default 4K)");
    sub->add_option("--shape", args->shape, "Handshake shape: 1.1, 1.7 or 1.12 (default 1.12)");
    sub->add_option("--vcpus", args->vcpus, "Touching threads (default 1)")->check(CLI::Range(1u, 1024u));
    sub->add_option("--pattern", args->pattern, "sequential, random, hot-set or none (default sequential)");
    sub->add_option("--fraction", args->fraction, "Share of pages the workload touches (default 1)")
        ->check(CLI::Range(0.0, 1.0));
    sub->add_option("--seed", args->seed, "PRNG seed for the pattern and balloon (default 1)");
    sub->add_option("--balloon", args->balloon, "After touching, discard this share of memory and expect zeros")
        ->check(CLI::Range(0.0, 1.0));
    sub->add_option("--kill-at", args->kill_at, "SIGKILL this process after touching this share of the plan")
        ->check(CLI::Range(0.0, 1.0));
    sub->add_flag("--write", args->write, "Touch with writes instead of reads");
    sub->add_flag("--no-verify", args->no_verify, "Skip verification (and touching the remaining pages)");
    sub->add_flag("--hold", args->hold,
                  "After touching, hold (a VM mid-restore) until SIGUSR1, then verify; or until killed");
    sub->add_flag("--json", args->json, "Print a JSON report on stdout (the summary goes to stderr)");
    sub->callback([args, &action] { action = [args] { return run(*args); }; });
}

}  // namespace ringpager::sim::cli
