// Pins end-to-end serving: simulated Firecracker guests restored by the
// engine see exactly the snapshot's bytes, for every page, in every shape.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "common/engine_fixture.hpp"

using namespace ringpager;
using namespace ringpager::testing;

namespace {

constexpr uint64_t MiB = 1024 * 1024;

void restore_and_verify(const std::string& socket, const sim::ExpectedImage& image, std::vector<uint64_t> regions,
                        sim::Pattern pattern, unsigned vcpus, uint64_t seed,
                        sim::HandshakeShape shape = sim::HandshakeShape::v1_12, uint64_t page_size = 4096) {
    sim::Guest guest = make_guest(socket, std::move(regions), page_size, shape);
    ASSERT_TRUE(guest.connect_and_send().ok());
    const sim::TouchReport touch = guest.touch(pattern, vcpus, 1.0, seed);
    EXPECT_EQ(touch.pages_touched, guest.page_count());
    const sim::VerifyReport verify = guest.verify(image);
    EXPECT_EQ(verify.pages_checked, guest.page_count());
    EXPECT_EQ(verify.mismatches, 0u) << verify.describe();
}

class EngineTest : public ::testing::Test {
protected:
    TempDir dir;
};

TEST_F(EngineTest, SingleRegionRandomTouchTwoVcpusIsByteExact) {
    const std::string mem = make_image(dir, "mem", 32 * MiB);
    auto image = sim::ExpectedImage::open(mem);
    ASSERT_TRUE(image.ok());
    RunningEngine e = start_engine(dir, mem);
    restore_and_verify(e.socket, *image, {32 * MiB}, sim::Pattern::random, 2, 1);
    const EngineStats s = e.engine->stats();
    EXPECT_EQ(s.vms_accepted, 1u);
    EXPECT_GT(s.faults, 0u);
    // Every page is installed exactly once, by copy or zero fill.
    EXPECT_EQ(s.pages_copied + s.pages_zeroed, 32 * MiB / 4096);
    EXPECT_GT(s.page_cache_hits, 0u);  // the file is cached: faults take the fast path
}

TEST_F(EngineTest, RingReadPathAloneIsByteExact) {
    const std::string mem = make_image(dir, "mem", 16 * MiB);
    auto image = sim::ExpectedImage::open(mem);
    ASSERT_TRUE(image.ok());
    RunningEngine e = start_engine(dir, mem, ServeMode::lazy, 2, std::chrono::seconds(30), nullptr,
                                   [](EngineConfig& c) { c.page_cache_fast_path = false; });
    restore_and_verify(e.socket, *image, {8 * MiB, 8 * MiB}, sim::Pattern::random, 4, 8);
    const EngineStats s = e.engine->stats();
    EXPECT_EQ(s.page_cache_hits, 0u);
    EXPECT_EQ(s.bytes_read, 16 * MiB);  // every page went through READ_FIXED
}

// While faults flow the reactor busy-polls before sleeping; over thousands of
// faults from two vCPUs some poll must catch the next fault. Turned off, the
// reactor never polls. Either way every byte is right.
TEST_F(EngineTest, BusyPollingServesFaultsWithoutSleepingAndCanBeTurnedOff) {
    const std::string mem = make_image(dir, "mem", 16 * MiB);
    auto image = sim::ExpectedImage::open(mem);
    ASSERT_TRUE(image.ok());
    auto restore_with = [&](std::chrono::microseconds busy_poll, uint64_t seed) {
        RunningEngine e = start_engine(dir, mem, ServeMode::lazy, 2, std::chrono::seconds(30), nullptr,
                                       [&](EngineConfig& c) { c.busy_poll_max = busy_poll; });
        restore_and_verify(e.socket, *image, {16 * MiB}, sim::Pattern::random, 2, seed);
        return e.engine->stats();
    };
    const EngineStats on = restore_with(EngineConfig{}.busy_poll_max, 5);
    EXPECT_GT(on.busy_poll_hits, 0u);
    EXPECT_LT(on.busy_poll_hits + on.busy_poll_misses, on.faults + 1000);  // polls only around faults
    const EngineStats off = restore_with(std::chrono::microseconds(0), 6);
    EXPECT_GT(off.faults, 0u);
    EXPECT_EQ(off.busy_poll_hits, 0u);
    EXPECT_EQ(off.busy_poll_misses, 0u);
}

namespace {

// Nice values of this process's threads named rp-reactor-*, by thread id, from
// /proc. A reactor thread that has been joined can still be listed for a
// moment (join returns before the kernel unhashes the task), so callers tell
// one engine's reactors from the next one's by thread id.
std::map<int, int> reactor_nice_values() {
    std::map<int, int> values;
    for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
        std::ifstream comm(task.path() / "comm");
        std::string name;
        std::getline(comm, name);
        if (name.rfind("rp-reactor-", 0) != 0) continue;
        std::ifstream stat_file(task.path() / "stat");
        std::string stat((std::istreambuf_iterator<char>(stat_file)), std::istreambuf_iterator<char>());
        if (stat.empty()) continue;  // exited between listing and reading
        std::istringstream fields(stat.substr(stat.rfind(')') + 2));  // from field 3 (state) on
        std::string field;
        for (int i = 3; i <= 19 && fields >> field; i++) {}
        values[std::stoi(task.path().filename().string())] = std::stoi(field);  // field 19: nice
    }
    return values;
}

std::vector<int> nice_values_except(const std::map<int, int>& all, const std::map<int, int>& earlier) {
    std::vector<int> values;
    for (const auto& [tid, nice] : all)
        if (!earlier.contains(tid)) values.push_back(nice);
    return values;
}

}  // namespace

TEST_F(EngineTest, ReactorThreadsRunAtTheConfiguredNiceValue) {
    const std::string mem = make_image(dir, "mem", 4 * MiB);
    const std::map<int, int> before = reactor_nice_values();
    std::map<int, int> first;
    {
        RunningEngine e = start_engine(dir, mem);  // default: -10 (the tests run as root)
        first = reactor_nice_values();
        EXPECT_EQ(nice_values_except(first, before), (std::vector<int>{-10, -10}));
        EXPECT_NE(e.engine->setup_summary().find("2 reactor(s) at nice -10, io_uring"), std::string::npos)
            << e.engine->setup_summary();
    }
    RunningEngine e = start_engine(dir, mem, ServeMode::lazy, 2, std::chrono::seconds(30), nullptr,
                                   [](EngineConfig& c) { c.reactor_nice = 5; });
    first.insert(before.begin(), before.end());
    EXPECT_EQ(nice_values_except(reactor_nice_values(), first), (std::vector<int>{5, 5}));
}

TEST_F(EngineTest, ThreeRegionsWithGapsEightVcpusSequential) {
    const std::string mem = make_image(dir, "mem", 40 * MiB);
    auto image = sim::ExpectedImage::open(mem);
    ASSERT_TRUE(image.ok());
    RunningEngine e = start_engine(dir, mem);
    restore_and_verify(e.socket, *image, {16 * MiB, 8 * MiB, 16 * MiB}, sim::Pattern::sequential, 8, 2);
}

TEST_F(EngineTest, AllThreeHandshakeShapesAreServed) {
    const std::string mem = make_image(dir, "mem", 8 * MiB);
    auto image = sim::ExpectedImage::open(mem);
    ASSERT_TRUE(image.ok());
    RunningEngine e = start_engine(dir, mem);
    for (auto shape : {sim::HandshakeShape::v1_1, sim::HandshakeShape::v1_7, sim::HandshakeShape::v1_12})
        restore_and_verify(e.socket, *image, {4 * MiB, 4 * MiB}, sim::Pattern::random, 2, 3, shape);
    EXPECT_EQ(e.engine->stats().vms_accepted, 3u);
}

TEST_F(EngineTest, SparseMemoryFileHolesReadAsZeros) {
    const std::string mem = make_image(dir, "mem", 16 * MiB, 0.6, 11, /*sparse=*/true);
    auto image = sim::ExpectedImage::open(mem);
    ASSERT_TRUE(image.ok());
    RunningEngine e = start_engine(dir, mem);
    restore_and_verify(e.socket, *image, {16 * MiB}, sim::Pattern::random, 2, 4);
    // Holes are zero-filled without being read.
    EXPECT_LT(e.engine->stats().bytes_read, 16 * MiB * 6 / 10);
}

TEST_F(EngineTest, SequentialFaultsAreCoalescedIntoFewerCopies) {
    const std::string mem = make_image(dir, "mem", 32 * MiB, 0.0);
    auto image = sim::ExpectedImage::open(mem);
    ASSERT_TRUE(image.ok());
    RunningEngine e = start_engine(dir, mem, ServeMode::lazy, 1);
    restore_and_verify(e.socket, *image, {32 * MiB}, sim::Pattern::sequential, 8, 5);
    const EngineStats s = e.engine->stats();
    EXPECT_EQ(s.pages_copied + s.pages_zeroed, 32 * MiB / 4096);
    // Eight vCPUs fault in parallel: some turns see adjacent pages, which share one ioctl.
    EXPECT_GT(s.copy_ioctls, 0u);
    EXPECT_LE(s.copy_ioctls, s.pages_copied);
}

TEST_F(EngineTest, ManyVmsOnOneSocketAtOnce) {
    const std::string mem = make_image(dir, "mem", 8 * MiB);
    auto image = sim::ExpectedImage::open(mem);
    ASSERT_TRUE(image.ok());
    RunningEngine e = start_engine(dir, mem);
    constexpr int kVms = 8;
    std::vector<std::thread> vms;
    for (int i = 0; i < kVms; i++)
        vms.emplace_back([&, i] {
            restore_and_verify(e.socket, *image, {8 * MiB}, i % 2 ? sim::Pattern::random : sim::Pattern::sequential, 2,
                               100 + i);
        });
    for (auto& t : vms) t.join();
    ASSERT_TRUE(e.engine->wait_released(kVms, kWait));
    EXPECT_EQ(e.engine->stats().vms_accepted, uint64_t{kVms});
    EXPECT_EQ(e.engine->stats().vms_active, 0u);
}

TEST_F(EngineTest, FdCountReturnsToBaselineAfterVmsGoAway) {
    const std::string mem = make_image(dir, "mem", 4 * MiB);
    auto image = sim::ExpectedImage::open(mem);
    ASSERT_TRUE(image.ok());
    RunningEngine e = start_engine(dir, mem);
    // Warm up once so lazily opened process-wide fds (none expected) are counted.
    restore_and_verify(e.socket, *image, {4 * MiB}, sim::Pattern::random, 1, 1);
    ASSERT_TRUE(e.engine->wait_released(1, kWait));
    const size_t baseline = open_fd_count();
    for (int i = 0; i < 5; i++) restore_and_verify(e.socket, *image, {4 * MiB}, sim::Pattern::random, 2, 10 + i);
    ASSERT_TRUE(e.engine->wait_released(6, kWait));
    EXPECT_EQ(open_fd_count(), baseline);
}

TEST_F(EngineTest, HugePageGuestIsByteExact) {
    const std::string mem = make_image(dir, "mem", 64 * MiB);
    auto image = sim::ExpectedImage::open(mem);
    ASSERT_TRUE(image.ok());
    ASSERT_EQ(sim::ensure_hugepages(64), "");
    RunningEngine e = start_engine(dir, mem);
    restore_and_verify(e.socket, *image, {32 * MiB, 32 * MiB}, sim::Pattern::random, 2, 6, sim::HandshakeShape::v1_12,
                       2 * MiB);
    const EngineStats s = e.engine->stats();
    EXPECT_EQ(s.pages_copied + s.pages_zeroed, 64u / 2);
}

TEST_F(EngineTest, ShutdownReleasesConnectedVmsAndRemovesTheSocket) {
    const std::string mem = make_image(dir, "mem", 4 * MiB);
    RunningEngine e = start_engine(dir, mem);
    sim::Guest guest = make_guest(e.socket, {4 * MiB});
    ASSERT_TRUE(guest.connect_and_send().ok());
    ASSERT_TRUE(e.engine->wait_accepted(1, kWait));
    e.engine->request_stop();
    EXPECT_TRUE(e.engine->wait());
    EXPECT_EQ(e.engine->stats().vms_released, 1u);
    EXPECT_FALSE(std::filesystem::exists(e.socket));
}

}  // namespace
