// Pins how rp-bench turns several rounds of one scenario into the figures and
// ratios it reports: medians over rounds, ratios paired with the baseline of
// the same round, n/a values left out, counts summed, failures kept.
#include <gtest/gtest.h>

#include <cmath>

#include "report.hpp"

using namespace ringpager::bench;

namespace {

ScenarioResult round_result(double done, double done_ratio, double p99, uint64_t pages) {
    ScenarioResult r;
    r.spec = {HandlerKind::lazy, Workload::random25, 10, 2, 128ull << 20};
    r.figures.fill(kNotApplicable);
    r.ratios.fill(kNotApplicable);
    r.figure(Figure::done) = done;
    r.ratios[static_cast<size_t>(Figure::done)] = done_ratio;
    r.figure(Figure::p99) = p99;
    r.pages_verified = pages;
    r.handler_exit = "exit 0";
    return r;
}

double ratio(const ScenarioResult& r, Figure f) { return r.ratios[static_cast<size_t>(f)]; }

}  // namespace

TEST(CombineRounds, FiguresAreMediansAndRatiosTheMedianOfPairedRatios) {
    // Round 2 ran on a loaded machine: both handlers slow, the paired ratio steady.
    const ScenarioResult combined = combine_rounds({round_result(1.0, 0.90, 100, 8192),
                                                    round_result(3.0, 0.80, 300, 8192),
                                                    round_result(1.2, 1.10, 120, 8192)});
    EXPECT_DOUBLE_EQ(combined.figure(Figure::done), 1.2);
    EXPECT_DOUBLE_EQ(ratio(combined, Figure::done), 0.90);  // not 1.2 / median of the baselines
    EXPECT_DOUBLE_EQ(combined.figure(Figure::p99), 120);
    EXPECT_TRUE(std::isnan(ratio(combined, Figure::p99)));  // n/a in every round stays n/a
    EXPECT_EQ(combined.pages_verified, 3u * 8192);
    ASSERT_EQ(combined.round_figures.size(), 3u);
    EXPECT_DOUBLE_EQ(combined.round_figures[1][static_cast<size_t>(Figure::done)], 3.0);
    ASSERT_EQ(combined.round_ratios.size(), 3u);
    EXPECT_DOUBLE_EQ(combined.round_ratios[2][static_cast<size_t>(Figure::done)], 1.10);
    EXPECT_TRUE(combined.ok());
}

TEST(CombineRounds, AnEvenCountAveragesTheMiddleTwoAndNaIsLeftOut) {
    const ScenarioResult combined = combine_rounds({round_result(1.0, 0.5, 10, 1), round_result(2.0, kNotApplicable, 20, 1),
                                                    round_result(4.0, 1.5, kNotApplicable, 1),
                                                    round_result(3.0, 1.0, 40, 1)});
    EXPECT_DOUBLE_EQ(combined.figure(Figure::done), 2.5);
    EXPECT_DOUBLE_EQ(ratio(combined, Figure::done), 1.0);  // median of 0.5, 1.5, 1.0
    EXPECT_DOUBLE_EQ(combined.figure(Figure::p99), 20);     // median of 10, 20, 40
}

TEST(CombineRounds, AFailureOrMismatchInAnyRoundFailsTheScenario) {
    ScenarioResult bad = round_result(2.0, 1.0, 20, 100);
    bad.failures.push_back("handler did not shut down cleanly (signal 15 (Terminated))");
    bad.handler_exit = "signal 15";
    ScenarioResult wrong = round_result(2.0, 1.0, 20, 100);
    wrong.mismatches = 3;
    wrong.verify_detail = "vm 1: 3 pages differ";
    const ScenarioResult combined = combine_rounds({round_result(1.0, 1.0, 10, 100), bad, wrong});
    EXPECT_FALSE(combined.ok());
    ASSERT_EQ(combined.failures.size(), 1u);
    EXPECT_EQ(combined.failures[0], "round 2: handler did not shut down cleanly (signal 15 (Terminated))");
    EXPECT_EQ(combined.mismatches, 3u);
    EXPECT_EQ(combined.verify_detail, "round 3: vm 1: 3 pages differ");
    EXPECT_EQ(combined.handler_exit, "signal 15");
}

TEST(CombineRounds, OneRoundIsReportedAsItIs) {
    const ScenarioResult one = round_result(1.5, 0.7, 15, 42);
    const ScenarioResult combined = combine_rounds({one});
    EXPECT_DOUBLE_EQ(combined.figure(Figure::done), 1.5);
    EXPECT_DOUBLE_EQ(ratio(combined, Figure::done), 0.7);
    EXPECT_TRUE(combined.round_figures.empty());
    EXPECT_EQ(combined.pages_verified, 42u);
}
