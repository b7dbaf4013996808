// Pins busy polling: the adaptive window's rules, and that Ring::submit_and_poll
// really sees a completion produced while it polls (task work flagged by the
// kernel, no sleep), and gives up when nothing comes.
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <latch>
#include <thread>

#include "io/ring.hpp"
#include "reactor/busy_poll.hpp"

using namespace ringpager;
using namespace std::chrono_literals;

TEST(BusyPollWindow, StartsAtTheMaximum) {
    BusyPollWindow w(50us);
    EXPECT_EQ(w.window(), 50us);
    EXPECT_EQ(w.max(), 50us);
}

TEST(BusyPollWindow, ShrinksToZeroWhileSleepsAreLong) {
    BusyPollWindow w(40us);
    w.woke_after(1ms);
    EXPECT_EQ(w.window(), 20us);
    w.woke_after(1ms);
    EXPECT_EQ(w.window(), 10us);  // a quarter of the maximum: the smallest useful window
    w.woke_after(1ms);
    EXPECT_EQ(w.window(), 0us);
    w.woke_after(1ms);
    EXPECT_EQ(w.window(), 0us);
}

TEST(BusyPollWindow, GrowsBackWhenASleepEndsSoon) {
    BusyPollWindow w(40us);
    for (int i = 0; i < 3; i++) w.woke_after(1ms);
    ASSERT_EQ(w.window(), 0us);
    w.woke_after(15us);  // a 40 µs poll would have caught it
    EXPECT_EQ(w.window(), 10us);
    w.woke_after(15us);
    EXPECT_EQ(w.window(), 20us);
    w.woke_after(15us);
    EXPECT_EQ(w.window(), 40us);
    w.woke_after(1us);
    EXPECT_EQ(w.window(), 40us);  // capped
}

TEST(BusyPollWindow, KeepsTheWindowForSleepsInBetween) {
    BusyPollWindow w(40us);
    w.woke_after(1ms);
    ASSERT_EQ(w.window(), 20us);
    w.woke_after(30us);  // 20 + 30 > 40: a longer poll would not have paid; not long enough to shrink
    EXPECT_EQ(w.window(), 20us);
}

TEST(BusyPollWindow, ZeroMaximumNeverPolls) {
    BusyPollWindow w(0us);
    EXPECT_EQ(w.window(), 0us);
    w.woke_after(1us);
    EXPECT_EQ(w.window(), 0us);
}

namespace {

struct EventfdRead {
    int fd = -1;
    uint64_t value = 0;
    std::unique_ptr<io::Ring> ring;

    EventfdRead() {
        fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        auto created = io::Ring::create(8, 16);
        if (created) ring = std::move(*created);
    }
    ~EventfdRead() {
        ring.reset();
        if (fd >= 0) close(fd);
    }
    // A read that cannot complete until someone writes: io_uring arms a poll on it.
    void arm() {
        io_uring_sqe* sqe = ring->try_sqe();
        io_uring_prep_read(sqe, fd, &value, sizeof value, 0);
        io_uring_sqe_set_data64(sqe, 42);
    }
};

}  // namespace

TEST(RingBusyPoll, SeesACompletionThatArrivesWhilePolling) {
    EventfdRead e;
    ASSERT_GE(e.fd, 0);
    ASSERT_TRUE(e.ring);
    // This kernel (>= 5.19) supports the task-run flag busy polling relies on.
    ASSERT_TRUE(e.ring->can_busy_poll()) << e.ring->setup_mode();
    e.arm();
    std::latch polling(1);
    std::thread writer([&] {
        polling.wait();
        const uint64_t one = 1;
        ASSERT_EQ(write(e.fd, &one, sizeof one), static_cast<ssize_t>(sizeof one));
    });
    // The writer is released only after the read is submitted and armed.
    ASSERT_FALSE(e.ring->submit_and_poll(0ns));
    polling.count_down();
    const bool found = e.ring->submit_and_poll(30s);
    writer.join();
    ASSERT_TRUE(found);
    std::vector<io::RawCompletion> out;
    ASSERT_EQ(e.ring->reap(out), 1u);
    EXPECT_EQ(out[0].user_data, 42u);
    EXPECT_EQ(out[0].res, static_cast<int32_t>(sizeof(uint64_t)));
    EXPECT_EQ(e.value, 1u);
}

TEST(RingBusyPoll, GivesUpAfterTheWindowWhenNothingCompletes) {
    EventfdRead e;
    ASSERT_TRUE(e.ring);
    e.arm();
    const auto start = std::chrono::steady_clock::now();
    EXPECT_FALSE(e.ring->submit_and_poll(2ms));
    EXPECT_GE(std::chrono::steady_clock::now() - start, 2ms);
    std::vector<io::RawCompletion> out;
    EXPECT_EQ(e.ring->reap(out), 0u);
}

TEST(RingBusyPoll, ReturnsAtOnceWhenACompletionIsAlreadyThere) {
    EventfdRead e;
    ASSERT_TRUE(e.ring);
    const uint64_t one = 1;
    ASSERT_EQ(write(e.fd, &one, sizeof one), static_cast<ssize_t>(sizeof one));
    e.arm();  // completes inline at submit
    EXPECT_TRUE(e.ring->submit_and_poll(0ns));
    std::vector<io::RawCompletion> out;
    ASSERT_EQ(e.ring->reap(out), 1u);
    EXPECT_EQ(out[0].user_data, 42u);
}
