// Pins the per-VM bookkeeping: page state counting and scanning, and the
// address map's behaviour under UNMAP and REMAP.
#include <gtest/gtest.h>

#include "pager/address_map.hpp"
#include "pager/page_states.hpp"
#include "pager/prefetch_order.hpp"

using namespace ringpager;

TEST(PageStates, CountsMissingPagesThroughEveryTransition) {
    PageStates s(100);
    EXPECT_EQ(s.missing_count(), 100u);
    s.set(3, PageState::in_flight);
    s.set(3, PageState::present);
    s.set(4, PageState::removed);
    EXPECT_EQ(s.missing_count(), 98u);
    EXPECT_EQ(s.get(3), PageState::present);
    EXPECT_EQ(s.get(4), PageState::removed);
    EXPECT_EQ(s.get(5), PageState::missing);
    s.set(4, PageState::missing);
    EXPECT_EQ(s.missing_count(), 99u);
    s.set(7, PageState::in_flight);
    EXPECT_EQ(s.in_flight_count(), 1u);
    s.set(7, PageState::removed);
    EXPECT_EQ(s.in_flight_count(), 0u);
}

TEST(PageStates, NextMissingSkipsFullWords) {
    PageStates s(200);
    for (uint64_t p = 0; p < 150; p++) s.set(p, p % 2 ? PageState::present : PageState::removed);
    EXPECT_EQ(s.next_missing(0), 150u);
    s.set(70, PageState::missing);
    EXPECT_EQ(s.next_missing(0), 70u);
    EXPECT_EQ(s.next_missing(71), 150u);
    for (uint64_t p = 150; p < 200; p++) s.set(p, PageState::in_flight);
    EXPECT_EQ(s.next_missing(71), 200u);
}

TEST(AddressMap, TranslatesAcrossRegionsWithGaps) {
    AddressMap map({Region{0x100000, 0x4000, 0, 4096}, Region{0x200000, 0x2000, 0x4000, 4096}});
    EXPECT_EQ(map.total_pages(), 6u);
    const AddressExtent* e = map.find_addr(0x201000);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->first_page, 4u);
    EXPECT_EQ(map.find_addr(0x104000), nullptr);  // the gap
    auto place = map.place_of(5);
    ASSERT_TRUE(place);
    EXPECT_EQ(place->addr, 0x201000u);
    EXPECT_EQ(place->file_offset, 0x5000u);
    EXPECT_EQ(place->extent_end_page, 6u);
}

TEST(AddressMap, UnmapSplitsAndRemapMovesPagesWithTheirIdentity) {
    AddressMap map({Region{0x100000, 0x8000, 0, 4096}});
    auto removed = map.unmap(0x102000, 0x104000);
    ASSERT_EQ(removed.size(), 1u);
    EXPECT_EQ(removed[0].first_page, 2u);
    EXPECT_EQ(map.find_addr(0x102000), nullptr);
    EXPECT_FALSE(map.place_of(3));
    map.remap(0x104000, 0x900000, 0x4000);
    EXPECT_EQ(map.find_addr(0x105000), nullptr);
    auto place = map.place_of(5);
    ASSERT_TRUE(place);
    EXPECT_EQ(place->addr, 0x901000u);
    EXPECT_EQ(place->file_offset, 0x5000u);
}

TEST(PrefetchOrder, AscendingSkipsPagesThatAreNotMissing) {
    PageStates s(10);
    s.set(0, PageState::present);
    s.set(1, PageState::removed);
    auto order = make_ascending_order();
    uint64_t first = 0;
    ASSERT_TRUE(order->next(s, first));
    EXPECT_EQ(first, 2u);
    order->consumed(2, 8);
    EXPECT_FALSE(order->next(s, first));
}

TEST(PrefetchOrder, RecordedRangesComeFirstThenTheRest) {
    PageStates s(10);
    auto order = make_recorded_order({{6, 2}});
    uint64_t first = 0;
    ASSERT_TRUE(order->next(s, first));
    EXPECT_EQ(first, 6u);
    s.set(6, PageState::present);
    s.set(7, PageState::present);
    order->consumed(6, 2);
    ASSERT_TRUE(order->next(s, first));
    EXPECT_EQ(first, 0u);
}

// Coalesced replay: a window of the set (in recorded order) is sorted by page
// and runs closer than the gap are joined into one span, one read; the next
// window follows only once this one is walked.
TEST(PrefetchOrder, AWindowOfTheSetIsSortedAndCloseRunsShareASpan) {
    PageStates states(200);
    // Windows of 5 pages: {50}, {10}, {14,2}, {30}, then {5} in the next one.
    auto order = make_recorded_order({{50, 1}, {10, 1}, {14, 2}, {30, 1}, {5, 1}},
                                     ReplayShape{5, 3, 64});
    uint64_t first = 0;
    ASSERT_TRUE(order->next(states, first));
    EXPECT_EQ(first, 10u);  // sorted: 10 and 14-15 are 3 pages apart, one span
    EXPECT_EQ(order->run_limit(first), 6u);
    EXPECT_TRUE(order->replaying());
    order->consumed(10, 6);
    ASSERT_TRUE(order->next(states, first));
    EXPECT_EQ(first, 30u);  // 14 pages past 15: a span of its own
    EXPECT_EQ(order->run_limit(first), 1u);
    order->consumed(30, 1);
    ASSERT_TRUE(order->next(states, first));
    EXPECT_EQ(first, 50u);
    order->consumed(50, 1);
    ASSERT_TRUE(order->next(states, first));
    EXPECT_EQ(first, 5u);  // the second window
    EXPECT_EQ(order->run_limit(first), 1u);
    order->consumed(5, 1);
    ASSERT_TRUE(order->next(states, first));
    EXPECT_FALSE(order->replaying());
    EXPECT_EQ(order->run_limit(first), UINT64_MAX);
}

// A span never grows past span_pages: the next run starts a new one.
TEST(PrefetchOrder, ASpanStopsAtItsBound) {
    PageStates states(100);
    auto order = make_recorded_order({{0, 4}, {5, 4}, {10, 4}}, ReplayShape{100, 2, 10});
    uint64_t first = 0;
    ASSERT_TRUE(order->next(states, first));
    EXPECT_EQ(first, 0u);
    EXPECT_EQ(order->run_limit(first), 9u);  // 0-8; joining 10-13 would make 14
    order->consumed(0, 9);
    ASSERT_TRUE(order->next(states, first));
    EXPECT_EQ(first, 10u);
    EXPECT_EQ(order->run_limit(first), 4u);
}

TEST(PrefetchOrder, RecordedRunsLimitTheRunThenTheRestIsUnlimited) {
    PageStates states(16);
    auto order = make_recorded_order({{6, 2}, {1, 1}});
    uint64_t first = 0;
    ASSERT_TRUE(order->next(states, first));
    EXPECT_EQ(first, 6u);
    EXPECT_EQ(order->run_limit(first), 2u);
    order->consumed(6, 2);
    ASSERT_TRUE(order->next(states, first));
    EXPECT_EQ(first, 1u);
    EXPECT_EQ(order->run_limit(first), 1u);
    order->consumed(1, 1);
    ASSERT_TRUE(order->next(states, first));
    EXPECT_EQ(order->run_limit(first), UINT64_MAX);
}
