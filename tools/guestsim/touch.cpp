// Touch plans and the simulated vCPU threads that execute them.
#include "guestsim/touch.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <atomic>
#include <cmath>
#include <latch>
#include <numeric>
#include <thread>

#include "guestsim/clock.hpp"
#include "guestsim/guest.hpp"
#include "guestsim/prng.hpp"

namespace ringpager::sim {
namespace {

constexpr double kHotSetShare = 0.10;

void shuffle(std::vector<uint64_t>& items, uint64_t seed) {
    Xoshiro256 rng(seed);
    for (size_t i = items.size(); i > 1; --i) std::swap(items[i - 1], items[rng.below(i)]);
}

// One access that faults the page in if it is missing. The read is volatile
// so it is never elided; the write is a locked add of zero, which the CPU
// performs as a write (a write fault) but which leaves the byte unchanged,
// so verification still holds.
inline uint8_t access_page(std::byte* addr, bool write) {
    auto* byte = reinterpret_cast<uint8_t*>(addr);
    if (!write) return *reinterpret_cast<volatile const uint8_t*>(byte);
#if defined(__x86_64__)
    asm volatile("lock; addb $0, %0" : "+m"(*byte) : : "memory");
    return 0;
#else
    return __atomic_fetch_add(byte, 0, __ATOMIC_SEQ_CST);
#endif
}

// Kills the whole process abruptly, like a VMM dying mid-restore.
[[noreturn]] void die_now() {
    ::kill(::getpid(), SIGKILL);
    ::_exit(137);  // only reached if SIGKILL could not be sent
}

struct VcpuWork {
    std::vector<std::byte*> pages;
    std::vector<uint64_t> latencies_ns;
};

// Keeps the values read alive so no access can be optimized away.
std::atomic<uint64_t> g_touch_sink{0};

// Runs one thread per vCPU, released together; returns the wall time in ns.
uint64_t run_vcpus(std::vector<VcpuWork>& work, const TouchOptions& options, unsigned rounds,
                   uint64_t planned_touches) {
    uint64_t kill_after = 0;
    if (options.kill_at_fraction > 0) {
        kill_after = std::max<uint64_t>(
            1, static_cast<uint64_t>(options.kill_at_fraction * static_cast<double>(planned_touches)));
    }
    std::atomic<uint64_t> touches_done{0};
    std::latch go(1);
    std::vector<std::jthread> threads;
    // If starting a thread throws, release the ones already waiting so the
    // vector's destructor can join them.
    struct ReleaseOnUnwind {
        std::latch& latch;
        bool armed = true;
        ~ReleaseOnUnwind() {
            if (armed) latch.count_down();
        }
    } release_on_unwind{go};
    for (VcpuWork& w : work) {
        w.latencies_ns.reserve(w.pages.size());
        threads.emplace_back([&, write = options.write] {
            go.wait();
            uint8_t sink = 0;
            for (unsigned round = 0; round < rounds; ++round) {
                for (std::byte* page : w.pages) {
                    const uint64_t t0 = monotonic_ns();
                    sink = static_cast<uint8_t>(sink + access_page(page, write));
                    const uint64_t t1 = monotonic_ns();
                    if (round == 0) w.latencies_ns.push_back(t1 - t0);
                    if (kill_after != 0 && touches_done.fetch_add(1, std::memory_order_relaxed) + 1 >= kill_after) {
                        die_now();
                    }
                }
            }
            g_touch_sink.fetch_add(sink, std::memory_order_relaxed);
        });
    }
    const uint64_t start = monotonic_ns();
    release_on_unwind.armed = false;
    go.count_down();
    threads.clear();  // joins every vCPU
    return monotonic_ns() - start;
}

void collect_latencies(std::vector<VcpuWork>& work, TouchReport& report) {
    for (const VcpuWork& w : work) {
        report.latencies_ns.insert(report.latencies_ns.end(), w.latencies_ns.begin(), w.latencies_ns.end());
    }
    report.latency = summarize_latencies(report.latencies_ns);
}

}  // namespace

std::optional<Pattern> parse_pattern(std::string_view text) {
    if (text == "sequential") return Pattern::sequential;
    if (text == "random") return Pattern::random;
    if (text == "hot-set" || text == "hot_set") return Pattern::hot_set;
    if (text == "none") return Pattern::none;
    return std::nullopt;
}

const char* pattern_name(Pattern pattern) {
    switch (pattern) {
        case Pattern::sequential: return "sequential";
        case Pattern::random: return "random";
        case Pattern::hot_set: return "hot-set";
        case Pattern::none: return "none";
    }
    return "?";
}

LatencySummary summarize_latencies(std::vector<uint64_t>& latencies_ns) {
    LatencySummary s;
    s.count = latencies_ns.size();
    if (latencies_ns.empty()) return s;
    std::sort(latencies_ns.begin(), latencies_ns.end());
    auto rank = [&](double q) {
        const size_t index = static_cast<size_t>(std::ceil(q * static_cast<double>(s.count)));
        return latencies_ns[std::min(s.count - 1, index == 0 ? 0 : index - 1)];
    };
    s.p50_ns = rank(0.50);
    s.p99_ns = rank(0.99);
    s.p999_ns = rank(0.999);
    s.max_ns = latencies_ns.back();
    s.mean_ns = static_cast<double>(std::accumulate(latencies_ns.begin(), latencies_ns.end(), uint64_t{0})) /
                static_cast<double>(s.count);
    return s;
}

std::vector<uint64_t> plan_pages(Pattern pattern, uint64_t page_count, double fraction, uint64_t seed) {
    if (pattern == Pattern::none || page_count == 0) return {};
    if (pattern == Pattern::hot_set) fraction = kHotSetShare;
    fraction = std::clamp(fraction, 0.0, 1.0);
    uint64_t count = static_cast<uint64_t>(std::llround(fraction * static_cast<double>(page_count)));
    if (pattern == Pattern::hot_set) count = std::max<uint64_t>(count, 1);
    std::vector<uint64_t> pages(page_count);
    std::iota(pages.begin(), pages.end(), uint64_t{0});
    if (pattern != Pattern::sequential) shuffle(pages, seed);
    pages.resize(count);
    return pages;
}

TouchReport Guest::touch(Pattern pattern, unsigned vcpus, double fraction, uint64_t seed,
                         const TouchOptions& options) {
    std::vector<uint64_t> pages = plan_pages(pattern, page_count_, fraction, seed);
    if (pattern != Pattern::hot_set) return touch_pages(pages, vcpus, options);

    // Every vCPU walks the whole hot set, each in its own order, several times.
    vcpus = std::max(vcpus, 1u);
    std::vector<VcpuWork> work(vcpus);
    for (unsigned v = 0; v < vcpus; ++v) {
        std::vector<uint64_t> order = pages;
        shuffle(order, seed + 1 + v);
        for (uint64_t page : order) work[v].pages.push_back(page_address(page));
    }
    for (uint64_t page : pages) touched_[page] = 1;
    TouchReport report;
    report.pages_touched = pages.size();
    const unsigned rounds = std::max(options.hot_set_rounds, 1u);
    report.touches = pages.size() * vcpus * rounds;
    report.total_ns = run_vcpus(work, options, rounds, report.touches);
    collect_latencies(work, report);
    return report;
}

TouchReport Guest::touch_pages(const std::vector<uint64_t>& pages, unsigned vcpus, const TouchOptions& options) {
    vcpus = std::max(vcpus, 1u);
    std::vector<VcpuWork> work(vcpus);
    // Contiguous slices of the plan: a sequential plan gives each vCPU its own run.
    for (unsigned v = 0; v < vcpus; ++v) {
        const size_t begin = pages.size() * v / vcpus;
        const size_t end = pages.size() * (v + 1) / vcpus;
        for (size_t i = begin; i < end; ++i) {
            assert(pages[i] < page_count_);
            work[v].pages.push_back(page_address(pages[i]));
        }
    }
    for (uint64_t page : pages) touched_[page] = 1;
    TouchReport report;
    report.pages_touched = pages.size();
    report.touches = pages.size();
    report.total_ns = run_vcpus(work, options, 1, report.touches);
    collect_latencies(work, report);
    return report;
}

}  // namespace ringpager::sim
