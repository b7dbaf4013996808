// restore_bench: one whole restore, in process. A simulated guest touches all
// of its memory in random order, served once by the ringpager engine and once
// by the baseline handler (one thread per VM, one UFFDIO_COPY per fault) in
// every iteration, alternating which goes first. The reported time is the
// engine's; `ratio_vs_baseline` is engine time / baseline time over the same
// iterations (below 1: the engine is faster). Every restore is verified.
// `lazy_no_busy_poll` is a second engine with --busy-poll-us 0, to show what
// polling before sleeping buys.
// Six paired restores per benchmark; `--smoke`: one, of an 8 MiB guest, for
// `meson test`. `--mem-file FILE` restores that file instead of a generated image, e.g.
// a real guest's memory from `rp-realguest snapshot` (docs/realguest.md); with `--smoke`,
// its first 8 MiB.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>

#include "baseline/server.hpp"
#include "common/log.hpp"
#include "guestsim/expected_image.hpp"
#include "guestsim/guest.hpp"
#include "guestsim/image.hpp"
#include "ringpager/engine.hpp"

namespace {

using namespace ringpager;

bool g_smoke = false;
std::string g_mem_file;  // --mem-file: serve this instead of a generated image
constexpr auto kWait = std::chrono::seconds(60);

[[noreturn]] void die(const std::string& why) {
    std::fprintf(stderr, "restore_bench: %s\n", why.c_str());
    std::exit(1);
}

uint64_t now_ns() {
    return static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count());
}

// The snapshot, one engine (a lazy and a prefetch socket) and one baseline
// server, all made once per process.
struct Fixture {
    std::string dir;
    std::string mem_file;
    uint64_t memory_bytes = 0;
    std::unique_ptr<sim::ExpectedImage> expected;
    std::unique_ptr<Engine> engine;
    std::unique_ptr<Engine> engine_no_poll;  // the same with busy polling off
    std::unique_ptr<baseline::Server> baseline;
    uint64_t engine_vms = 0, engine_no_poll_vms = 0, baseline_vms = 0;

    Fixture() {
        char pattern[] = "/tmp/rp-restore-bench-XXXXXX";
        if (::mkdtemp(pattern) == nullptr) die("mkdtemp failed");
        dir = pattern;
        memory_bytes = g_smoke ? (8u << 20) : (128u << 20);
        if (!g_mem_file.empty()) {
            // A given file is served from offset 0; the guest is all of it (a 4 KiB multiple),
            // or its first 8 MiB in smoke mode.
            std::error_code ec;
            const uint64_t size = std::filesystem::file_size(g_mem_file, ec);
            if (ec || size < 4096) die("--mem-file " + g_mem_file + ": " + (ec ? ec.message() : "smaller than a page"));
            memory_bytes = g_smoke ? std::min<uint64_t>(memory_bytes, size & ~uint64_t{4095}) : size & ~uint64_t{4095};
            mem_file = g_mem_file;
        } else {
            mem_file = dir + "/snapshot.mem";
            sim::GenerateOptions g;
            g.zero_fraction = 0.6;
            g.duplicate_fraction = 0.1;
            if (auto stats = sim::generate_image(mem_file, memory_bytes, g); !stats) die(stats.error().message());
        }
        auto image = sim::ExpectedImage::open(mem_file);
        if (!image) die(image.error().message());
        expected = std::make_unique<sim::ExpectedImage>(std::move(*image));
        engine = start_engine("", std::chrono::microseconds(50));
        engine_no_poll = start_engine("nopoll-", std::chrono::microseconds(0));
        baseline::Options options;
        options.socket_path = dir + "/baseline.sock";
        options.mem_file_path = mem_file;
        auto server = baseline::Server::create(options);
        if (!server) die("baseline: " + server.error().message());
        baseline = std::move(*server);
        baseline->start();
    }
    ~Fixture() {
        if (baseline) baseline->stop();
        for (auto* e : {&engine, &engine_no_poll})
            if (*e) {
                (*e)->request_stop();
                (*e)->wait();
            }
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
    }

    std::unique_ptr<Engine> start_engine(const std::string& prefix, std::chrono::microseconds busy_poll) {
        std::string error;
        std::shared_ptr<const Source> source = open_raw_source(mem_file, error);
        if (!source) die(error);
        EngineConfig config;
        config.listeners.push_back({dir + "/" + prefix + "lazy.sock", source, ServeMode::lazy});
        config.listeners.push_back({dir + "/" + prefix + "prefetch.sock", source, ServeMode::prefetch});
        config.busy_poll_max = busy_poll;
        auto started = Engine::start(std::move(config), error);
        if (!started) die(error);
        return started;
    }
};

std::unique_ptr<Fixture> g_fixture;

Fixture& fixture() {
    if (!g_fixture) g_fixture = std::make_unique<Fixture>();
    return *g_fixture;
}

// One restore through `socket`; returns its time in seconds (handshake to the
// last page touched). Verifies every page and waits until the handler has
// released the VM, so restores never overlap.
enum class Handler { engine, engine_no_poll, baseline };

double restore_once(Fixture& f, const std::string& socket, unsigned vcpus, uint64_t seed, Handler handler,
                    benchmark::State& state) {
    sim::GuestConfig config;
    config.socket_path = socket;
    config.region_sizes_bytes = {f.memory_bytes};
    double seconds = 0;
    {
        auto guest = sim::Guest::create(config);
        if (!guest) die("guest: " + guest.error().message());
        const uint64_t start = now_ns();
        if (auto sent = guest->connect_and_send(); !sent) die("connect " + socket + ": " + sent.error().message());
        (void)guest->touch(sim::Pattern::random, vcpus, 1.0, seed);
        seconds = static_cast<double>(now_ns() - start) / 1e9;
        const sim::VerifyReport verify = guest->verify(*f.expected);
        if (!verify.ok()) state.SkipWithError(("MISMATCH via " + socket + ": " + verify.describe()).c_str());
    }
    const bool released = handler == Handler::engine           ? f.engine->wait_released(++f.engine_vms, kWait)
                          : handler == Handler::engine_no_poll ? f.engine_no_poll->wait_released(++f.engine_no_poll_vms, kWait)
                                                               : f.baseline->wait_for_finished(++f.baseline_vms, kWait);
    if (!released) die("handler did not release the VM of " + socket);
    return seconds;
}

void BM_Restore(benchmark::State& state, ServeMode mode, bool busy_poll) {
    Fixture& f = fixture();
    const unsigned vcpus = static_cast<unsigned>(state.range(0));
    const Handler engine = busy_poll ? Handler::engine : Handler::engine_no_poll;
    const std::string engine_socket =
        f.dir + (busy_poll ? "/" : "/nopoll-") + (mode == ServeMode::lazy ? "lazy.sock" : "prefetch.sock");
    const std::string baseline_socket = f.dir + "/baseline.sock";
    double engine_s = 0, baseline_s = 0;
    uint64_t seed = 1;
    for (auto _ : state) {
        double e = 0, b = 0;
        // Alternating the order cancels whatever the first restore leaves
        // behind for the second (warm caches, freed memory).
        if (seed % 2 == 0) {
            e = restore_once(f, engine_socket, vcpus, seed, engine, state);
            b = restore_once(f, baseline_socket, vcpus, seed, Handler::baseline, state);
        } else {
            b = restore_once(f, baseline_socket, vcpus, seed, Handler::baseline, state);
            e = restore_once(f, engine_socket, vcpus, seed, engine, state);
        }
        ++seed;
        state.SetIterationTime(e);
        engine_s += e;
        baseline_s += b;
    }
    const double n = static_cast<double>(state.iterations());
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * f.memory_bytes));
    state.counters["engine_ms"] = engine_s / n * 1e3;
    state.counters["baseline_ms"] = baseline_s / n * 1e3;
    state.counters["ratio_vs_baseline"] = baseline_s > 0 ? engine_s / baseline_s : 0;
    state.SetLabel(std::to_string(f.memory_bytes >> 20) + " MiB" +
                   (g_mem_file.empty() ? std::string() : " of " + std::filesystem::path(g_mem_file).filename().string()) +
                   ", random full touch");
}

// A lazy restore takes seconds, so a time-based iteration count would stop
// after one; a fixed count gives every benchmark the same number of paired
// engine/baseline restores (one in smoke mode).
void register_benchmarks() {
    const int iterations = g_smoke ? 1 : 6;
    struct Variant {
        const char* name;
        ServeMode mode;
        bool busy_poll;
    };
    for (const Variant& v : {Variant{"BM_Restore/lazy", ServeMode::lazy, true},
                             Variant{"BM_Restore/lazy_no_busy_poll", ServeMode::lazy, false},
                             Variant{"BM_Restore/prefetch", ServeMode::prefetch, true}}) {
        benchmark::RegisterBenchmark(v.name, BM_Restore, v.mode, v.busy_poll)
            ->ArgName("vcpus")
            ->Arg(1)
            ->Arg(2)
            ->Iterations(iterations)
            ->UseManualTime()
            ->Unit(benchmark::kMillisecond);
    }
}

}  // namespace

// Removes argv[i] and the `count - 1` arguments after it.
void drop_args(int& argc, char** argv, int i, int count) {
    for (int j = i; j + count < argc + 1; ++j) argv[j] = argv[j + count];
    argc -= count;
}

int main(int argc, char** argv) {
    for (int i = 1; i < argc;) {
        if (std::strcmp(argv[i], "--smoke") == 0) {
            g_smoke = true;
            drop_args(argc, argv, i, 1);
        } else if (std::strcmp(argv[i], "--mem-file") == 0 && i + 1 < argc) {
            g_mem_file = argv[i + 1];
            drop_args(argc, argv, i, 2);
        } else if (std::strncmp(argv[i], "--mem-file=", 11) == 0) {
            g_mem_file = argv[i] + 11;
            drop_args(argc, argv, i, 1);
        } else {
            ++i;
        }
    }
    register_benchmarks();
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
    set_log_level(LogLevel::warn);  // one info line per VM would bury the results
    benchmark::RunSpecifiedBenchmarks();
    g_fixture.reset();
    benchmark::Shutdown();
    return 0;
}
