// Pins the VM lifecycle with real VM processes (rp-guestsim): a VM that dies
// mid-restore is released through its pidfd or connection within the turn,
// nothing leaks, other VMs keep being served, and --kill-on-failure kills a
// VM the engine cannot serve instead of leaving it hung.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <random>
#include <thread>

#include "common/engine_fixture.hpp"
#include "common/process.hpp"

using namespace ringpager;
using namespace ringpager::testing;

namespace {

constexpr uint64_t MiB = 1024 * 1024;

std::vector<std::string> guest_args(const std::string& socket, const std::string& mem, const std::string& extra_shape,
                                    double kill_at, uint64_t seed) {
    std::vector<std::string> args = {"run", "--socket", socket, "--mem-file", mem, "--regions", "2M,2M", "--vcpus", "2",
                                     "--pattern", "random", "--seed", std::to_string(seed)};
    if (!extra_shape.empty()) args.insert(args.end(), {"--shape", extra_shape});
    if (kill_at > 0) args.insert(args.end(), {"--kill-at", std::to_string(kill_at)});
    return args;
}

class LifecycleTest : public ::testing::Test {
protected:
    void SetUp() override {
        guestsim = tool_path("RP_GUESTSIM");
        ASSERT_FALSE(guestsim.empty()) << "RP_GUESTSIM is not set (run through meson test)";
        mem = make_image(dir, "mem", 4 * MiB);
    }
    TempDir dir;
    std::string guestsim;
    std::string mem;
};

TEST_F(LifecycleTest, HundredVmsKilledAtRandomPointsLeakNothing) {
    RunningEngine e = start_engine(dir, mem);
    const size_t fds_before = open_fd_count();
    std::mt19937_64 rng(42);
    constexpr int kVms = 100, kAtOnce = 10;
    int killed = 0;
    for (int batch = 0; batch < kVms / kAtOnce; batch++) {
        std::vector<Child> children;
        for (int i = 0; i < kAtOnce; i++) {
            const double kill_at = 0.05 + static_cast<double>(rng() % 90) / 100.0;
            children.push_back(spawn(guestsim, guest_args(e.socket, mem, "", kill_at, rng())));
        }
        for (Child& c : children) {
            std::string out;
            const int status = c.wait(&out);
            if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) killed++;
            else ADD_FAILURE() << "guest did not die as planned: " << out;
        }
    }
    EXPECT_EQ(killed, kVms);
    ASSERT_TRUE(e.engine->wait_released(kVms, kWait));
    const EngineStats s = e.engine->stats();
    EXPECT_EQ(s.vms_accepted, uint64_t{kVms});
    EXPECT_EQ(s.vms_active, 0u);
    EXPECT_EQ(s.vms_failed, 0u);  // a VM that exits is released, not a failure
    EXPECT_EQ(s.read_buffers_busy, 0u);
    EXPECT_EQ(open_fd_count(), fds_before);
    // And the engine still serves a whole restore afterwards.
    Child good = spawn(guestsim, guest_args(e.socket, mem, "", 0, 7));
    std::string out;
    EXPECT_EQ(good.wait(&out), 0) << out;
}

// Read buffers follow the load: an idle reactor pins 1 MiB of them, a
// prefetching VM makes its reactor pin big slots, and once the engine is idle
// again they are given back (one chunk per quiet interval).
TEST_F(LifecycleTest, ReadBuffersGrowWithTheLoadAndAreGivenBackWhenIdle) {
    constexpr uint64_t kIdleBytes = 1 * MiB;
    RunningEngine e = start_engine(dir, mem, ServeMode::prefetch);
    EXPECT_EQ(e.engine->stats().read_buffer_bytes, 2 * kIdleBytes);
    uint64_t peak = 0;
    for (int i = 0; i < 4; i++) {
        Child guest = spawn(guestsim, guest_args(e.socket, mem, "", 0, 11 + i));
        std::string out;
        EXPECT_EQ(guest.wait(&out), 0) << out;
        ASSERT_TRUE(e.engine->wait_until(
            [&](const EngineStats& s) {
                peak = std::max(peak, s.read_buffer_bytes);
                return s.vms_released >= uint64_t(i + 1);
            },
            kWait));
    }
    EXPECT_GT(peak, 2 * kIdleBytes + 8 * MiB) << "prefetch pinned no big slots";
    EXPECT_TRUE(e.engine->wait_until([](const EngineStats& s) { return s.read_buffer_bytes == 2 * kIdleBytes; },
                                     std::chrono::seconds(30)))
        << e.engine->stats().read_buffer_bytes;
}

TEST_F(LifecycleTest, OldFirecrackerIsReleasedThroughItsPidfdWhenItDies) {
    RunningEngine e = start_engine(dir, mem);
    // Firecracker 1.7-1.11 shape: a connection hang-up alone does not end the VM.
    // One vCPU dies right after a touch completed, so no fault is in flight:
    // only the pidfd can tell the engine. (With a second vCPU mid-fault, the
    // copy may see the address space gone first, which is just as right and
    // would not test the pidfd; the kernel does not order the two.)
    std::vector<std::string> args = guest_args(e.socket, mem, "1.7", 0.5, 3);
    *(std::find(args.begin(), args.end(), "--vcpus") + 1) = "1";
    Child c = spawn(guestsim, args);
    const int status = c.wait();
    ASSERT_TRUE(WIFSIGNALED(status));
    ASSERT_TRUE(e.engine->wait_released(1, kWait));
    const auto reports = e.engine->reports();
    ASSERT_EQ(reports.size(), 1u);
    EXPECT_EQ(reports[0].end_reason, "VM process exited");
}

TEST_F(LifecycleTest, WholeRestoreAsASeparateProcessSucceeds) {
    RunningEngine e = start_engine(dir, mem, ServeMode::prefetch);
    Child c = spawn(guestsim, guest_args(e.socket, mem, "", 0, 9));
    std::string out;
    EXPECT_EQ(c.wait(&out), 0) << out;
    ASSERT_TRUE(e.engine->wait_released(1, kWait));
    EXPECT_EQ(e.engine->reports()[0].end_reason, "peer closed the connection");
}

TEST_F(LifecycleTest, KillOnFailureKillsAVmWhoseSnapshotWasTruncatedAfterStart) {
    const std::string victim = dir.file("victim");
    std::filesystem::copy_file(mem, victim);
    std::string error;
    EngineConfig config;
    const std::string socket = dir.file("kill.sock");
    config.listeners.push_back({socket, open_raw_source(victim, error), ServeMode::lazy});
    config.kill_on_failure = true;
    auto engine = Engine::start(std::move(config), error);
    ASSERT_TRUE(engine) << error;
    ASSERT_EQ(truncate(victim.c_str(), 1 * MiB), 0);
    ::testing::internal::CaptureStderr();
    Child c = spawn(guestsim, {"run", "--socket", socket, "--mem-file", mem, "--regions", "4M", "--pattern",
                               "sequential", "--vcpus", "1"});
    const int status = c.wait();
    ASSERT_TRUE(engine->wait_released(1, kWait));
    const std::string log = ::testing::internal::GetCapturedStderr();
    ASSERT_TRUE(WIFSIGNALED(status)) << log;
    EXPECT_EQ(WTERMSIG(status), SIGKILL);
    EXPECT_NE(log.find("short read (snapshot file truncated after start?)"), std::string::npos) << log;
    EXPECT_NE(log.find("killed with SIGKILL through its pidfd (--kill-on-failure)"), std::string::npos) << log;
    EXPECT_EQ(engine->stats().vms_failed, 1u);
}

}  // namespace
