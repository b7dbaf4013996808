// restore_bench: one whole restore, in process. A simulated guest touches all
// of its memory in random order, served once by the ringpager engine and once
// by the baseline handler (one thread per VM, one UFFDIO_COPY per fault) in
// every iteration, alternating which goes first. The reported time is the
// engine's; `ratio_vs_baseline` is engine time / baseline time over the same
// iterations (below 1: the engine is faster). Every restore is verified.
// Six paired restores per benchmark; `--smoke`: one, of an 8 MiB guest, for
// `meson test`.
#include <benchmark/benchmark.h>

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
    std::unique_ptr<baseline::Server> baseline;
    uint64_t engine_vms = 0, baseline_vms = 0;

    Fixture() {
        char pattern[] = "/tmp/rp-restore-bench-XXXXXX";
        if (::mkdtemp(pattern) == nullptr) die("mkdtemp failed");
        dir = pattern;
        memory_bytes = g_smoke ? (8u << 20) : (128u << 20);
        mem_file = dir + "/snapshot.mem";
        sim::GenerateOptions g;
        g.zero_fraction = 0.6;
        g.duplicate_fraction = 0.1;
        if (auto stats = sim::generate_image(mem_file, memory_bytes, g); !stats) die(stats.error().message());
        auto image = sim::ExpectedImage::open(mem_file);
        if (!image) die(image.error().message());
        expected = std::make_unique<sim::ExpectedImage>(std::move(*image));
        start_engine();
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
        if (engine) {
            engine->request_stop();
            engine->wait();
        }
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
    }

    void start_engine() {
        std::string error;
        std::shared_ptr<const Source> source = open_raw_source(mem_file, error);
        if (!source) die(error);
        EngineConfig config;
        config.listeners.push_back({dir + "/lazy.sock", source, ServeMode::lazy});
        config.listeners.push_back({dir + "/prefetch.sock", source, ServeMode::prefetch});
        engine = Engine::start(std::move(config), error);
        if (!engine) die(error);
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
double restore_once(Fixture& f, const std::string& socket, unsigned vcpus, uint64_t seed, bool engine,
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
    const bool released = engine ? f.engine->wait_released(++f.engine_vms, kWait)
                                 : f.baseline->wait_for_finished(++f.baseline_vms, kWait);
    if (!released) die("handler did not release the VM of " + socket);
    return seconds;
}

void BM_Restore(benchmark::State& state, ServeMode mode) {
    Fixture& f = fixture();
    const unsigned vcpus = static_cast<unsigned>(state.range(0));
    const std::string engine_socket = f.dir + (mode == ServeMode::lazy ? "/lazy.sock" : "/prefetch.sock");
    const std::string baseline_socket = f.dir + "/baseline.sock";
    double engine_s = 0, baseline_s = 0;
    uint64_t seed = 1;
    for (auto _ : state) {
        double e = 0, b = 0;
        // Alternating the order cancels whatever the first restore leaves
        // behind for the second (warm caches, freed memory).
        if (seed % 2 == 0) {
            e = restore_once(f, engine_socket, vcpus, seed, true, state);
            b = restore_once(f, baseline_socket, vcpus, seed, false, state);
        } else {
            b = restore_once(f, baseline_socket, vcpus, seed, false, state);
            e = restore_once(f, engine_socket, vcpus, seed, true, state);
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
    state.SetLabel(std::to_string(f.memory_bytes >> 20) + " MiB, random full touch");
}

// A lazy restore takes seconds, so a time-based iteration count would stop
// after one; a fixed count gives every benchmark the same number of paired
// engine/baseline restores (one in smoke mode).
void register_benchmarks() {
    const int iterations = g_smoke ? 1 : 6;
    for (ServeMode mode : {ServeMode::lazy, ServeMode::prefetch}) {
        benchmark::RegisterBenchmark(mode == ServeMode::lazy ? "BM_Restore/lazy" : "BM_Restore/prefetch", BM_Restore, mode)
            ->ArgName("vcpus")
            ->Arg(1)
            ->Arg(2)
            ->Iterations(iterations)
            ->UseManualTime()
            ->Unit(benchmark::kMillisecond);
    }
}

}  // namespace

int main(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--smoke") == 0) {
            g_smoke = true;
            for (int j = i; j + 1 < argc; ++j) argv[j] = argv[j + 1];
            --argc;
            break;
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
