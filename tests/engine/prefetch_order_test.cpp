// Pins the prefetcher's order per listener (ListenerConfig::prefetch_first,
// where a recorded working set plugs in): the listed runs are installed
// first, window by window in their order (a window, 4 MiB of set pages, in
// file-offset order), then everything else ascending; the VM ends resident
// and byte exact.
#include <gtest/gtest.h>

#include <mutex>

#include "common/engine_fixture.hpp"
#include "reactor/test_hooks.hpp"

using namespace ringpager;
using namespace ringpager::testing;

namespace {

constexpr uint64_t MiB = 1024 * 1024;

TEST(PrefetchOrderTest, AListenersRecordedRunsArePrefetchedFirstInTheirOrder) {
    TempDir dir;
    const std::string mem = make_image(dir, "mem", 4 * MiB, 0.0, 6);  // no zero pages: every run is a read
    auto image = sim::ExpectedImage::open(mem);
    ASSERT_TRUE(image.ok());
    std::mutex mu;
    std::vector<uint64_t> installs;  // first page of each install, in order
    test_hooks::arm(test_hooks::Point::before_copy, [&](uint64_t, uint64_t first_page) {
        std::lock_guard lock(mu);
        installs.push_back(first_page);
    });
    struct Disarm {
        ~Disarm() { test_hooks::disarm(test_hooks::Point::before_copy); }
    } disarm;
    auto runs = std::make_shared<const std::vector<PageRun>>(std::vector<PageRun>{{512, 64}, {100, 16}});
    RunningEngine e = start_engine(dir, mem, ServeMode::prefetch, 1, std::chrono::seconds(30), nullptr,
                                   [&](EngineConfig& c) { c.listeners[0].prefetch_first = runs; });
    sim::Guest guest = make_guest(e.socket, {4 * MiB});
    ASSERT_TRUE(guest.connect_and_send().ok());
    ASSERT_TRUE(e.engine->wait_until([](const EngineStats& s) { return s.vms_resident == 1; }, kWait));
    std::vector<uint64_t> order;
    {
        std::lock_guard lock(mu);
        order = installs;
    }
    ASSERT_FALSE(order.empty());
    // Both runs fit one window (80 pages < 4 MiB): sorted by offset, the
    // second run's installs come first, then the first run's, then the
    // rest in ascending order.
    EXPECT_EQ(order[0], 100u);
    size_t i = 0;
    while (i < order.size() && order[i] >= 100 && order[i] < 116) i++;
    ASSERT_LT(i, order.size());
    EXPECT_EQ(order[i], 512u);
    while (i < order.size() && order[i] >= 512 && order[i] < 576) i++;
    ASSERT_LT(i, order.size());
    EXPECT_EQ(order[i], 0u);
    for (size_t j = i + 1; j < order.size(); j++) EXPECT_GT(order[j], order[j - 1]) << j;
    const sim::VerifyReport report = guest.verify(*image);
    EXPECT_EQ(report.mismatches, 0u) << report.describe();
}

}  // namespace
