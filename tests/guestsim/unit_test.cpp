// Pins the small pure pieces: size parsing, touch plans, latency percentiles.
#include <algorithm>
#include <numeric>
#include <set>

#include <gtest/gtest.h>

#include "guestsim/touch.hpp"
#include "guestsim/units.hpp"

namespace ringpager::sim {
namespace {

TEST(Units, ParseSize) {
    EXPECT_EQ(parse_size("4096"), 4096u);
    EXPECT_EQ(parse_size("4K"), 4096u);
    EXPECT_EQ(parse_size("64M"), 64u << 20);
    EXPECT_EQ(parse_size("2MiB"), 2u << 20);
    EXPECT_EQ(parse_size("1G"), 1u << 30);
    EXPECT_FALSE(parse_size("").has_value());
    EXPECT_FALSE(parse_size("M").has_value());
    EXPECT_FALSE(parse_size("12X").has_value());
    EXPECT_EQ(parse_size_list("64M,32M,8M"), (std::vector<uint64_t>{64u << 20, 32u << 20, 8u << 20}));
    EXPECT_FALSE(parse_size_list("64M,,8M").has_value());
    EXPECT_EQ(format_size(64u << 20), "64M");
    EXPECT_EQ(format_size(4097), "4097");
}

TEST(TouchPlan, Patterns) {
    const auto seq = plan_pages(Pattern::sequential, 1000, 0.25, 1);
    std::vector<uint64_t> first(250);
    std::iota(first.begin(), first.end(), uint64_t{0});
    EXPECT_EQ(seq, first);

    const auto rnd = plan_pages(Pattern::random, 1000, 0.5, 9);
    EXPECT_EQ(rnd.size(), 500u);
    EXPECT_EQ(std::set<uint64_t>(rnd.begin(), rnd.end()).size(), 500u);
    EXPECT_TRUE(std::all_of(rnd.begin(), rnd.end(), [](uint64_t p) { return p < 1000; }));
    EXPECT_FALSE(std::is_sorted(rnd.begin(), rnd.end()));
    EXPECT_EQ(rnd, plan_pages(Pattern::random, 1000, 0.5, 9));
    EXPECT_NE(rnd, plan_pages(Pattern::random, 1000, 0.5, 10));

    EXPECT_EQ(plan_pages(Pattern::hot_set, 1000, 1.0, 3).size(), 100u);
    EXPECT_TRUE(plan_pages(Pattern::none, 1000, 1.0, 3).empty());
    EXPECT_EQ(parse_pattern("hot-set"), Pattern::hot_set);
    EXPECT_FALSE(parse_pattern("zigzag").has_value());
}

TEST(TouchPlan, LatencyPercentilesByNearestRank) {
    std::vector<uint64_t> latencies(1000);
    std::iota(latencies.begin(), latencies.end(), uint64_t{1});
    std::reverse(latencies.begin(), latencies.end());
    const LatencySummary s = summarize_latencies(latencies);
    EXPECT_EQ(s.count, 1000u);
    EXPECT_EQ(s.p50_ns, 500u);
    EXPECT_EQ(s.p99_ns, 990u);
    EXPECT_EQ(s.p999_ns, 999u);
    EXPECT_EQ(s.max_ns, 1000u);
    EXPECT_DOUBLE_EQ(s.mean_ns, 500.5);
}

}  // namespace
}  // namespace ringpager::sim
