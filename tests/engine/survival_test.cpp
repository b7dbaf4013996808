// Pins how the engine survives the ugly cases of the tenant-isolation issue:
// a graceful stop finishes restores (or names and kills the VMs it must
// leave), a peer cannot pin the fd table or flood the log at the fd limit,
// and a corrupt stored block is never installed (poisoned by default).
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <future>

#include "common/engine_fixture.hpp"
#include "common/process.hpp"
#include "common/socket.hpp"
#include "reactor/test_hooks.hpp"
#include "ringpager/snapshot.hpp"
#include "uffd/uffd.hpp"

using namespace ringpager;
using namespace ringpager::testing;

namespace {

constexpr uint64_t MiB = 1024 * 1024;

size_t count_of(const std::string& haystack, const std::string& needle) {
    size_t n = 0;
    for (size_t at = haystack.find(needle); at != std::string::npos; at = haystack.find(needle, at + 1)) n++;
    return n;
}

std::string one_region(uint64_t size) {
    return "[{\"base_host_virt_addr\":1048576,\"size\":" + std::to_string(size) +
           ",\"offset\":0,\"page_size\":4096,\"page_size_kib\":4096}]";
}

class SurvivalTest : public ::testing::Test {
protected:
    void SetUp() override {
        guestsim = tool_path("RP_GUESTSIM");
        ASSERT_FALSE(guestsim.empty()) << "RP_GUESTSIM is not set (run through meson test)";
        mem = make_image(dir, "mem", 4 * MiB);
        image = std::make_unique<sim::ExpectedImage>(std::move(sim::ExpectedImage::open(mem).value()));
        fds_before = open_fd_count();
    }

    // Every test ends with the engine gone and every fd it held closed.
    void TearDown() override {
        e.engine.reset();
        EXPECT_EQ(open_fd_count(), fds_before) << "an fd leaked";
    }

    void start(const std::function<void(EngineConfig&)>& tweak = {}) {
        e = start_engine(dir, mem, ServeMode::lazy, 2, std::chrono::milliseconds(500), nullptr, tweak);
        ASSERT_TRUE(e.engine);
    }

    bool wait_stats(const std::function<bool(const EngineStats&)>& done) { return e.engine->wait_until(done, kWait); }

    void good_vm_is_served() {
        sim::Guest guest = make_guest(e.socket, {4 * MiB});
        ASSERT_TRUE(guest.connect_and_send().ok());
        guest.touch(sim::Pattern::random, 2, 1.0, 9);
        EXPECT_EQ(guest.verify(*image).mismatches, 0u);
    }

    TempDir dir;
    std::string guestsim;
    std::string mem;
    std::unique_ptr<sim::ExpectedImage> image;
    RunningEngine e;
    size_t fds_before = 0;
};

// SIGTERM used to release every VM at once, leaving restoring VMs hung. A
// graceful stop prefetches a VM that is mid-restore until it is resident,
// then releases it: the guest then reads every page right with no pager.
TEST_F(SurvivalTest, AGracefulStopFinishesARestoreInProgress) {
    start();
    sim::Guest guest = make_guest(e.socket, {2 * MiB, 2 * MiB});
    ASSERT_TRUE(guest.connect_and_send().ok());
    guest.touch(sim::Pattern::random, 2, 0.1, 3);
    ::testing::internal::CaptureStderr();
    e.engine->request_drain(std::chrono::seconds(30));
    ASSERT_TRUE(e.engine->wait());
    const std::string log = ::testing::internal::GetCapturedStderr();
    const EngineStats s = e.engine->stats();
    EXPECT_EQ(s.vms_resident, 1u);
    EXPECT_EQ(s.vms_failed, 0u);
    ASSERT_EQ(e.engine->reports().size(), 1u);
    EXPECT_EQ(e.engine->reports()[0].end_reason, "engine stopping (restore finished)");
    EXPECT_FALSE(std::filesystem::exists(e.socket)) << "the socket stays connectable while stopping";
    // No pager any more: every page must already be there.
    const sim::VerifyReport report = guest.verify(*image);
    EXPECT_EQ(report.mismatches, 0u) << report.describe();
    EXPECT_EQ(report.pages_checked, guest.page_count());
}

// A VM the stop cannot finish in time is named in one line and, under
// --kill-on-failure, killed through its pidfd: never left hanging silently.
TEST_F(SurvivalTest, AVmLeftAtTheStopTimeoutIsNamedAndKilled) {
    start([](EngineConfig& c) { c.kill_on_failure = true; });
    ::testing::internal::CaptureStderr();
    Child vm = spawn(guestsim, {"run", "--socket", e.socket, "--regions", "4M", "--pattern", "sequential",
                                "--fraction", "0.25", "--hold", "--no-verify"});
    // The guest says when it has touched its quarter and holds.
    std::string said;
    char buf[256];
    ssize_t n;
    while (said.find("holding after 256 touches") == std::string::npos &&
           (n = read(vm.stderr_fd, buf, sizeof buf)) > 0)
        said.append(buf, static_cast<size_t>(n));
    ASSERT_NE(said.find("holding after 256 touches"), std::string::npos) << said;
    e.engine->request_drain(std::chrono::milliseconds(0));
    ASSERT_TRUE(e.engine->wait());
    const int status = vm.wait();
    const std::string log = ::testing::internal::GetCapturedStderr();
    ASSERT_TRUE(WIFSIGNALED(status)) << log;
    EXPECT_EQ(WTERMSIG(status), SIGKILL);
    EXPECT_NE(log.find("released before it was resident: the stop timeout passed; 768 of 1024 pages were never "
                       "served and it hangs on its next fault there"),
              std::string::npos)
        << log;
    EXPECT_NE(log.find("killed with SIGKILL through its pidfd (--kill-on-failure)"), std::string::npos) << log;
    EXPECT_EQ(e.engine->stats().vms_failed, 1u);
}

// fds are counted as they arrive: the second one, even in a later message
// of a handshake still in progress, refuses the peer and closes both.
TEST_F(SurvivalTest, ASecondFdInALaterMessageIsRefusedAtOnce) {
    start();
    auto uffd = Uffd::create(0);
    FileDesc extra(eventfd(0, EFD_CLOEXEC));
    ASSERT_TRUE(uffd.ok() && extra.valid());
    const size_t before = open_fd_count();
    ::testing::internal::CaptureStderr();
    {
        FileDesc sock = connect_to(e.socket);
        send_with_fds(sock.get(), "[{\"base_host_virt_addr\":", {uffd->fd()});
        send_with_fds(sock.get(), "1048576,", {extra.get()});
        ASSERT_TRUE(wait_stats([](const EngineStats& s) { return s.vms_refused == 1; }));
    }
    const std::string log = ::testing::internal::GetCapturedStderr();
    EXPECT_NE(log.find("refused: handshake carried more fds than the one userfaultfd"), std::string::npos) << log;
    EXPECT_EQ(open_fd_count(), before);
    good_vm_is_served();
}

// Pending handshakes are bounded: with --max-pending 2, silent peers hold at
// most two slots; the rest (and a good VM behind them) wait in the backlog
// and are taken as slots free up.
TEST_F(SurvivalTest, PendingHandshakesAreBounded) {
    start([](EngineConfig& c) { c.max_pending = 2; });
    std::vector<FileDesc> silent;
    for (int i = 0; i < 6; i++) silent.push_back(connect_to(e.socket));
    ASSERT_TRUE(wait_stats([](const EngineStats& s) { return s.handshakes_pending == 2; }));
    EXPECT_EQ(e.engine->stats().handshakes_pending, 2u);
    sim::Guest guest = make_guest(e.socket, {4 * MiB});
    ASSERT_TRUE(guest.connect_and_send().ok());
    ASSERT_TRUE(wait_stats([](const EngineStats& s) { return s.vms_accepted == 1; }));
    // Accepting is FIFO: the good VM came after all six silent peers, so at
    // least four of them had timed out to make room.
    EXPECT_GE(e.engine->stats().vms_refused, 4u);
    guest.touch(sim::Pattern::random, 2, 1.0, 9);
    EXPECT_EQ(guest.verify(*image).mismatches, 0u);
}

// Holds the fd table full (every free fd taken) until released.
class FdFiller {
public:
    void fill() {
        for (;;) {
            const int fd = dup(0);
            if (fd < 0) break;
            fds_.emplace_back(fd);
        }
    }
    void release_one() { fds_.pop_back(); }
    void release() { fds_.clear(); }

private:
    std::vector<FileDesc> fds_;
};

// With RLIMIT_NOFILE lowered, the engine starts (its fixed-file table sized
// to the limit); at EMFILE accepting pauses with backoff and says so in one
// line, not millions; once fds are free the waiting VM is served. Only the
// soft limit is lowered (and the engine told to keep it): raising a hard
// limit again needs CAP_SYS_RESOURCE, which a sandbox may not have.
TEST_F(SurvivalTest, AtTheFdLimitAcceptingPausesWithOneLine) {
    rlimit saved{};
    ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &saved), 0);
    const rlim_t low = static_cast<rlim_t>(open_fd_count() + 200);
    ASSERT_LT(low, saved.rlim_max);
    rlimit lowered{low, saved.rlim_max};
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &lowered), 0);
    struct Restore {
        rlimit r;
        ~Restore() { EXPECT_EQ(setrlimit(RLIMIT_NOFILE, &r), 0) << strerror(errno); }
    } restore{saved};
    start([](EngineConfig& c) { c.raise_open_files_limit = false; });
    sim::Guest guest = make_guest(e.socket, {4 * MiB});
    FdFiller filler;
    ::testing::internal::CaptureStderr();
    filler.fill();
    filler.release_one();  // the guest's socket
    ASSERT_TRUE(guest.connect_and_send().ok());
    ASSERT_TRUE(wait_stats([](const EngineStats& s) { return s.accept_pauses >= 3; }));
    filler.release();
    ASSERT_TRUE(wait_stats([](const EngineStats& s) { return s.vms_accepted == 1; }));
    guest.touch(sim::Pattern::random, 2, 1.0, 9);
    EXPECT_EQ(guest.verify(*image).mismatches, 0u);
    const std::string log = ::testing::internal::GetCapturedStderr();
    EXPECT_EQ(count_of(log, "accepting paused for"), 1u) << log;
    EXPECT_NE(log.find(": Too many open files (0 more pauses not logged)"), std::string::npos) << log;
}

// A VM accepted just before the fd table filled up could not receive its
// uffd and was refused with a false reason ("more fds than the one
// userfaultfd"). The refusal now names the real cause.
TEST_F(SurvivalTest, AnFdLostToTheFdLimitIsRefusedForThatReason) {
    start();
    auto uffd = Uffd::create(0);
    ASSERT_TRUE(uffd.ok());
    FileDesc sock = connect_to(e.socket);
    ASSERT_TRUE(wait_stats([](const EngineStats& s) { return s.handshakes_pending == 1; }));
    FdFiller filler;
    ::testing::internal::CaptureStderr();
    filler.fill();
    send_with_fds(sock.get(), one_region(MiB), {uffd->fd()});
    ASSERT_TRUE(wait_stats([](const EngineStats& s) { return s.vms_refused == 1; }));
    filler.release();
    const std::string log = ::testing::internal::GetCapturedStderr();
    EXPECT_NE(log.find("refused: the fd it sent could not be received: the engine is out of file descriptors "
                       "(raise the open-files limit)"),
              std::string::npos)
        << log;
    good_vm_is_served();
}

// A layered snapshot with one flipped byte in one stored block.
struct CorruptSnapshot {
    std::string manifest;
    std::string flat;
};

CorruptSnapshot corrupt_snapshot(const TempDir& dir) {
    CorruptSnapshot snap;
    snap.flat = make_image(dir, "flat", 4 * MiB, 0.0, 31);
    snap.manifest = dir.file("snap.rpm");
    SnapshotBuildOptions options;
    options.base_path = snap.flat;
    options.manifest_path = snap.manifest;
    SnapshotBuildReport report;
    std::string error;
    EXPECT_TRUE(build_layered_snapshot(options, report, error)) << error;
    const std::string layer = snap.manifest + ".layer0.rpl";
    FileDesc fd = std::move(FileDesc::open(layer.c_str(), O_RDWR).value());
    const off_t at = lseek(fd.get(), 0, SEEK_END) / 2;
    uint8_t byte = 0;
    EXPECT_EQ(pread(fd.get(), &byte, 1, at), 1);
    byte ^= 0x10;
    EXPECT_EQ(pwrite(fd.get(), &byte, 1, at), 1);
    return snap;
}

// Checksums are verified on every read by default. A corrupt block is never
// installed: without --kill-on-failure its page is poisoned, so the guest
// gets a memory error (SIGBUS) there instead of wrong bytes or a hang, and
// every other page is served.
TEST_F(SurvivalTest, ACorruptBlockIsPoisonedNotServed) {
    const CorruptSnapshot snap = corrupt_snapshot(dir);
    std::string error;
    std::shared_ptr<const Source> source = open_layered_source(snap.manifest, true, error);
    ASSERT_TRUE(source) << error;
    e = start_engine(dir, "", ServeMode::lazy, 2, std::chrono::seconds(30), source);
    // In the sanitizer builds the guest must die of the SIGBUS, not report it.
    for (const char* name : {"ASAN_OPTIONS", "TSAN_OPTIONS"}) {
        const char* old = getenv(name);
        setenv(name, ((old ? std::string(old) + ":" : std::string()) + "handle_sigbus=0").c_str(), 1);
    }
    ::testing::internal::CaptureStderr();
    Child vm = spawn(guestsim, {"run", "--socket", e.socket, "--mem-file", snap.flat, "--regions", "4M",
                                "--pattern", "sequential"});
    const int status = vm.wait();
    ASSERT_TRUE(e.engine->wait_released(1, kWait));
    const std::string log = ::testing::internal::GetCapturedStderr();
    ASSERT_TRUE(WIFSIGNALED(status)) << log;
    EXPECT_EQ(WTERMSIG(status), SIGBUS) << log;
    EXPECT_NE(log.find("refusing to serve corrupt snapshot data: layer "), std::string::npos) << log;
    EXPECT_NE(log.find("checksum mismatch"), std::string::npos) << log;
    EXPECT_NE(log.find("; poisoning 1 page(s) of the "), std::string::npos) << log;
    const EngineStats s = e.engine->stats();
    EXPECT_EQ(s.pages_poisoned, 1u);
    EXPECT_EQ(s.vms_failed, 0u);
}

// A second stop request cuts a graceful stop short: the reactor is parked
// on the drain's first prefetch install until request_stop() has been made,
// so the VM is certainly not resident yet, and it is released loudly.
TEST_F(SurvivalTest, RequestStopCutsAGracefulStopShort) {
    start();
    sim::Guest guest = make_guest(e.socket, {4 * MiB});
    ASSERT_TRUE(guest.connect_and_send().ok());
    guest.touch(sim::Pattern::random, 1, 0.1, 3);
    std::promise<void> stop_requested;
    std::shared_future<void> go_on = stop_requested.get_future().share();
    std::atomic<bool> parked{false};
    struct Disarm {
        ~Disarm() { test_hooks::disarm(test_hooks::Point::before_copy); }
    } disarm;
    test_hooks::arm(test_hooks::Point::before_copy, [&](uint64_t, uint64_t) {
        parked.store(true);
        parked.notify_all();
        go_on.wait();
    });
    ::testing::internal::CaptureStderr();
    e.engine->request_drain(std::chrono::seconds(60));
    parked.wait(false);
    e.engine->request_stop();
    stop_requested.set_value();
    ASSERT_TRUE(e.engine->wait());
    const std::string log = ::testing::internal::GetCapturedStderr();
    EXPECT_NE(log.find("released before it was resident: the engine stopped at once; "), std::string::npos) << log;
    EXPECT_EQ(e.engine->stats().vms_failed, 1u);
}

}  // namespace
