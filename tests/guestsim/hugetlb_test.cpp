// Pins a 2 MiB hugetlb guest end to end against the baseline: huge pages
// reserved, every page verified, discarded huge pages read zeros.
#include <gtest/gtest.h>

#include "guestsim/guest.hpp"
#include "guestsim/hugepages.hpp"
#include "guestsim/image.hpp"
#include "test_util.hpp"

namespace ringpager::sim {
namespace {

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kHuge = 2 * kMiB;

TEST(Hugetlb, GuestRestoresVerifiesAndBalloons) {
    // The guest needs 6 pages; the margin covers other tests allocating at the same time.
    const std::string reserve_error = ensure_hugepages(16);
    ASSERT_TRUE(reserve_error.empty()) << reserve_error;

    test::TempDir dir;
    ASSERT_TRUE(generate_image(dir.file("mem"), 16 * kMiB, GenerateOptions{0.25, 0.0, 13, kHuge, true}).ok());
    auto expected = ExpectedImage::open(dir.file("mem"));
    ASSERT_TRUE(expected.ok());
    auto server = test::start_baseline(dir.file("sock"), dir.file("mem"));
    ASSERT_NE(server, nullptr);

    GuestConfig config;
    config.socket_path = dir.file("sock");
    config.region_sizes_bytes = {8 * kMiB, 4 * kMiB};
    config.page_size_bytes = kHuge;
    auto guest = Guest::create(config);
    ASSERT_TRUE(guest.ok()) << guest.error().message();
    for (const Region& r : guest->regions()) {
        EXPECT_EQ(r.base_host_virt_addr % kHuge, 0u);
        EXPECT_EQ(r.page_size_bytes, kHuge);
    }
    ASSERT_TRUE(guest->connect_and_send().ok());
    ASSERT_EQ(guest->page_count(), 6u);

    TouchReport touch = guest->touch(Pattern::random, 2, 0.5, 2);
    EXPECT_EQ(touch.pages_touched, 3u);
    VerifyReport report = guest->verify(*expected);
    EXPECT_TRUE(report.ok()) << report.describe();
    EXPECT_EQ(report.pages_checked, 6u);

    // One huge page in each region; the handler must copy zeros (no zeropage on hugetlb).
    ASSERT_TRUE(guest->discard(1 * kHuge, kHuge).ok());
    ASSERT_TRUE(guest->discard(4 * kHuge, kHuge).ok());
    report = guest->verify(*expected);
    EXPECT_TRUE(report.ok()) << report.describe();
    EXPECT_EQ(report.zero_pages_checked, 2u);

    guest->disconnect();
    ASSERT_TRUE(server->wait_for_finished(1, std::chrono::seconds(30)));
    const baseline::Stats stats = server->stats();
    EXPECT_EQ(stats.pages_copied, 6u);
    EXPECT_EQ(stats.pages_zeroed, 2u);
}

}  // namespace
}  // namespace ringpager::sim
