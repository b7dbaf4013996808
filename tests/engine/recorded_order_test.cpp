// Pins RecordedOrder's walk around fetches (compressed and s3:// replays): a
// span whose fetch comes back after the replay moved on is walked again before
// the replay goes on, within its own bounds; once the rest has begun, a
// fetch's pages are left to the ascending walk.
#include <gtest/gtest.h>

#include "pager/prefetch_order.hpp"

using namespace ringpager;

namespace {

// What the prefetcher does with a run it starts a fetch for: the pages are
// in flight, the order is told they were handled.
void fetch(PrefetchOrder& order, PageStates& states, uint64_t first, uint64_t pages) {
    for (uint64_t p = first; p < first + pages; p++) states.set(p, PageState::in_flight);
    order.consumed(first, pages);
}

// The fetch is back: its pages are missing again.
void fetched(PrefetchOrder& order, PageStates& states, uint64_t first, uint64_t pages) {
    for (uint64_t p = first; p < first + pages; p++) states.set(p, PageState::missing);
    order.revisit(first);
}

void install(PrefetchOrder& order, PageStates& states, uint64_t first, uint64_t pages) {
    for (uint64_t p = first; p < first + pages; p++) states.set(p, PageState::present);
    order.consumed(first, pages);
}

TEST(RecordedOrder, AFetchedSpanIsWalkedAgainBeforeTheReplayGoesOn) {
    PageStates states(128);
    // One recorded run a window: [10,12), then [50,52), then [90,92).
    auto order = make_recorded_order({{10, 2}, {50, 2}, {90, 2}}, ReplayShape{2, 0, 16});
    uint64_t page = 0;
    ASSERT_TRUE(order->next(states, page));
    EXPECT_EQ(page, 10u);
    fetch(*order, states, 10, 2);
    ASSERT_TRUE(order->next(states, page));
    EXPECT_EQ(page, 50u);   // the next window, while [10,12) is fetched
    fetch(*order, states, 50, 2);

    fetched(*order, states, 10, 2);   // a window already passed
    ASSERT_TRUE(order->next(states, page));
    EXPECT_EQ(page, 10u);
    EXPECT_EQ(order->run_limit(10), 2u);   // its span's bounds, not the rest's
    EXPECT_TRUE(order->replaying());
    install(*order, states, 10, 2);

    ASSERT_TRUE(order->next(states, page));
    EXPECT_EQ(page, 90u);   // then on where the replay was
    install(*order, states, 90, 2);
    ASSERT_TRUE(order->next(states, page));
    EXPECT_EQ(page, 0u);   // the set's windows are done: the rest, ascending
    EXPECT_FALSE(order->replaying());
    install(*order, states, 0, 10);

    // A fetch back after the rest has begun is the rest's to walk.
    fetched(*order, states, 50, 2);
    EXPECT_FALSE(order->replaying());
    ASSERT_TRUE(order->next(states, page));
    EXPECT_EQ(page, 12u);   // ascending, from where it was: 50 comes in its turn
}

TEST(RecordedOrder, AFetchInTheCurrentWindowIsWalkedFromItsFirstPage) {
    PageStates states(128);
    // Both runs in one window, 8 pages apart: two spans, [20,24) and [32,36).
    auto order = make_recorded_order({{32, 4}, {20, 4}}, ReplayShape{64, 0, 16});
    uint64_t page = 0;
    ASSERT_TRUE(order->next(states, page));
    EXPECT_EQ(page, 20u);
    install(*order, states, 20, 1);
    ASSERT_TRUE(order->next(states, page));
    EXPECT_EQ(page, 21u);
    fetch(*order, states, 21, 3);
    ASSERT_TRUE(order->next(states, page));
    EXPECT_EQ(page, 32u);
    fetched(*order, states, 21, 3);
    ASSERT_TRUE(order->next(states, page));
    EXPECT_EQ(page, 21u);
    EXPECT_EQ(order->run_limit(21), 3u);
}

}  // namespace
