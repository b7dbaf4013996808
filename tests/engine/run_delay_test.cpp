// ThreadRunDelay: the run delay of VM processes' threads, read from a
// /proc tree the test writes (PID/task/TID/schedstat), and from the
// kernel's own /proc for this process.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/engine_fixture.hpp"
#include "reactor/run_delay.hpp"

using namespace ringpager;
using namespace ringpager::testing;

namespace {

// A /proc tree under a temp dir: schedstat files the test writes.
struct FakeProc {
    TempDir dir;
    std::string root = dir.file("proc");

    // Thread `tid` of `pid` has waited `run_delay_us` so far.
    void thread(pid_t pid, pid_t tid, uint64_t run_delay_us) const {
        const std::string task = root + "/" + std::to_string(pid) + "/task/" + std::to_string(tid);
        std::filesystem::create_directories(task);
        std::ofstream(task + "/schedstat") << "123456 " << run_delay_us * 1000 << " 42\n";
    }
    void gone(pid_t pid, pid_t tid) const {
        std::filesystem::remove_all(root + "/" + std::to_string(pid) + "/task/" + std::to_string(tid));
    }
};

std::optional<uint64_t> total(ThreadRunDelay& delay, std::vector<pid_t> pids) {
    std::string error;
    auto t = delay.total_us(pids, error);
    if (t) {
        EXPECT_EQ(error, "");
    }
    return t;
}

}  // namespace

TEST(ThreadRunDelay, ParsesTheSecondFieldOfSchedstat) {
    EXPECT_EQ(ThreadRunDelay::parse_schedstat("228064883 81996696 1660\n"), 81996696u);
    EXPECT_EQ(ThreadRunDelay::parse_schedstat("0 0 1"), 0u);
    for (const char* bad : {"", "\n", "1 2", "1 2\n", "1  2 3", "1 2 3 4", "a 2 3", "1 -2 3", "1 2 x",
                            "1 99999999999999999999999 3", " 1 2 3", "1 2 3\n\n"})
        EXPECT_EQ(ThreadRunDelay::parse_schedstat(bad), std::nullopt) << bad;
}

// Each call adds what the threads seen last time waited since; a thread
// seen first counts from then, one gone counts no more, and a total that
// went back (a tid reused) adds nothing.
TEST(ThreadRunDelay, AddsWhatTheThreadsSeenBeforeWaitedSince) {
    FakeProc proc;
    proc.thread(100, 100, 5000);
    proc.thread(100, 101, 7000);
    ThreadRunDelay delay(proc.root);
    EXPECT_EQ(total(delay, {100}), 0u);
    proc.thread(100, 100, 6000);
    proc.thread(100, 101, 7500);
    EXPECT_EQ(total(delay, {100}), 1500u);
    proc.gone(100, 101);
    proc.thread(100, 102, 90000);  // new: counts from here
    proc.thread(100, 100, 6200);
    EXPECT_EQ(total(delay, {100}), 1700u);
    proc.thread(100, 102, 90300);
    proc.thread(100, 100, 10);  // went back
    EXPECT_EQ(total(delay, {100}), 2000u);
}

TEST(ThreadRunDelay, ReadsEachProcessOnceAndAtMostFourOfThem) {
    FakeProc proc;
    for (pid_t pid = 1; pid <= 6; pid++) proc.thread(pid, pid, 0);
    ThreadRunDelay delay(proc.root);
    const std::vector<pid_t> pids = {1, 1, 2, 3, 4, 5, 6};
    EXPECT_EQ(total(delay, pids), 0u);
    for (pid_t pid = 1; pid <= 6; pid++) proc.thread(pid, pid, 1000);
    EXPECT_EQ(total(delay, pids), 4000u);  // pid 1 once; 5 and 6 not read
}

// Sixteen threads in all: a process with more leaves none to the next.
TEST(ThreadRunDelay, ReadsAtMostSixteenThreadsInAll) {
    FakeProc proc;
    for (pid_t tid = 1000; tid < 1040; tid++) proc.thread(7, tid, 0);
    proc.thread(8, 8, 0);
    ThreadRunDelay delay(proc.root);
    EXPECT_EQ(total(delay, {7, 8}), 0u);
    for (pid_t tid = 1000; tid < 1040; tid++) proc.thread(7, tid, 10);
    proc.thread(8, 8, 5000);
    EXPECT_EQ(total(delay, {7, 8}), ThreadRunDelay::kMaxThreads * 10);
    // With fewer threads the next process is read too.
    FakeProc small;
    for (pid_t tid = 1; tid <= 3; tid++) small.thread(7, tid, 0);
    small.thread(8, 8, 0);
    ThreadRunDelay delay2(small.root);
    EXPECT_EQ(total(delay2, {7, 8}), 0u);
    for (pid_t tid = 1; tid <= 3; tid++) small.thread(7, tid, 10);
    small.thread(8, 8, 5000);
    EXPECT_EQ(total(delay2, {7, 8}), 5030u);
}

// Entries that are not threads and files that are not schedstat's are
// passed over; a process that cannot be read at all is named.
TEST(ThreadRunDelay, PassesOverWhatIsNotAThreadsSchedstat) {
    FakeProc proc;
    proc.thread(5, 5, 100);
    std::filesystem::create_directories(proc.root + "/5/task/self");
    std::filesystem::create_directories(proc.root + "/5/task/0123");
    std::ofstream(proc.root + "/5/task/0123/schedstat") << "1 2 3\n";
    std::filesystem::create_directories(proc.root + "/5/task/77");
    std::ofstream(proc.root + "/5/task/77/schedstat") << "not a schedstat\n";
    std::filesystem::create_directories(proc.root + "/5/task/78");
    std::ofstream(proc.root + "/5/task/78/schedstat") << "1 " << std::string(200, '2') << " 3\n";
    ThreadRunDelay delay(proc.root);
    EXPECT_EQ(total(delay, {5}), 0u);
    proc.thread(5, 5, 400);
    EXPECT_EQ(total(delay, {5, 6}), 300u);  // 6 cannot be read; 5 can

    std::string error;
    EXPECT_EQ(delay.total_us(std::vector<pid_t>{6}, error), std::nullopt);
    EXPECT_EQ(error, proc.root + "/6/task: open: No such file or directory");
    EXPECT_EQ(delay.total_us(std::vector<pid_t>{}, error), std::nullopt);
    EXPECT_EQ(error, "no VM process to read");
}

TEST(ThreadRunDelay, ReadsTheKernelsProc) {
    ThreadRunDelay delay("/proc");
    const auto a = total(delay, {getpid()});
    const auto b = total(delay, {getpid()});
    ASSERT_TRUE(a && b);
    EXPECT_LE(*a, *b);
}
