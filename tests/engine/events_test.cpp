// Pins SPEC §2's event rules against the real kernel: a removed page reads
// zeros (never stale snapshot bytes, even when its copy was already decided),
// EAGAIN is retried not dropped, and randomized fault/prefetch/REMOVE
// interleavings always leave every page as the model says.
#include <gtest/gtest.h>
#include <poll.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>

#include <condition_variable>
#include <future>
#include <mutex>
#include <random>
#include <thread>

#include "common/engine_fixture.hpp"
#include "common/parker.hpp"
#include "reactor/test_hooks.hpp"

using namespace ringpager;
using namespace ringpager::testing;

namespace {

constexpr uint64_t MiB = 1024 * 1024;


struct HookGuard {
    test_hooks::Point point;
    ~HookGuard() { test_hooks::disarm(point); }
};

// Installs `page` (with its true bytes) behind the engine's back so it can
// serve as a probe: once present, UFFDIO_ZEROPAGE on it answers EEXIST, or
// EAGAIN while the kernel holds an unread non-cooperative event (a REMOVE).
void install_probe_page(const sim::Guest& guest, const sim::ExpectedImage& image, uint64_t page) {
    const auto bytes = image.bytes(guest.file_offset_of_page(page), 4096);
    uffdio_copy copy{};
    copy.dst = reinterpret_cast<uint64_t>(guest.page_address(page));
    copy.src = reinterpret_cast<uint64_t>(bytes.data());
    copy.len = 4096;
    copy.mode = UFFDIO_COPY_MODE_DONTWAKE;
    ASSERT_EQ(ioctl(guest.uffd(), UFFDIO_COPY, &copy), 0) << strerror(errno);
}

// Returns once the kernel has queued a REMOVE that nobody has read yet.
bool wait_remove_pending(const sim::Guest& guest, uint64_t probe_page) {
    const auto deadline = std::chrono::steady_clock::now() + kWait;
    while (std::chrono::steady_clock::now() < deadline) {
        uffdio_zeropage z{};
        z.range.start = reinterpret_cast<uint64_t>(guest.page_address(probe_page));
        z.range.len = 4096;
        z.mode = UFFDIO_ZEROPAGE_MODE_DONTWAKE;
        if (ioctl(guest.uffd(), UFFDIO_ZEROPAGE, &z) < 0 && errno == EAGAIN) return true;
        std::this_thread::yield();
    }
    return false;
}

bool page_is_zero(const sim::Guest& guest, uint64_t page) {
    const auto* bytes = reinterpret_cast<const volatile uint8_t*>(guest.page_address(page));
    for (size_t i = 0; i < guest.page_size_bytes(); i++)
        if (bytes[i] != 0) return false;
    return true;
}

// A page whose snapshot bytes are not all zero, so a stale copy would show.
uint64_t non_zero_page(const sim::Guest& guest, const sim::ExpectedImage& image, uint64_t from) {
    for (uint64_t p = from; p < guest.page_count(); p++)
        if (image.hash(guest.file_offset_of_page(p), 4096) != sim::zero_hash(4096)) return p;
    return UINT64_MAX;
}

class EventsTest : public ::testing::Test {
protected:
    void start(ServeMode mode = ServeMode::lazy, uint64_t size = 4 * MiB) {
        mem = make_image(dir, "mem", size, 0.2);
        auto opened = sim::ExpectedImage::open(mem);
        ASSERT_TRUE(opened.ok());
        image = std::make_unique<sim::ExpectedImage>(std::move(opened.value()));
        e = start_engine(dir, mem, mode, 1);
    }
    TempDir dir;
    std::string mem;
    std::unique_ptr<sim::ExpectedImage> image;
    RunningEngine e;
};

// The stale-source race: the read for P is done and its copy decided when
// the guest discards P. The copy must not install snapshot bytes afterwards.
TEST_F(EventsTest, CopyDecidedBeforeRemoveInstallsZerosNotStaleBytes) {
    start();
    sim::Guest guest = make_guest(e.socket, {4 * MiB});
    ASSERT_TRUE(guest.connect_and_send().ok());
    const uint64_t probe = 0;
    install_probe_page(guest, *image, probe);
    const uint64_t page = non_zero_page(guest, *image, 10);
    ASSERT_NE(page, UINT64_MAX);

    Parker parker;
    std::atomic<bool> once{false};
    HookGuard guard{test_hooks::Point::before_copy};
    test_hooks::arm(test_hooks::Point::before_copy, [&](uint64_t, uint64_t first_page) {
        if (first_page == page && !once.exchange(true)) parker.park();
    });
    std::thread vcpu([&] { guest.touch_pages({page}, 1); });
    ASSERT_TRUE(parker.wait_parked());
    // The guest discards P while the reactor is about to copy it.
    auto discard = std::async(std::launch::async, [&] { return guest.discard(page * 4096, 4096).ok(); });
    ASSERT_TRUE(wait_remove_pending(guest, probe));
    parker.release();
    vcpu.join();
    // madvise does not deadlock against the in-flight copy.
    ASSERT_EQ(discard.wait_for(kWait), std::future_status::ready);
    EXPECT_TRUE(discard.get());
    EXPECT_TRUE(page_is_zero(guest, page));
    EXPECT_GE(e.engine->stats().eagain_retries, 1u);  // the copy met EAGAIN and was retried
    EXPECT_EQ(guest.verify(*image).mismatches, 0u);
}

// A fault and a REMOVE of the same page read in one batch: the REMOVE wins.
TEST_F(EventsTest, RemoveAndFaultInOneBatchServeZeros) {
    start();
    sim::Guest guest = make_guest(e.socket, {4 * MiB});
    ASSERT_TRUE(guest.connect_and_send().ok());
    const uint64_t probe = 0;
    install_probe_page(guest, *image, probe);
    const uint64_t trigger = 5;
    const uint64_t page = non_zero_page(guest, *image, 20);

    Parker parker;
    std::atomic<bool> once{false};
    HookGuard guard{test_hooks::Point::after_event_drain};
    test_hooks::arm(test_hooks::Point::after_event_drain, [&](uint64_t, uint64_t) {
        if (!once.exchange(true)) parker.park();
    });
    std::thread first([&] { guest.touch_pages({trigger}, 1); });
    ASSERT_TRUE(parker.wait_parked());  // the reactor holds no uffd read while parked here
    auto discard = std::async(std::launch::async, [&] { return guest.discard(page * 4096, 4096).ok(); });
    ASSERT_TRUE(wait_remove_pending(guest, probe));
    std::thread second([&] { guest.touch_pages({page}, 1); });
    parker.release();
    first.join();
    second.join();
    ASSERT_EQ(discard.wait_for(kWait), std::future_status::ready);
    EXPECT_TRUE(page_is_zero(guest, page));
    EXPECT_EQ(guest.verify(*image).mismatches, 0u);
}

TEST_F(EventsTest, BalloonDiscardOfAnEighthAfterTouchingReadsZeros) {
    start(ServeMode::lazy, 16 * MiB);
    sim::Guest guest = make_guest(e.socket, {8 * MiB, 8 * MiB});
    ASSERT_TRUE(guest.connect_and_send().ok());
    guest.touch(sim::Pattern::random, 2, 1.0, 3);
    auto discarded = guest.discard_random(0.125, 64 * 1024, 4);
    ASSERT_TRUE(discarded.ok());
    EXPECT_GE(discarded->size(), guest.page_count() / 8 - 16);
    guest.touch_pages(*discarded, 2);
    for (uint64_t p : *discarded) ASSERT_TRUE(page_is_zero(guest, p)) << p;
    const sim::VerifyReport report = guest.verify(*image);
    EXPECT_EQ(report.mismatches, 0u) << report.describe();
    EXPECT_EQ(report.zero_pages_checked, discarded->size());
    EXPECT_GE(e.engine->stats().removed_pages, discarded->size());
}

TEST_F(EventsTest, DiscardBeforeFirstTouchReadsZerosWithoutReadingTheSnapshot) {
    start();
    sim::Guest guest = make_guest(e.socket, {4 * MiB});
    ASSERT_TRUE(guest.connect_and_send().ok());
    ASSERT_TRUE(guest.discard(0, 4 * MiB).ok());
    guest.touch(sim::Pattern::sequential, 2, 1.0, 1);
    EXPECT_EQ(guest.verify(*image).mismatches, 0u);
    EXPECT_EQ(e.engine->stats().bytes_read, 0u);
}

TEST_F(EventsTest, HugePageBalloonReadsZeros) {
    ASSERT_EQ(sim::ensure_hugepages(64), "");
    start(ServeMode::lazy, 32 * MiB);
    sim::Guest guest = make_guest(e.socket, {32 * MiB}, 2 * MiB);
    ASSERT_TRUE(guest.connect_and_send().ok());
    guest.touch(sim::Pattern::random, 2, 1.0, 5);
    ASSERT_TRUE(guest.discard(4 * MiB, 8 * MiB).ok());
    guest.touch(sim::Pattern::sequential, 2, 1.0, 6);
    const sim::VerifyReport report = guest.verify(*image);
    EXPECT_EQ(report.mismatches, 0u) << report.describe();
    EXPECT_EQ(report.zero_pages_checked, 4u);
}

TEST_F(EventsTest, PrefetcherSkipsRemovedPages) {
    start(ServeMode::prefetch, 16 * MiB);
    sim::Guest guest = make_guest(e.socket, {16 * MiB});
    // The REMOVE is queued in the uffd before the engine has it, so the engine
    // reads it in its first turns, long before its ascending walk reaches the
    // second half (discarding after the handshake raced the prefetcher).
    std::thread balloon([&] { EXPECT_TRUE(guest.discard(8 * MiB, 8 * MiB).ok()); });
    pollfd queued{guest.uffd(), POLLIN, 0};
    ASSERT_EQ(poll(&queued, 1, 30000), 1);
    ASSERT_TRUE(guest.connect_and_send().ok());
    balloon.join();
    // No vCPU touches anything: the prefetcher alone makes the VM resident.
    ASSERT_TRUE(e.engine->wait_until([](const EngineStats& s) { return s.vms_resident == 1; }, kWait));
    const EngineStats s = e.engine->stats();
    EXPECT_LE(s.bytes_read, 8 * MiB);  // the removed half was never read
    EXPECT_EQ(s.pages_prefetched + (s.pages_zeroed), 8 * MiB / 4096);
    const sim::VerifyReport report = guest.verify(*image);
    EXPECT_EQ(report.mismatches, 0u) << report.describe();
}

// Randomized interleavings: seeded runs of vCPU faults, the prefetcher and
// REMOVEs on random ranges. After each run every page must be the snapshot's
// bytes, or zeros where the guest discarded it.
TEST_F(EventsTest, RandomizedFaultPrefetchRemoveInterleavingsMatchTheModel) {
    mem = make_image(dir, "mem", 1 * MiB, 0.3, 99);
    auto opened = sim::ExpectedImage::open(mem);
    ASSERT_TRUE(opened.ok());
    std::string error;
    std::shared_ptr<const Source> source = open_raw_source(mem, error);
    RunningEngine lazy = start_engine(dir, mem, ServeMode::lazy, 2, std::chrono::seconds(30), source);
    TempDir other;
    RunningEngine prefetch = start_engine(other, mem, ServeMode::prefetch, 2, std::chrono::seconds(30), source);
    const int runs = 1000;
    uint64_t zero_pages = 0;
    for (int seed = 0; seed < runs; seed++) {
        std::mt19937_64 rng(seed);
        const std::string& socket = seed % 2 ? prefetch.socket : lazy.socket;
        const uint64_t pages = 32 + rng() % 96;
        sim::Guest guest = make_guest(socket, {pages * 4096});
        ASSERT_TRUE(guest.connect_and_send().ok());
        for (int step = 0; step < 4; step++) {
            std::vector<uint64_t> touch;
            for (uint64_t p = 0; p < pages; p++)
                if (rng() % 3 == 0) touch.push_back(p);
            std::thread vcpus([&] { guest.touch_pages(touch, 2); });
            const uint64_t first = rng() % pages, len = 1 + rng() % 8;
            ASSERT_TRUE(guest.discard(first * 4096, std::min(len, pages - first) * 4096).ok());
            vcpus.join();
        }
        const sim::VerifyReport report = guest.verify(*opened);
        ASSERT_EQ(report.mismatches, 0u) << "seed " << seed << ": " << report.describe();
        zero_pages += report.zero_pages_checked;
    }
    EXPECT_GT(zero_pages, 0u);
    EXPECT_TRUE(lazy.engine->wait_released(runs / 2, kWait));
    EXPECT_TRUE(prefetch.engine->wait_released(runs / 2, kWait));
}

}  // namespace
