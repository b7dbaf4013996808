// copy_bench: what one install ioctl costs. UFFDIO_COPY and UFFDIO_ZEROPAGE
// of N = 1, 16, 512 pages per ioctl into a registered anonymous region, through
// ringpager::Uffd (the engine's own wrapper). N = 1 is the baseline handler's
// pattern (one copy per fault); a plain memcpy into already-present memory is
// the floor. After the run a summary gives every N's page rate relative to
// N = 1, measured in the same process.
#include <benchmark/benchmark.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "uffd/uffd.hpp"

namespace {

using ringpager::InstallOutcome;
using ringpager::Uffd;

constexpr uint64_t kPageBytes = 4096;
constexpr uint64_t kMinRegionBytes = 32 << 20;

// An anonymous region, registered with a userfaultfd unless it is the
// memcpy floor's (a touch of a registered page would wait for a handler
// that this program does not run). Pages are re-armed (made missing again)
// with MADV_DONTNEED: without UFFD_FEATURE_EVENT_REMOVE, which we do not
// request, that produces no event, so nobody has to read the uffd.
class Target {
public:
    Target(uint64_t bytes, bool registered) : bytes_(bytes) {
        auto uffd = Uffd::create(0);
        if (!uffd) {
            std::fprintf(stderr, "copy_bench: %s\n", ringpager::userfaultfd_unavailable_reason().c_str());
            std::exit(1);
        }
        uffd_ = std::move(*uffd);
        base_ = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (base_ == MAP_FAILED || (registered && !uffd_.register_missing(addr(0), bytes_))) {
            std::fprintf(stderr, "copy_bench: cannot map and register %llu bytes\n", (unsigned long long)bytes_);
            std::exit(1);
        }
    }
    ~Target() { ::munmap(base_, bytes_); }
    Target(const Target&) = delete;
    Target& operator=(const Target&) = delete;

    uint64_t addr(uint64_t offset) const { return reinterpret_cast<uint64_t>(base_) + offset; }
    void rearm() const { ::madvise(base_, bytes_, MADV_DONTNEED); }
    const Uffd& uffd() const { return uffd_; }
    uint64_t bytes() const { return bytes_; }

private:
    Uffd uffd_;
    void* base_ = nullptr;
    uint64_t bytes_;
};

enum class Op { copy, zeropage, memcpy };

std::vector<std::byte> random_bytes(uint64_t n) {
    std::vector<std::byte> bytes(n);
    std::mt19937_64 rng(42);
    for (uint64_t i = 0; i + 8 <= n; i += 8) {
        const uint64_t word = rng();
        std::memcpy(bytes.data() + i, &word, 8);
    }
    return bytes;
}

void report(benchmark::State& state, uint64_t pages_per_op) {
    const auto pages = static_cast<double>(state.iterations() * pages_per_op);
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * pages_per_op * kPageBytes));
    state.counters["pages_per_s"] = benchmark::Counter(pages, benchmark::Counter::kIsRate);
}

void BM_Install(benchmark::State& state, Op op) {
    const uint64_t pages = static_cast<uint64_t>(state.range(0));
    const uint64_t chunk = pages * kPageBytes;
    const uint64_t region = std::max<uint64_t>(kMinRegionBytes, chunk * 16);
    Target target(region, op != Op::memcpy);
    const std::vector<std::byte> src = random_bytes(chunk);
    if (op == Op::memcpy) {
        // The floor: the same bytes into memory that is already present.
        std::memset(reinterpret_cast<void*>(target.addr(0)), 1, region);
    }
    uint64_t offset = 0;
    for (auto _ : state) {
        if (offset + chunk > region) {
            // Re-arming is not part of the install cost; it runs once per
            // region (every 8192 single-page copies), so the pause is amortized.
            state.PauseTiming();
            if (op != Op::memcpy) target.rearm();
            offset = 0;
            state.ResumeTiming();
        }
        const uint64_t dst = target.addr(offset);
        InstallOutcome out;
        if (op == Op::copy) out = target.uffd().copy(dst, src.data(), chunk, kPageBytes);
        else if (op == Op::zeropage) out = target.uffd().zeropage(dst, chunk, kPageBytes);
        else std::memcpy(reinterpret_cast<void*>(dst), src.data(), chunk);
        benchmark::DoNotOptimize(out);
        if (out.error != 0 || out.existing_pages != 0) {
            state.SkipWithError(("install failed: " + std::string(std::strerror(out.error))).c_str());
            break;
        }
        offset += chunk;
    }
    report(state, pages);
}

BENCHMARK_CAPTURE(BM_Install, uffdio_copy, Op::copy)->Arg(1)->Arg(16)->Arg(512);
BENCHMARK_CAPTURE(BM_Install, uffdio_zeropage, Op::zeropage)->Arg(1)->Arg(16)->Arg(512);
BENCHMARK_CAPTURE(BM_Install, memcpy_present, Op::memcpy)->Arg(1)->Arg(16)->Arg(512);

// Prints the usual console output, then every run's page rate relative to
// the same operation at 1 page per ioctl.
class ComparingReporter : public benchmark::ConsoleReporter {
public:
    explicit ComparingReporter(OutputOptions options) : ConsoleReporter(options) {}

    void ReportRuns(const std::vector<Run>& runs) override {
        ConsoleReporter::ReportRuns(runs);
        for (const Run& run : runs) {
            if (run.error_occurred || run.run_type != Run::RT_Iteration) continue;
            auto it = run.counters.find("pages_per_s");
            if (it != run.counters.end()) rates_.emplace_back(run.benchmark_name(), it->second.value);
        }
    }
    void Finalize() override {
        ConsoleReporter::Finalize();
        std::map<std::string, double> one_page;
        for (const auto& [name, rate] : rates_) {
            if (name.size() > 2 && name.compare(name.size() - 2, 2, "/1") == 0) {
                one_page[name.substr(0, name.size() - 2)] = rate;
            }
        }
        std::printf("\npages/s relative to 1 page per call (the baseline handler's pattern), same run:\n");
        for (const auto& [name, rate] : rates_) {
            const auto it = one_page.find(name.substr(0, name.rfind('/')));
            if (it == one_page.end() || it->second <= 0) continue;
            std::printf("  %-36s %12.0f pages/s %8.0f ns/page  x%.2f\n", name.c_str(), rate, 1e9 / rate,
                        rate / it->second);
        }
    }

private:
    std::vector<std::pair<std::string, double>> rates_;
};

}  // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
    // Colors only on a terminal: logs (meson test) stay readable.
    ComparingReporter reporter(::isatty(STDOUT_FILENO) ? benchmark::ConsoleReporter::OO_ColorTabular
                                                       : benchmark::ConsoleReporter::OO_Tabular);
    benchmark::RunSpecifiedBenchmarks(&reporter);
    benchmark::Shutdown();
    return 0;
}
