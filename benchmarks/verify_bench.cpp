// verify_bench: what checking every block read costs a restore. One layered
// snapshot (built from a generated image: 60 % zero pages, 10 % duplicates,
// 4 KiB blocks) is served by two in-process engines that differ only in
// verify_reads (the default) and --no-verify-reads. Every iteration restores
// once through each, alternating which goes first; the figure to quote is
// `ratio_median`: the median over iterations of verified / unverified time
// (the goal is at most 1.03). `lazy`: a guest touches all of its memory in
// random order with 2 vCPUs; `prefetch`: the guest touches nothing and the
// time is until the VM is resident. Every lazy restore is verified byte for
// byte against the image. `--smoke`: one iteration of a 16 MiB guest.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "common/log.hpp"
#include "guestsim/expected_image.hpp"
#include "guestsim/guest.hpp"
#include "guestsim/image.hpp"
#include "ringpager/engine.hpp"
#include "ringpager/snapshot.hpp"

namespace {

using namespace ringpager;

bool g_smoke = false;
constexpr auto kWait = std::chrono::seconds(120);

[[noreturn]] void die(const std::string& why) {
    std::fprintf(stderr, "verify_bench: %s\n", why.c_str());
    std::exit(1);
}

double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Fixture {
    std::string dir;
    std::string image_path;
    std::string manifest;
    uint64_t memory_bytes = 0;
    std::unique_ptr<sim::ExpectedImage> expected;
    std::unique_ptr<Engine> verified, unverified;

    Fixture() {
        char pattern[] = "/tmp/rp-verify-bench-XXXXXX";
        if (::mkdtemp(pattern) == nullptr) die("mkdtemp failed");
        dir = pattern;
        memory_bytes = g_smoke ? (16u << 20) : (512u << 20);
        image_path = dir + "/guest.mem";
        sim::GenerateOptions g;
        g.zero_fraction = 0.6;
        g.duplicate_fraction = 0.1;
        if (auto stats = sim::generate_image(image_path, memory_bytes, g); !stats) die(stats.error().message());
        auto image = sim::ExpectedImage::open(image_path);
        if (!image) die(image.error().message());
        expected = std::make_unique<sim::ExpectedImage>(std::move(*image));
        manifest = dir + "/guest.rpm";
        SnapshotBuildOptions options;
        options.base_path = image_path;
        options.manifest_path = manifest;
        options.sync = false;
        SnapshotBuildReport report;
        std::string error;
        if (!build_layered_snapshot(options, report, error)) die(error);
        verified = start_engine("v-", true);
        unverified = start_engine("u-", false);
    }
    ~Fixture() {
        for (auto* e : {&verified, &unverified})
            if (*e) {
                (*e)->request_stop();
                (*e)->wait();
            }
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
    }

    std::unique_ptr<Engine> start_engine(const std::string& prefix, bool verify) {
        std::string error;
        std::shared_ptr<const Source> source = open_layered_source(manifest, verify, error);
        if (!source) die(error);
        EngineConfig config;
        config.listeners.push_back({dir + "/" + prefix + "lazy.sock", source, ServeMode::lazy});
        config.listeners.push_back({dir + "/" + prefix + "prefetch.sock", source, ServeMode::prefetch});
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

// One restore through `engine`; returns its time in seconds, handshake to
// the last page touched (lazy) or to resident (prefetch). Waits until the
// engine released the VM, so restores never overlap.
double restore_once(Fixture& f, Engine& engine, const std::string& socket, ServeMode mode, uint64_t seed,
                    benchmark::State& state) {
    sim::GuestConfig config;
    config.socket_path = socket;
    config.region_sizes_bytes = {f.memory_bytes};
    const EngineStats before = engine.stats();
    double seconds = 0;
    {
        auto guest = sim::Guest::create(config);
        if (!guest) die("guest: " + guest.error().message());
        const double start = now_s();
        if (auto sent = guest->connect_and_send(); !sent) die("connect " + socket + ": " + sent.error().message());
        if (mode == ServeMode::lazy) {
            (void)guest->touch(sim::Pattern::random, 2, 1.0, seed);
        } else if (!engine.wait_until([&](const EngineStats& s) { return s.vms_resident > before.vms_resident; },
                                      kWait)) {
            die("the VM never became resident via " + socket);
        }
        seconds = now_s() - start;
        if (mode == ServeMode::lazy) {
            const sim::VerifyReport verify = guest->verify(*f.expected);
            if (!verify.ok()) state.SkipWithError(("MISMATCH via " + socket + ": " + verify.describe()).c_str());
        }
    }
    if (!engine.wait_released(before.vms_released + 1, kWait)) die("the VM of " + socket + " was not released");
    return seconds;
}

void BM_Verify(benchmark::State& state, ServeMode mode) {
    Fixture& f = fixture();
    const std::string name = mode == ServeMode::lazy ? "lazy.sock" : "prefetch.sock";
    std::vector<double> ratios;
    double verified_s = 0, unverified_s = 0;
    uint64_t seed = 1;
    for (auto _ : state) {
        double v = 0, u = 0;
        // Alternating the order cancels what the first restore leaves behind.
        if (seed % 2 == 0) {
            v = restore_once(f, *f.verified, f.dir + "/v-" + name, mode, seed, state);
            u = restore_once(f, *f.unverified, f.dir + "/u-" + name, mode, seed, state);
        } else {
            u = restore_once(f, *f.unverified, f.dir + "/u-" + name, mode, seed, state);
            v = restore_once(f, *f.verified, f.dir + "/v-" + name, mode, seed, state);
        }
        ++seed;
        state.SetIterationTime(v);
        verified_s += v;
        unverified_s += u;
        ratios.push_back(u > 0 ? v / u : 0);
    }
    std::sort(ratios.begin(), ratios.end());
    const double n = static_cast<double>(state.iterations());
    state.counters["verified_ms"] = verified_s / n * 1e3;
    state.counters["unverified_ms"] = unverified_s / n * 1e3;
    state.counters["ratio_median"] = ratios.empty() ? 0 : ratios[ratios.size() / 2];
    state.counters["ratio_min"] = ratios.empty() ? 0 : ratios.front();
    state.counters["ratio_max"] = ratios.empty() ? 0 : ratios.back();
    state.SetLabel(std::to_string(f.memory_bytes >> 20) + " MiB layered, verified vs --no-verify-reads");
}

void register_benchmarks() {
    const int iterations = g_smoke ? 1 : 9;
    benchmark::RegisterBenchmark("BM_Verify/lazy", BM_Verify, ServeMode::lazy)
        ->Iterations(iterations)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark("BM_Verify/prefetch", BM_Verify, ServeMode::prefetch)
        ->Iterations(iterations)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
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
    set_log_level(LogLevel::warn);
    benchmark::RunSpecifiedBenchmarks();
    g_fixture.reset();
    benchmark::Shutdown();
    return 0;
}
