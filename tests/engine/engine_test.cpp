// Pins end-to-end serving: simulated Firecracker guests restored by the
// engine see exactly the snapshot's bytes, for every page, in every shape.
#include <gtest/gtest.h>
#include <optional>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <atomic>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "common/engine_fixture.hpp"
#include "guestsim/touch.hpp"
#include "reactor/test_hooks.hpp"

using namespace ringpager;
using namespace ringpager::testing;

namespace {

constexpr uint64_t MiB = 1024 * 1024;

void restore_and_verify(const std::string& socket, const sim::ExpectedImage& image, std::vector<uint64_t> regions,
                        sim::Pattern pattern, unsigned vcpus, uint64_t seed,
                        sim::HandshakeShape shape = sim::HandshakeShape::v1_12, uint64_t page_size = 4096) {
    sim::Guest guest = make_guest(socket, std::move(regions), page_size, shape);
    ASSERT_TRUE(guest.connect_and_send().ok());
    const sim::TouchReport touch = guest.touch(pattern, vcpus, 1.0, seed);
    EXPECT_EQ(touch.pages_touched, guest.page_count());
    const sim::VerifyReport verify = guest.verify(image);
    EXPECT_EQ(verify.pages_checked, guest.page_count());
    EXPECT_EQ(verify.mismatches, 0u) << verify.describe();
}

class EngineTest : public ::testing::Test {
protected:
    TempDir dir;
};

TEST_F(EngineTest, SingleRegionRandomTouchTwoVcpusIsByteExact) {
    const std::string mem = make_image(dir, "mem", 32 * MiB);
    auto image = sim::ExpectedImage::open(mem);
    ASSERT_TRUE(image.ok());
    RunningEngine e = start_engine(dir, mem);
    restore_and_verify(e.socket, *image, {32 * MiB}, sim::Pattern::random, 2, 1);
    const EngineStats s = e.engine->stats();
    EXPECT_EQ(s.vms_accepted, 1u);
    EXPECT_GT(s.faults, 0u);
    // Every page is installed exactly once, by copy or zero fill.
    EXPECT_EQ(s.pages_copied + s.pages_zeroed, 32 * MiB / 4096);
    EXPECT_GT(s.page_cache_hits, 0u);  // the file is cached: faults take the fast path
}

// Prefetch reads of the size the prefetcher uses while faults flow (64 KiB)
// are copied inline from the page cache, like faults' reads, not by an
// io-wq worker: one page-cache hit per batch. Bigger batches (a quiet VM)
// still go to the worker: only the 64 KiB batches of the first turns (faults
// count as recent just after the handshake) are hits then.
TEST_F(EngineTest, ShortPrefetchReadsComeInlineFromThePageCache) {
    const std::string mem = make_image(dir, "mem", 32 * MiB, 0.0, 11);  // no zero page: every batch is read
    auto image = sim::ExpectedImage::open(mem);
    ASSERT_TRUE(image.ok());
    for (const uint64_t batch : {uint64_t{64 * 1024}, uint64_t{512 * 1024}}) {
        SCOPED_TRACE(batch);
        RunningEngine e = start_engine(dir, mem, ServeMode::prefetch, 1, std::chrono::seconds(30), nullptr,
                                       [&](EngineConfig& c) { c.prefetch_batch_bytes = batch; });
        sim::Guest guest = make_guest(e.socket, {32 * MiB});
        ASSERT_TRUE(guest.connect_and_send().ok());
        // No vCPU touches anything: every install is the prefetcher's.
        ASSERT_TRUE(e.engine->wait_until([](const EngineStats& s) { return s.vms_resident == 1; }, kWait));
        const EngineStats s = e.engine->stats();
        EXPECT_EQ(s.bytes_read, 32 * MiB);
        EXPECT_EQ(s.pages_prefetched, 32 * MiB / 4096);
        if (batch == 64 * 1024) EXPECT_EQ(s.page_cache_hits, 32 * MiB / batch);
        else EXPECT_LT(s.page_cache_hits, 32 * MiB / (64 * 1024));
        const sim::VerifyReport report = guest.verify(*image);
        EXPECT_EQ(report.mismatches, 0u) << report.describe();
        guest.disconnect();
    }
}

// A fault that arrives while the reactor installs prefetch runs goes before
// the next run, even in a turn that has just read and served another fault
// (the uffd read is armed again as soon as its messages are taken, and the
// prefetcher asks for fault work between runs). Built deterministically:
// vCPU 1 faults on far pages one at a time; during the first prefetch
// install in a turn that served one of them, the test makes vCPU 2 fault and
// waits until its message is queued. From there to vCPU 2's page, only
// faulted pages may be installed, no prefetch run.
TEST_F(EngineTest, AFaultArrivingDuringPrefetchInstallsGoesBeforeTheNextRun) {
    const std::string mem = make_image(dir, "mem", 128 * MiB, 0.0, 12);  // no zero page: every run is read
    auto image = sim::ExpectedImage::open(mem);
    ASSERT_TRUE(image.ok());
    // At the end of memory: the ascending walk reaches them long after.
    constexpr uint64_t kFirst = 32500, kVcpu1Pages = 64, kPage2 = 32700;
    const auto faulted = [&](uint64_t page) { return page == kPage2 || (page >= kFirst && page < kFirst + kVcpu1Pages); };
    std::mutex mu;
    uint64_t turn = 0, fault_turn = UINT64_MAX;
    std::vector<uint64_t> installs, install_turns;  // first page of each install, in order; its turn
    size_t trigger_at = SIZE_MAX;
    bool message_queued = false;
    std::optional<sim::Guest> guest;
    std::thread vcpu2;
    std::condition_variable turned;
    test_hooks::arm_io([&](unsigned, io::IoFaults&) {
        std::lock_guard lock(mu);
        turn++;
        turned.notify_all();
    });
    test_hooks::arm(test_hooks::Point::before_copy, [&](uint64_t, uint64_t page) {
        std::lock_guard lock(mu);
        installs.push_back(page);
        install_turns.push_back(turn);
        if (faulted(page)) fault_turn = turn;
        if (trigger_at != SIZE_MAX || turn != fault_turn || faulted(page)) return;
        // The first prefetch install in a turn that served a fault.
        trigger_at = installs.size() - 1;
        vcpu2 = std::thread([&] { guest->touch_pages({kPage2}, 1); });
        pollfd queued{guest->uffd(), POLLIN, 0};
        message_queued = poll(&queued, 1, static_cast<int>(kWait.count() * 1000)) == 1;
    });
    struct Disarm {
        ~Disarm() {
            test_hooks::disarm(test_hooks::Point::before_copy);
            test_hooks::disarm_io();
        }
    } disarm;
    RunningEngine e = start_engine(dir, mem, ServeMode::prefetch, 1, std::chrono::seconds(30), nullptr,
                                   [](EngineConfig& c) { c.prefetch_batch_bytes = 64 * 1024; });
    {
        // Under the lock: the hook's thread reads `guest` (the socket that
        // orders the two is invisible to ThreadSanitizer).
        std::lock_guard lock(mu);
        guest.emplace(make_guest(e.socket, {128 * MiB}));
    }
    ASSERT_TRUE(guest->connect_and_send().ok());
    // One fault at a time, the next only once the turn that served the last
    // has ended: vCPU 1 never faults while the trigger waits for vCPU 2's.
    for (uint64_t i = 0; i < kVcpu1Pages; i++) {
        guest->touch_pages({kFirst + i}, 1);
        std::unique_lock lock(mu);
        ASSERT_TRUE(turned.wait_for(lock, kWait, [&] { return turn > fault_turn; }));
        if (trigger_at != SIZE_MAX) break;
    }
    ASSERT_TRUE(e.engine->wait_until([](const EngineStats& s) { return s.vms_resident == 1; }, kWait));
    if (vcpu2.joinable()) vcpu2.join();
    {
        std::lock_guard lock(mu);
        ASSERT_NE(trigger_at, SIZE_MAX) << "no prefetch install came in a turn that served a fault";
        EXPECT_TRUE(message_queued);
        size_t i = trigger_at + 1;
        while (i < installs.size() && installs[i] != kPage2 && faulted(installs[i])) i++;
        ASSERT_LT(i, installs.size());
        std::string around;
        for (size_t k = trigger_at >= 3 ? trigger_at - 3 : 0; k < std::min(installs.size(), trigger_at + 6); k++)
            around += " " + std::to_string(installs[k]) + "@" + std::to_string(install_turns[k]);
        EXPECT_EQ(installs[i], kPage2) << "a prefetch run (page " << installs[i]
                                       << ") went before the waiting fault; installs (page@turn) from 3 before the "
                                          "trigger:" << around;
    }
    const sim::VerifyReport report = guest->verify(*image);
    EXPECT_EQ(report.mismatches, 0u) << report.describe();
}

// Paced to pause during faults, the prefetcher installs nothing while they
// flow. Here the quiet period is longer than the test, so every page
// installed is a faulted one; a graceful stop still prefetches the VM to
// resident.
TEST_F(EngineTest, PrefetchPausedDuringFaultsInstallsNothingWhileTheyFlow) {
    const std::string mem = make_image(dir, "mem", 32 * MiB, 0.0, 13);  // no zero page: every install is a copy
    auto image = sim::ExpectedImage::open(mem);
    ASSERT_TRUE(image.ok());
    RunningEngine e = start_engine(dir, mem, ServeMode::prefetch, 1, std::chrono::seconds(30), nullptr,
                                   [](EngineConfig& c) {
                                       c.prefetch_during_faults = PrefetchDuringFaults::pause;
                                       c.fault_quiet_period = std::chrono::minutes(10);
                                   });
    sim::Guest guest = make_guest(e.socket, {32 * MiB});
    ASSERT_TRUE(guest.connect_and_send().ok());
    constexpr uint64_t kPages = 32 * MiB / 4096, kTouched = 64;
    for (uint64_t i = 0; i < kTouched; i++) guest.touch_pages({(i * 127) % kPages}, 1);  // scattered, one at a time
    // The last touch returns on the copy's wake, before the reactor counts it.
    ASSERT_TRUE(e.engine->wait_until([](const EngineStats& st) { return st.pages_copied >= kTouched; }, kWait));
    EngineStats s = e.engine->stats();
    EXPECT_EQ(s.pages_prefetched, 0u);
    EXPECT_EQ(s.pages_copied, kTouched);
    EXPECT_EQ(s.vms_resident, 0u);
    e.engine->request_drain(std::chrono::seconds(60));
    ASSERT_TRUE(e.engine->wait());
    s = e.engine->stats();
    EXPECT_EQ(s.vms_resident, 1u);
    EXPECT_EQ(s.pages_prefetched, kPages - kTouched);
    const sim::VerifyReport report = guest.verify(*image);
    EXPECT_EQ(report.pages_checked, kPages);
    EXPECT_EQ(report.mismatches, 0u) << report.describe();
}

// Paused during faults, the prefetcher goes on once they have been quiet for
// the quiet period (a timer wakes the reactor then): the VM becomes
// resident, byte-exact.
TEST_F(EngineTest, PrefetchPausedDuringFaultsResumesOnceTheyStop) {
    const std::string mem = make_image(dir, "mem", 32 * MiB, 0.0, 14);
    auto image = sim::ExpectedImage::open(mem);
    ASSERT_TRUE(image.ok());
    RunningEngine e = start_engine(dir, mem, ServeMode::prefetch, 1, std::chrono::seconds(30), nullptr,
                                   [](EngineConfig& c) { c.prefetch_during_faults = PrefetchDuringFaults::pause; });
    EXPECT_NE(e.engine->setup_summary().find(" (prefetch, paused while faults flow)"), std::string::npos)
        << e.engine->setup_summary();
    sim::Guest guest = make_guest(e.socket, {32 * MiB});
    ASSERT_TRUE(guest.connect_and_send().ok());
    constexpr uint64_t kPages = 32 * MiB / 4096;
    for (uint64_t i = 0; i < 16; i++) guest.touch_pages({(i * 509) % kPages}, 1);
    ASSERT_TRUE(e.engine->wait_until([](const EngineStats& s) { return s.vms_resident == 1; }, kWait));
    const EngineStats s = e.engine->stats();
    EXPECT_EQ(s.pages_copied, kPages);  // each page once, by a fault or the prefetcher
    EXPECT_GT(s.pages_prefetched, 0u);
    const sim::VerifyReport report = guest.verify(*image);
    EXPECT_EQ(report.mismatches, 0u) << report.describe();
}

namespace {

// A PSI file whose stall total never moves (0 % of every window), in `dir`.
std::string still_pressure_file(const TempDir& dir) {
    const std::string psi = dir.file("psi");
    std::ofstream(psi) << "some avg10=0.00 avg60=0.00 avg300=0.00 total=1000\n";
    return psi;
}

// A /proc tree in `dir` where this process (every test guest's) has one
// thread whose run delay never moves.
std::string still_proc_root(const TempDir& dir) {
    const std::string root = dir.file("proc");
    const std::string task = root + "/" + std::to_string(getpid()) + "/task/1";
    std::filesystem::create_directories(task);
    std::ofstream(task + "/schedstat") << "1000 2000 3\n";
    return root;
}

// A tweak for start_engine: prefetch paced by the pressure in `psi`
// (PrefetchDuringFaults::automatic) over windows of 1 ms, with faults that
// "flow" for ten minutes after each one; the VMs' run delay is read under
// `proc_root` (empty: not read).
std::function<void(EngineConfig&)> paced_by(const std::string& psi,
                                            double resume_below = EngineConfig{}.cpu_pressure_resume_below,
                                            const std::string& proc_root = "") {
    return [psi, resume_below, proc_root](EngineConfig& c) {
        c.prefetch_during_faults = PrefetchDuringFaults::automatic;
        c.fault_quiet_period = std::chrono::minutes(10);
        c.cpu_pressure_path = psi;
        c.cpu_pressure_window = std::chrono::milliseconds(1);
        c.cpu_pressure_resume_below = resume_below;
        c.proc_root = proc_root;
    };
}

// One VM of `size` restored in prefetch mode by an engine with `pace`; it
// touches one page, and the restore waits (up to kWait) for it to become
// resident while its faults still "flow". What came of it, and what the
// engine logged meanwhile.
struct PacedRestore {
    bool resident = false;
    EngineStats stats;
    std::string log;
    uint64_t mismatches = 0;
};
PacedRestore restore_paced(const TempDir& dir, uint64_t size, uint64_t seed, uint64_t touch_page,
                           std::function<void(EngineConfig&)> pace) {
    const std::string mem = make_image(dir, "mem", size, 0.0, seed);
    auto image = sim::ExpectedImage::open(mem);
    PacedRestore r;
    if (!image.ok()) {
        r.log = "cannot open " + mem;
        return r;
    }
    ::testing::internal::CaptureStderr();
    RunningEngine e = start_engine(dir, mem, ServeMode::prefetch, 1, std::chrono::seconds(30), nullptr, pace);
    sim::Guest guest = make_guest(e.socket, {size});
    const bool connected = guest.connect_and_send().ok();
    if (connected) {
        guest.touch_pages({touch_page}, 1);
        r.resident = e.engine->wait_until([](const EngineStats& s) { return s.vms_resident == 1; }, kWait);
    }
    r.log = ::testing::internal::GetCapturedStderr();
    if (!connected) r.log += "the guest could not connect\n";
    r.stats = e.engine->stats();
    r.mismatches = guest.verify(*image).mismatches;
    return r;
}

// Whether `line` is in `log` exactly once.
bool said_once(const std::string& log, const std::string& line) {
    const size_t at = log.find(line);
    return at != std::string::npos && log.find(line, at + 1) == std::string::npos;
}

// An engine paced by `pace` that no window calms: through 64 faults it
// prefetches nothing and holds back, reading `signal` (1: the VMs' run
// delay, 2: the host's pressure), until a graceful stop prefetches the rest.
void expect_paused_until_drain(const TempDir& dir, uint64_t seed, std::function<void(EngineConfig&)> pace,
                               int signal) {
    const std::string mem = make_image(dir, "mem", 32 * MiB, 0.0, seed);
    auto image = sim::ExpectedImage::open(mem);
    ASSERT_TRUE(image.ok());
    RunningEngine e = start_engine(dir, mem, ServeMode::prefetch, 1, std::chrono::seconds(30), nullptr, pace);
    EXPECT_NE(e.engine->setup_summary().find(" (prefetch, paused while faults flow on contended CPUs)"),
              std::string::npos)
        << e.engine->setup_summary();
    sim::Guest guest = make_guest(e.socket, {32 * MiB});
    ASSERT_TRUE(guest.connect_and_send().ok());
    constexpr uint64_t kPages = 32 * MiB / 4096, kTouched = 64;
    for (uint64_t i = 0; i < kTouched; i++) guest.touch_pages({(i * 127) % kPages}, 1);
    ASSERT_TRUE(e.engine->wait_until([](const EngineStats& st) { return st.pages_copied >= kTouched; }, kWait));
    EngineStats s = e.engine->stats();
    EXPECT_EQ(s.pages_prefetched, 0u);
    EXPECT_EQ(s.pages_copied, kTouched);
    EXPECT_EQ(s.reactors_prefetch_paused, 1u);
    EXPECT_EQ(s.prefetch_pace_switches, 0u);
    EXPECT_EQ(s.reactors_paced_by_vm_run_delay, signal == 1 ? 1u : 0u);
    EXPECT_EQ(s.reactors_paced_by_host_pressure, signal == 2 ? 1u : 0u);
    e.engine->request_drain(std::chrono::seconds(60));
    ASSERT_TRUE(e.engine->wait());
    s = e.engine->stats();
    EXPECT_EQ(s.pages_prefetched, kPages - kTouched);
    const sim::VerifyReport report = guest.verify(*image);
    EXPECT_EQ(report.mismatches, 0u) << report.describe();
}

}  // namespace

// PrefetchDuringFaults::automatic follows the CPU pressure file: here one
// the test writes, whose stall total never moves (0 % of every window).
// With `resume_below` 0 no window is calm enough, so it stays paused like
// `pause` through windows of 1 ms, until a graceful stop.
TEST_F(EngineTest, PrefetchAutoStaysPausedWhileNoWindowIsCalmEnough) {
    expect_paused_until_drain(dir, 15, paced_by(still_pressure_file(dir), 0), 2);
}

// The same through the VMs' run delay, with its own bound at 0: the host's
// pressure file would let steps begin, but the VM threads come first.
TEST_F(EngineTest, PrefetchAutoStaysPausedWhileTheVmThreadsRunDelayIsNotCalm) {
    const std::function<void(EngineConfig&)> by_psi =
        paced_by(still_pressure_file(dir), EngineConfig{}.cpu_pressure_resume_below, still_proc_root(dir));
    expect_paused_until_drain(dir, 20, [by_psi](EngineConfig& c) {
        by_psi(c);
        c.vm_run_delay_resume_below = 0;
    }, 1);
}

// The same file with the default bounds: the first window (paused) shows no
// stall, so steps begin while faults still "flow" (a quiet period of ten
// minutes), and the VM becomes resident without a stop. Under `pause` it
// would not (the test above).
TEST_F(EngineTest, PrefetchAutoStepsOnceAWindowIsCalm) {
    constexpr uint64_t kPages = 32 * MiB / 4096;
    const PacedRestore r = restore_paced(dir, 32 * MiB, 16, kPages / 2, paced_by(still_pressure_file(dir)));
    ASSERT_TRUE(r.resident) << r.log;
    EXPECT_EQ(r.stats.pages_copied, kPages);
    EXPECT_EQ(r.stats.pages_prefetched, kPages - 1);
    EXPECT_EQ(r.stats.prefetch_pace_switches, 1u);  // paused for the first window, then steps
    EXPECT_EQ(r.stats.reactors_prefetch_paused, 0u);
    EXPECT_EQ(r.mismatches, 0u);
}

// Without a pressure file (a kernel without PSI) the reactor says so once
// and takes steps.
TEST_F(EngineTest, PrefetchAutoWithoutPressureTakesSteps) {
    const PacedRestore r = restore_paced(dir, 8 * MiB, 17, 0, paced_by(dir.file("no-psi")));
    ASSERT_TRUE(r.resident) << r.log;
    EXPECT_TRUE(said_once(r.log, "reactor 0: prefetch pace by CPU pressure unavailable (" + dir.file("no-psi") +
                                     ": open: No such file or directory): steps while faults flow\n"))
        << r.log;
    EXPECT_EQ(r.stats.reactors_paced_by_vm_run_delay + r.stats.reactors_paced_by_host_pressure, 0u);
    EXPECT_EQ(r.mismatches, 0u);
}

// The VMs' own threads come first: here the host's pressure would keep the
// prefetcher paused (no window calm enough), but the guest process's
// threads never wait, so steps begin and the VM becomes resident while
// faults still "flow".
TEST_F(EngineTest, PrefetchAutoPacesByTheVmThreadsRunDelayFirst) {
    constexpr uint64_t kPages = 16 * MiB / 4096;
    const PacedRestore r =
        restore_paced(dir, 16 * MiB, 18, kPages / 2, paced_by(still_pressure_file(dir), 0, still_proc_root(dir)));
    ASSERT_TRUE(r.resident) << r.log;
    EXPECT_EQ(r.stats.pages_prefetched, kPages - 1);
    EXPECT_EQ(r.stats.prefetch_pace_switches, 1u);
    EXPECT_EQ(r.stats.reactors_prefetch_paused, 0u);
    EXPECT_EQ(r.mismatches, 0u);
}

// Where the VM process cannot be read (another user's, hidden by the
// service's ProtectProc=invisible), the reactor says so once and follows
// the host's pressure: here still, so steps begin after the first window.
TEST_F(EngineTest, PrefetchAutoFallsBackToTheHostsPressure) {
    const std::string empty_proc = dir.file("empty-proc");
    std::filesystem::create_directories(empty_proc);
    const PacedRestore r = restore_paced(
        dir, 16 * MiB, 19, 0,
        paced_by(still_pressure_file(dir), EngineConfig{}.cpu_pressure_resume_below, empty_proc));
    ASSERT_TRUE(r.resident) << r.log;
    EXPECT_TRUE(said_once(r.log, "reactor 0: its VMs' run delay unreadable (" + empty_proc + "/" +
                                     std::to_string(getpid()) +
                                     "/task: open: No such file or directory): prefetch paced by host CPU pressure\n"))
        << r.log;
    EXPECT_EQ(r.stats.prefetch_pace_switches, 1u);
    EXPECT_EQ(r.mismatches, 0u);
}

TEST_F(EngineTest, RingReadPathAloneIsByteExact) {
    const std::string mem = make_image(dir, "mem", 16 * MiB);
    auto image = sim::ExpectedImage::open(mem);
    ASSERT_TRUE(image.ok());
    RunningEngine e = start_engine(dir, mem, ServeMode::lazy, 2, std::chrono::seconds(30), nullptr,
                                   [](EngineConfig& c) { c.page_cache_fast_path = false; });
    restore_and_verify(e.socket, *image, {8 * MiB, 8 * MiB}, sim::Pattern::random, 4, 8);
    const EngineStats s = e.engine->stats();
    EXPECT_EQ(s.page_cache_hits, 0u);
    EXPECT_EQ(s.bytes_read, 16 * MiB);  // every page went through READ_FIXED
}

// While faults flow the reactor busy-polls before sleeping; over thousands of
// faults from two vCPUs some poll must catch the next fault. Turned off, the
// reactor never polls. Either way every byte is right.
TEST_F(EngineTest, BusyPollingServesFaultsWithoutSleepingAndCanBeTurnedOff) {
    const std::string mem = make_image(dir, "mem", 16 * MiB);
    auto image = sim::ExpectedImage::open(mem);
    ASSERT_TRUE(image.ok());
    auto restore_with = [&](std::chrono::microseconds busy_poll, uint64_t seed) {
        RunningEngine e = start_engine(dir, mem, ServeMode::lazy, 2, std::chrono::seconds(30), nullptr,
                                       [&](EngineConfig& c) { c.busy_poll_max = busy_poll; });
        restore_and_verify(e.socket, *image, {16 * MiB}, sim::Pattern::random, 2, seed);
        return e.engine->stats();
    };
    const EngineStats on = restore_with(EngineConfig{}.busy_poll_max, 5);
    EXPECT_GT(on.busy_poll_hits, 0u);
    EXPECT_LT(on.busy_poll_hits + on.busy_poll_misses, on.faults + 1000);  // polls only around faults
    const EngineStats off = restore_with(std::chrono::microseconds(0), 6);
    EXPECT_GT(off.faults, 0u);
    EXPECT_EQ(off.busy_poll_hits, 0u);
    EXPECT_EQ(off.busy_poll_misses, 0u);
}

namespace {

// Nice values of this process's threads named rp-reactor-*, by thread id, from
// /proc. A reactor thread that has been joined can still be listed for a
// moment (join returns before the kernel unhashes the task), so callers tell
// one engine's reactors from the next one's by thread id.
std::map<int, int> reactor_nice_values() {
    std::map<int, int> values;
    for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
        std::ifstream comm(task.path() / "comm");
        std::string name;
        std::getline(comm, name);
        if (name.rfind("rp-reactor-", 0) != 0) continue;
        std::ifstream stat_file(task.path() / "stat");
        std::string stat((std::istreambuf_iterator<char>(stat_file)), std::istreambuf_iterator<char>());
        if (stat.empty()) continue;  // exited between listing and reading
        std::istringstream fields(stat.substr(stat.rfind(')') + 2));  // from field 3 (state) on
        std::string field;
        for (int i = 3; i <= 19 && fields >> field; i++) {}
        values[std::stoi(task.path().filename().string())] = std::stoi(field);  // field 19: nice
    }
    return values;
}

std::vector<int> nice_values_except(const std::map<int, int>& all, const std::map<int, int>& earlier) {
    std::vector<int> values;
    for (const auto& [tid, nice] : all)
        if (!earlier.contains(tid)) values.push_back(nice);
    return values;
}

}  // namespace

TEST_F(EngineTest, ReactorThreadsRunAtTheConfiguredNiceValue) {
    const std::string mem = make_image(dir, "mem", 4 * MiB);
    const std::map<int, int> before = reactor_nice_values();
    std::map<int, int> first;
    {
        RunningEngine e = start_engine(dir, mem);  // default: -10 (the tests run as root)
        first = reactor_nice_values();
        EXPECT_EQ(nice_values_except(first, before), (std::vector<int>{-10, -10}));
        EXPECT_NE(e.engine->setup_summary().find("2 reactor(s) at nice -10, io_uring"), std::string::npos)
            << e.engine->setup_summary();
    }
    RunningEngine e = start_engine(dir, mem, ServeMode::lazy, 2, std::chrono::seconds(30), nullptr,
                                   [](EngineConfig& c) { c.reactor_nice = 5; });
    first.insert(before.begin(), before.end());
    EXPECT_EQ(nice_values_except(reactor_nice_values(), first), (std::vector<int>{5, 5}));
}

// Fairness (issue 12): a VM's fault is served in the loop turn that reads
// it, however many faults another VM on the same reactor keeps sending. One
// reactor; VM A faults from 8 vCPUs at once for the whole test while VM B's
// single vCPU touches 64 scattered pages. Turns are counted at the loop's
// start, fault reads where a VM's messages are applied, installs before the
// copy: every one of B's pages is installed in the turn its fault was read
// (one turn later at most, for a read that missed the page cache).
TEST_F(EngineTest, AVmsFaultIsServedInTheTurnItIsReadWhileAnotherVmBursts) {
    const std::string mem = make_image(dir, "mem", 64 * MiB, 0.0, 7);
    auto image = sim::ExpectedImage::open(mem);
    ASSERT_TRUE(image.ok());
    std::mutex mu;
    uint64_t turn = 0;
    std::map<uint64_t, std::vector<uint64_t>> read_in_turn, installed_in_turn;  // by VM id
    std::atomic<uint64_t> installs{0};
    test_hooks::arm_io([&](unsigned, io::IoFaults&) {
        std::lock_guard lock(mu);
        turn++;
    });
    test_hooks::arm(test_hooks::Point::after_event_drain, [&](uint64_t vm, uint64_t) {
        std::lock_guard lock(mu);
        read_in_turn[vm].push_back(turn);
    });
    test_hooks::arm(test_hooks::Point::before_copy, [&](uint64_t vm, uint64_t) {
        std::lock_guard lock(mu);
        installed_in_turn[vm].push_back(turn);
        installs++;
    });
    struct Disarm {
        ~Disarm() {
            test_hooks::disarm(test_hooks::Point::before_copy);
            test_hooks::disarm(test_hooks::Point::after_event_drain);
            test_hooks::disarm_io();
        }
    } disarm;
    RunningEngine e = start_engine(dir, mem, ServeMode::lazy, 1);
    sim::Guest a = make_guest(e.socket, {64 * MiB});
    ASSERT_TRUE(a.connect_and_send().ok());
    std::thread burst([&] { a.touch(sim::Pattern::sequential, 8, 1.0, 1); });
    struct Join {
        std::thread& t;
        ~Join() {
            if (t.joinable()) t.join();
        }
    } join{burst};
    // A is in full flow before B starts.
    const auto deadline = std::chrono::steady_clock::now() + kWait;
    while (installs.load() < 256 && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
    ASSERT_GE(installs.load(), 256u);
    uint64_t a_id = 0;
    {
        std::lock_guard lock(mu);
        ASSERT_EQ(installed_in_turn.size(), 1u);
        a_id = installed_in_turn.begin()->first;
    }
    sim::Guest b = make_guest(e.socket, {4 * MiB});
    ASSERT_TRUE(b.connect_and_send().ok());
    const std::vector<uint64_t> plan = sim::plan_pages(sim::Pattern::random, 1024, 1.0 / 16, 3);
    ASSERT_EQ(plan.size(), 64u);
    b.touch_pages(plan, 1);
    uint64_t a_installs_meanwhile = 0;
    std::vector<uint64_t> b_reads, b_installs;
    {
        std::lock_guard lock(mu);
        a_installs_meanwhile = installed_in_turn[a_id].size();
        for (const auto& [vm, turns] : installed_in_turn)
            if (vm != a_id) b_installs = turns;
        for (const auto& [vm, turns] : read_in_turn)
            if (vm != a_id) b_reads = turns;
    }
    EXPECT_LT(a_installs_meanwhile, 64 * MiB / 4096) << "A had finished: B never met its burst";
    ASSERT_EQ(b_reads.size(), plan.size());  // one vCPU: one fault read per turn it faults in
    ASSERT_EQ(b_installs.size(), plan.size());
    for (size_t i = 0; i < plan.size(); i++)
        EXPECT_LE(b_installs[i] - b_reads[i], 1u) << "fault " << i << " read in turn " << b_reads[i]
                                                   << ", installed in turn " << b_installs[i];
    const sim::VerifyReport rb = b.verify(*image);
    EXPECT_EQ(rb.mismatches, 0u) << rb.describe();
    burst.join();
    const sim::VerifyReport ra = a.verify(*image);
    EXPECT_EQ(ra.mismatches, 0u) << ra.describe();
}

TEST_F(EngineTest, ThreeRegionsWithGapsEightVcpusSequential) {
    const std::string mem = make_image(dir, "mem", 40 * MiB);
    auto image = sim::ExpectedImage::open(mem);
    ASSERT_TRUE(image.ok());
    RunningEngine e = start_engine(dir, mem);
    restore_and_verify(e.socket, *image, {16 * MiB, 8 * MiB, 16 * MiB}, sim::Pattern::sequential, 8, 2);
}

TEST_F(EngineTest, AllThreeHandshakeShapesAreServed) {
    const std::string mem = make_image(dir, "mem", 8 * MiB);
    auto image = sim::ExpectedImage::open(mem);
    ASSERT_TRUE(image.ok());
    RunningEngine e = start_engine(dir, mem);
    for (auto shape : {sim::HandshakeShape::v1_1, sim::HandshakeShape::v1_7, sim::HandshakeShape::v1_12})
        restore_and_verify(e.socket, *image, {4 * MiB, 4 * MiB}, sim::Pattern::random, 2, 3, shape);
    EXPECT_EQ(e.engine->stats().vms_accepted, 3u);
}

TEST_F(EngineTest, SparseMemoryFileHolesReadAsZeros) {
    const std::string mem = make_image(dir, "mem", 16 * MiB, 0.6, 11, /*sparse=*/true);
    auto image = sim::ExpectedImage::open(mem);
    ASSERT_TRUE(image.ok());
    RunningEngine e = start_engine(dir, mem);
    restore_and_verify(e.socket, *image, {16 * MiB}, sim::Pattern::random, 2, 4);
    // Holes are zero-filled without being read.
    EXPECT_LT(e.engine->stats().bytes_read, 16 * MiB * 6 / 10);
}

TEST_F(EngineTest, SequentialFaultsAreCoalescedIntoFewerCopies) {
    const std::string mem = make_image(dir, "mem", 32 * MiB, 0.0);
    auto image = sim::ExpectedImage::open(mem);
    ASSERT_TRUE(image.ok());
    RunningEngine e = start_engine(dir, mem, ServeMode::lazy, 1);
    restore_and_verify(e.socket, *image, {32 * MiB}, sim::Pattern::sequential, 8, 5);
    const EngineStats s = e.engine->stats();
    EXPECT_EQ(s.pages_copied + s.pages_zeroed, 32 * MiB / 4096);
    // Eight vCPUs fault in parallel: some turns see adjacent pages, which share one ioctl.
    EXPECT_GT(s.copy_ioctls, 0u);
    EXPECT_LE(s.copy_ioctls, s.pages_copied);
}

TEST_F(EngineTest, ManyVmsOnOneSocketAtOnce) {
    const std::string mem = make_image(dir, "mem", 8 * MiB);
    auto image = sim::ExpectedImage::open(mem);
    ASSERT_TRUE(image.ok());
    RunningEngine e = start_engine(dir, mem);
    constexpr int kVms = 8;
    std::vector<std::thread> vms;
    for (int i = 0; i < kVms; i++)
        vms.emplace_back([&, i] {
            restore_and_verify(e.socket, *image, {8 * MiB}, i % 2 ? sim::Pattern::random : sim::Pattern::sequential, 2,
                               100 + i);
        });
    for (auto& t : vms) t.join();
    ASSERT_TRUE(e.engine->wait_released(kVms, kWait));
    EXPECT_EQ(e.engine->stats().vms_accepted, uint64_t{kVms});
    EXPECT_EQ(e.engine->stats().vms_active, 0u);
}

TEST_F(EngineTest, FdCountReturnsToBaselineAfterVmsGoAway) {
    const std::string mem = make_image(dir, "mem", 4 * MiB);
    auto image = sim::ExpectedImage::open(mem);
    ASSERT_TRUE(image.ok());
    RunningEngine e = start_engine(dir, mem);
    // Warm up once so lazily opened process-wide fds (none expected) are counted.
    restore_and_verify(e.socket, *image, {4 * MiB}, sim::Pattern::random, 1, 1);
    ASSERT_TRUE(e.engine->wait_released(1, kWait));
    const size_t baseline = open_fd_count();
    for (int i = 0; i < 5; i++) restore_and_verify(e.socket, *image, {4 * MiB}, sim::Pattern::random, 2, 10 + i);
    ASSERT_TRUE(e.engine->wait_released(6, kWait));
    EXPECT_EQ(open_fd_count(), baseline);
}

TEST_F(EngineTest, HugePageGuestIsByteExact) {
    const std::string mem = make_image(dir, "mem", 64 * MiB);
    auto image = sim::ExpectedImage::open(mem);
    ASSERT_TRUE(image.ok());
    ASSERT_EQ(sim::ensure_hugepages(64), "");
    RunningEngine e = start_engine(dir, mem);
    restore_and_verify(e.socket, *image, {32 * MiB, 32 * MiB}, sim::Pattern::random, 2, 6, sim::HandshakeShape::v1_12,
                       2 * MiB);
    const EngineStats s = e.engine->stats();
    EXPECT_EQ(s.pages_copied + s.pages_zeroed, 64u / 2);
}

TEST_F(EngineTest, ShutdownReleasesConnectedVmsAndRemovesTheSocket) {
    const std::string mem = make_image(dir, "mem", 4 * MiB);
    RunningEngine e = start_engine(dir, mem);
    sim::Guest guest = make_guest(e.socket, {4 * MiB});
    ASSERT_TRUE(guest.connect_and_send().ok());
    ASSERT_TRUE(e.engine->wait_accepted(1, kWait));
    e.engine->request_stop();
    EXPECT_TRUE(e.engine->wait());
    EXPECT_EQ(e.engine->stats().vms_released, 1u);
    EXPECT_FALSE(std::filesystem::exists(e.socket));
}

}  // namespace
