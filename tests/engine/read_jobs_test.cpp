// Pins ReadJobs' buffers sized to the load: an idle reactor pins one chunk of
// fault slots; a job that finds no free slot pins one more chunk; a chunk is
// given back only when a whole interval's peak fit without it; reads into a
// chunk pinned at run time land in the right slot (the buffer-table index).
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "ringpager/file_desc.hpp"
#include "io/io_loop.hpp"
#include "pager/read_jobs.hpp"

using namespace ringpager;
using namespace ringpager::io;

namespace {

constexpr uint64_t MiB = 1024 * 1024;

struct Jobs {
    std::unique_ptr<IoLoop> io;
    ReadJobs jobs;
    Jobs() {
        auto created = IoLoop::create({64, 64, 4});
        EXPECT_TRUE(created.ok());
        io = std::move(*created);
        EXPECT_TRUE(jobs.map(*io).ok());
    }
    ~Jobs() { io.reset(); }  // the ring (and its buffer table) first, as a reactor does
    std::vector<uint32_t> take(unsigned n, bool big, bool prefetch) {
        std::vector<uint32_t> slots;
        for (unsigned i = 0; i < n; i++) {
            uint32_t s = 0;
            EXPECT_TRUE(jobs.take(big, prefetch, s)) << i;
            slots.push_back(s);
        }
        return slots;
    }
    void release(const std::vector<uint32_t>& slots) {
        for (uint32_t s : slots) jobs.release(s);
    }
};

TEST(ReadJobsTest, AnIdlePoolPinsOneMegabyteAndGrowsChunkByChunk) {
    Jobs j;
    EXPECT_EQ(j.jobs.pinned_bytes(), 1 * MiB);
    EXPECT_FALSE(j.jobs.above_minimum());
    auto small = j.take(16, false, false);
    EXPECT_EQ(j.jobs.pinned_bytes(), 1 * MiB);
    auto more = j.take(1, false, false);
    EXPECT_EQ(j.jobs.pinned_bytes(), 2 * MiB);
    EXPECT_EQ(j.jobs.buffer_index(more[0]), 1);
    // A huge-page fault pins one big chunk; prefetch leaves four big slots to
    // faults, so its first job pins a second one.
    auto fault = j.take(1, true, false);
    EXPECT_EQ(j.jobs.pinned_bytes(), 2 * MiB + 8 * MiB);
    auto prefetch = j.take(1, true, true);
    EXPECT_EQ(j.jobs.pinned_bytes(), 2 * MiB + 16 * MiB);
    // The bound holds: 64 small slots and 12 big ones, never more.
    auto rest = j.take(64 - 17, false, false);
    uint32_t none = 0;
    EXPECT_FALSE(j.jobs.take(false, false, none));
    auto prefetch_rest = j.take(6, true, true);  // 12 - 4 kept for faults - 1 fault - 1 prefetch
    EXPECT_FALSE(j.jobs.take(true, true, none));
    auto last_faults = j.take(4, true, false);
    EXPECT_FALSE(j.jobs.take(true, false, none));
    EXPECT_EQ(j.jobs.pinned_bytes(), 4 * MiB + 24 * MiB);
    for (auto* v : {&small, &more, &fault, &prefetch, &rest, &prefetch_rest, &last_faults}) j.release(*v);
    EXPECT_EQ(j.jobs.busy(), 0u);
    // The interval that saw the peak gives nothing back; the quiet ones give
    // back one chunk of each size per interval, down to the minimum.
    EXPECT_TRUE(j.jobs.shrink());
    EXPECT_EQ(j.jobs.pinned_bytes(), 4 * MiB + 24 * MiB);
    int intervals = 1;
    while (j.jobs.shrink() && intervals < 10) intervals++;
    EXPECT_EQ(intervals, 3);
    EXPECT_EQ(j.jobs.pinned_bytes(), 1 * MiB);
}

TEST(ReadJobsTest, AChunkWithABusySlotOrAFullIntervalStaysPinned) {
    Jobs j;
    auto a = j.take(20, false, false);
    EXPECT_EQ(j.jobs.pinned_bytes(), 2 * MiB);
    j.release({a.begin(), a.begin() + 19});  // slot 19 (chunk 1) still busy
    j.jobs.shrink();
    j.jobs.shrink();
    EXPECT_EQ(j.jobs.pinned_bytes(), 2 * MiB);
    j.release({a[19]});
    // Low slots are taken first: a steady load of 15 jobs stays in chunk 0.
    for (int round = 0; round < 3; round++) j.release(j.take(15, false, false));
    j.jobs.shrink();
    EXPECT_EQ(j.jobs.pinned_bytes(), 1 * MiB);
}

TEST(ReadJobsTest, AReadIntoAChunkPinnedAtRunTimeLandsInItsSlot) {
    std::vector<uint8_t> bytes(2 * MiB);
    for (size_t i = 0; i < bytes.size(); i++) bytes[i] = static_cast<uint8_t>(i * 7 + i / 4096);
    FileDesc in(memfd_create("read_jobs_test", MFD_CLOEXEC));
    ASSERT_EQ(pwrite(in.get(), bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
    Jobs j;
    auto file = j.io->add_file(in.get());
    ASSERT_TRUE(file.ok());
    auto busy = j.take(8, true, false);  // two big chunks
    auto small = j.take(17, false, false);
    for (uint32_t slot : {busy.back(), small.back()}) {
        const uint32_t len = static_cast<uint32_t>(j.jobs.capacity(slot));
        memset(j.jobs.data(slot), 0xee, len);
        j.io->read_fixed(OpData{1, slot, 0, 0}, *file, j.jobs.data(slot), len, 0, j.jobs.buffer_index(slot), false);
        std::vector<Completion> out;
        while (out.empty()) {
            ASSERT_TRUE(j.io->submit_and_wait(1).ok());
            j.io->reap(out);
        }
        ASSERT_EQ(out[0].res, static_cast<int>(len)) << strerror(-out[0].res);
        EXPECT_EQ(memcmp(j.jobs.data(slot), bytes.data(), len), 0);
    }
}

}  // namespace
