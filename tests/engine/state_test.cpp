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
