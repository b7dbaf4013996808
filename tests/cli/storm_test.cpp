// Storms of 200 VMs connecting to one `ringpager serve` at once (prefetch,
// 2 reactors): every byte of every VM verified by its guest, and after each
// storm the engine is back where it started: the same open fds, read buffers
// given back, its RSS within a bound of the idle figure after the first, and
// no higher after the fifth than after the first (a leak per VM would grow
// with the VMs served; a long-running daemon serves many storms).
#include <gtest/gtest.h>

#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "common/engine_fixture.hpp"
#include "common/process.hpp"
#include "common/wait_for_file.hpp"

using namespace ringpager;
using namespace ringpager::testing;

namespace {

constexpr uint64_t MiB = 1024 * 1024;

size_t fd_count(pid_t pid) {
    size_t n = 0;
    for (const auto& entry : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd")) {
        (void)entry;
        n++;
    }
    return n;
}

uint64_t rss_kib(pid_t pid) {
    std::ifstream status("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(status, line))
        if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6));
    return 0;
}

// Collects a child's output on a thread of its own (a storm's log is more
// than a pipe holds) and lets the test wait for lines in it.
class OutputCollector {
public:
    explicit OutputCollector(int fd) : thread_([this, fd] {
        char buf[4096];
        ssize_t n;
        while ((n = read(fd, buf, sizeof buf)) > 0) {
            std::lock_guard lock(mutex_);
            text_.append(buf, static_cast<size_t>(n));
            changed_.notify_all();
        }
        std::lock_guard lock(mutex_);
        closed_ = true;
        changed_.notify_all();
    }) {}
    ~OutputCollector() { thread_.join(); }
    size_t count(const std::string& needle) {
        std::lock_guard lock(mutex_);
        return count_locked(needle);
    }
    bool wait_for(const std::string& needle, size_t times) {
        std::unique_lock lock(mutex_);
        return changed_.wait_for(lock, kWait, [&] { return closed_ || count_locked(needle) >= times; }) &&
               count_locked(needle) >= times;
    }
    std::string text() {
        std::lock_guard lock(mutex_);
        return text_;
    }

private:
    size_t count_locked(const std::string& needle) const {
        size_t n = 0;
        for (size_t at = text_.find(needle); at != std::string::npos; at = text_.find(needle, at + 1)) n++;
        return n;
    }
    std::mutex mutex_;
    std::condition_variable changed_;
    std::string text_;
    bool closed_ = false;
    std::thread thread_;
};

struct StormFigures {
    int verified = 0;
    size_t fds_peak = 0;
    uint64_t rss_peak = 0;
};

// Starts `vms` guests at once (seeds from `first_seed`) and waits for each,
// sampling the server's fds and RSS as each ends.
StormFigures storm(const std::string& guestsim, const std::string& socket, const std::string& mem, pid_t server,
                   int vms, int first_seed) {
    std::vector<Child> guests;
    for (int i = 0; i < vms; i++)
        guests.push_back(spawn(guestsim, {"run", "--socket", socket, "--mem-file", mem, "--regions", "1M,1M", "--vcpus",
                                          "2", "--pattern", "random", "--seed", std::to_string(first_seed + i)}));
    StormFigures f;
    for (Child& g : guests) {
        f.fds_peak = std::max(f.fds_peak, fd_count(server));
        f.rss_peak = std::max(f.rss_peak, rss_kib(server));
        std::string out;
        const int status = g.wait(&out);
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) f.verified++;
        else ADD_FAILURE() << out;
    }
    return f;
}

TEST(StormTest, TwoHundredVmsAtOnceThenBackToIdleFiveTimes) {
    constexpr int kVms = 200, kStorms = 5;
    const std::string ringpager = tool_path("RP_RINGPAGER"), guestsim = tool_path("RP_GUESTSIM");
    ASSERT_FALSE(ringpager.empty() || guestsim.empty()) << "run through meson test";
#ifdef __SANITIZE_ADDRESS__
    // AddressSanitizer holds freed memory back (its quarantine, 256 MiB),
    // which grows the RSS by what each storm frees: the server gets none, so
    // that its RSS shows what the engine keeps.
    const char* asan = getenv("ASAN_OPTIONS");
    setenv("ASAN_OPTIONS", (std::string(asan ? asan : "") + ":quarantine_size_mb=0").c_str(), 1);
#endif
    TempDir dir;
    const std::string mem = make_image(dir, "mem", 2 * MiB);
    const std::string socket = dir.file("serve.sock");
    // Prefetch in steps: the default pace pauses while CPUs are contended (a
    // storm on CI is), and then the guests fault every page themselves, no
    // reactor pins big read buffers, and there is nothing to give back.
    Child server = spawn(ringpager, {"serve", "--socket", socket, "--mem-file", mem, "--mode", "prefetch",
                                     "--prefetch-during-faults", "steps", "--reactors", "2", "--max-pending", "256"});
    OutputCollector log(server.stderr_fd);
    ASSERT_TRUE(wait_for_file(socket)) << log.text();
    // Idle means set up: the socket file appears before the engine's last
    // start-up fds are closed (seen once in CI under load: 12 then 11).
    ASSERT_TRUE(log.wait_for("serving: ", 1)) << log.text();
    const size_t fds_idle = fd_count(server.pid);
    const uint64_t rss_idle = rss_kib(server.pid);

    [[maybe_unused]] uint64_t rss_after_first = 0;
    for (int n = 1; n <= kStorms; n++) {
        SCOPED_TRACE("storm " + std::to_string(n));
        const StormFigures f = storm(guestsim, socket, mem, server.pid, kVms, (n - 1) * kVms + 1);
        EXPECT_EQ(f.verified, kVms);
        ASSERT_TRUE(log.wait_for(": released (", static_cast<size_t>(n * kVms))) << log.text();
        // Both reactors prefetched, so both pinned big read buffers; each says
        // when it has given them back.
        ASSERT_TRUE(log.wait_for("idle: read buffers back to 1024 KiB pinned", static_cast<size_t>(2 * n)))
            << log.text();
        const size_t fds_after = fd_count(server.pid);
        const uint64_t rss_after = rss_kib(server.pid);
        printf("storm %d: fds idle %zu peak %zu after %zu; RSS idle %llu KiB peak %llu after %llu\n", n, fds_idle,
               f.fds_peak, fds_after, (unsigned long long)rss_idle, (unsigned long long)f.rss_peak,
               (unsigned long long)rss_after);
        EXPECT_EQ(fds_after, fds_idle);
        if (n == 1) {
            rss_after_first = rss_after;
            RecordProperty("rss_idle_kib", std::to_string(rss_idle));
            RecordProperty("rss_peak_kib", std::to_string(f.rss_peak));
            RecordProperty("rss_after_kib", std::to_string(rss_after));
        }
        // What stays: the allocator's cached pages and the page-state tables'
        // high-water mark, bounded; not a per-VM leak. After the first storm
        // that is within 16 MiB of idle; the next 800 VMs add at most 4 MiB
        // (a leak of 5 KiB per VM would show; 20 storms measured +0.7 MiB).
        // Under ThreadSanitizer its shadow memory stays mapped and says nothing
        // about the engine's own memory: the bounds are checked in the other builds.
#ifndef __SANITIZE_THREAD__
        if (n == 1) {
            EXPECT_LE(rss_after, rss_idle + 16 * 1024);
        }
        if (n == kStorms) {
            EXPECT_LE(rss_after, rss_after_first + 4 * 1024);
        }
#endif
    }
    EXPECT_EQ(log.count("failed"), 0u) << log.text();
    kill(server.pid, SIGTERM);
    int status = 0;
    waitpid(server.pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    EXPECT_TRUE(log.wait_for("stopped: 1000 VMs served (0 refused, 0 failed)", 1)) << log.text();
}

}  // namespace
