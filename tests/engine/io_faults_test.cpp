// Pins the engine's answers to io errors that today only the kernel can
// produce, injected through the fake io backend (IoFaults, armed from the
// reactor's turn hook): a read that fails with EIO, a short read, a failed
// file registration, a full submission queue. Each names its cause in one
// line and touches only the VM it hit; the engine goes on serving.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <mutex>

#include "common/engine_fixture.hpp"
#include "common/process.hpp"
#include "reactor/test_hooks.hpp"

using namespace ringpager;
using namespace ringpager::testing;

namespace {

constexpr uint64_t MiB = 1024 * 1024;

class IoFaultsTest : public ::testing::Test {
protected:
    void SetUp() override {
        guestsim = tool_path("RP_GUESTSIM");
        ASSERT_FALSE(guestsim.empty()) << "RP_GUESTSIM is not set (run through meson test)";
        mem = make_image(dir, "mem", 4 * MiB, 0.0, 3);  // no zero pages: every fault reads
        image = std::make_unique<sim::ExpectedImage>(std::move(sim::ExpectedImage::open(mem).value()));
        // One reactor, so the faults armed on it hit the VM under test; faults
        // always read through the ring (no page cache fast path).
        e = start_engine(dir, mem, ServeMode::lazy, 1, std::chrono::seconds(30), nullptr, [](EngineConfig& c) {
            c.kill_on_failure = true;
            c.page_cache_fast_path = false;
        });
        ASSERT_TRUE(e.engine);
    }
    void TearDown() override { test_hooks::disarm_io(); }

    // Arms `arm` once, on the reactor's next turn, before the VM arrives.
    void arm_once(std::function<void(io::IoFaults&)> arm) {
        armed = false;
        test_hooks::arm_io([this, arm](unsigned, io::IoFaults& faults) {
            if (!armed.exchange(true)) arm(faults);
            if (!faults.pending()) consumed = true;
        });
    }

    // A VM as its own process (so --kill-on-failure can kill it): returns
    // its wait status and the engine's log.
    int run_vm(std::string& log) {
        ::testing::internal::CaptureStderr();
        Child vm = spawn(guestsim, {"run", "--socket", e.socket, "--mem-file", mem, "--regions", "4M", "--pattern",
                                    "random"});
        const int status = vm.wait();
        EXPECT_TRUE(e.engine->wait_released(1, kWait));
        log = ::testing::internal::GetCapturedStderr();
        return status;
    }

    void another_vm_is_served() {
        test_hooks::disarm_io();
        sim::Guest guest = make_guest(e.socket, {4 * MiB});
        ASSERT_TRUE(guest.connect_and_send().ok());
        guest.touch(sim::Pattern::random, 2, 1.0, 9);
        EXPECT_EQ(guest.verify(*image).mismatches, 0u);
    }

    TempDir dir;
    std::string guestsim, mem;
    std::unique_ptr<sim::ExpectedImage> image;
    RunningEngine e;
    std::atomic<bool> armed{false}, consumed{false};
};

TEST_F(IoFaultsTest, AReadFailingWithEioFailsOnlyThatVm) {
    arm_once([](io::IoFaults& f) { f.inject(io::OpType::read_fixed, -EIO); });
    std::string log;
    const int status = run_vm(log);
    ASSERT_TRUE(WIFSIGNALED(status)) << log;
    EXPECT_EQ(WTERMSIG(status), SIGKILL);
    EXPECT_NE(log.find("cannot read the snapshot at snapshot offset 0x"), std::string::npos) << log;
    EXPECT_NE(log.find(": read: Input/output error"), std::string::npos) << log;
    EXPECT_EQ(e.engine->stats().vms_failed, 1u);
    another_vm_is_served();
}

TEST_F(IoFaultsTest, AShortReadFailsOnlyThatVm) {
    arm_once([](io::IoFaults& f) { f.inject(io::OpType::read_fixed, 100); });
    std::string log;
    const int status = run_vm(log);
    ASSERT_TRUE(WIFSIGNALED(status)) << log;
    EXPECT_NE(log.find("short read (snapshot file truncated after start?): Input/output error"), std::string::npos)
        << log;
    EXPECT_EQ(e.engine->stats().vms_failed, 1u);
    another_vm_is_served();
}

TEST_F(IoFaultsTest, AFailedFileRegistrationRefusesOnlyThatVm) {
    arm_once([](io::IoFaults& f) { f.fail_file_registration(EMFILE); });
    std::string log;
    const int status = run_vm(log);
    ASSERT_TRUE(WIFSIGNALED(status)) << log;
    EXPECT_EQ(WTERMSIG(status), SIGKILL);
    EXPECT_NE(log.find("cannot register its userfaultfd with the ring: io_uring_register_files_update: Too many "
                       "open files"),
              std::string::npos)
        << log;
    another_vm_is_served();
}

// Operations that find the SQ full are parked and issued at the next submit:
// the VM is served byte for byte, with nothing lost.
TEST_F(IoFaultsTest, AFullSubmissionQueueLosesNothing) {
    arm_once([](io::IoFaults& f) { f.fill_sq(200); });
    sim::Guest guest = make_guest(e.socket, {4 * MiB});
    ASSERT_TRUE(guest.connect_and_send().ok());
    guest.touch(sim::Pattern::random, 2, 1.0, 5);
    EXPECT_EQ(guest.verify(*image).mismatches, 0u);
    EXPECT_TRUE(consumed.load()) << "the SQ-full faults were not all met";
    EXPECT_EQ(e.engine->stats().vms_failed, 0u);
}

// A reactor whose mailbox is full refuses the VM handed to it, in one line;
// the VMs already handed over are adopted once it takes its mail.
TEST(ReactorLimitsTest, AFullMailboxRefusesOnlyTheVmThatDidNotFit) {
    TempDir dir;
    const std::string mem = make_image(dir, "mem", 4 * MiB, 0.3, 3);
    auto image = sim::ExpectedImage::open(mem);
    ASSERT_TRUE(image.ok());
    RunningEngine e = start_engine(dir, mem, ServeMode::lazy, 2, std::chrono::seconds(30), nullptr,
                                   [](EngineConfig& c) { c.mailbox_vms = 1; });
    // Reactor 1 stops taking its mail until released.
    std::mutex mu;
    std::condition_variable cv;
    bool hold = true, parked = false;
    test_hooks::arm(test_hooks::Point::before_take_mail, [&](uint64_t reactor, uint64_t) {
        if (reactor != 1) return;
        std::unique_lock lock(mu);
        parked = true;
        cv.notify_all();
        cv.wait(lock, [&] { return !hold; });
    });
    struct Disarm {
        ~Disarm() { test_hooks::disarm(test_hooks::Point::before_take_mail); }
    } disarm;
    ::testing::internal::CaptureStderr();
    // Placement takes the reactor with the fewest VMs adopted or handed over:
    // the first goes to reactor 0 (and is adopted), the second to reactor 1
    // (held in its mailbox), the third to reactor 1 again (no room: refused),
    // the fourth to reactor 0.
    std::vector<sim::Guest> guests;
    for (int i = 0; i < 4; i++) {
        guests.push_back(make_guest(e.socket, {4 * MiB}));
        ASSERT_TRUE(guests.back().connect_and_send().ok());
        ASSERT_TRUE(e.engine->wait_until([&](const EngineStats& s) { return s.vms_accepted + s.vms_refused == uint64_t(i) + 1; },
                                         kWait));
        if (i == 0) {
            ASSERT_TRUE(e.engine->wait_until([](const EngineStats& s) { return s.vms_active == 1; }, kWait));
        }
        if (i == 1) {
            std::unique_lock lock(mu);
            cv.wait(lock, [&] { return parked; });
        }
    }
    {
        std::lock_guard lock(mu);
        hold = false;
    }
    cv.notify_all();
    ASSERT_TRUE(e.engine->wait_until([](const EngineStats& s) { return s.vms_active == 3; }, kWait));
    const std::string log = ::testing::internal::GetCapturedStderr();
    EXPECT_EQ(e.engine->stats().vms_refused, 1u);
    EXPECT_NE(log.find("refused: reactor 1's mailbox is full"), std::string::npos) << log;
    for (int i : {0, 1, 3}) {
        guests[static_cast<size_t>(i)].touch(sim::Pattern::random, 1, 1.0, 3);
        EXPECT_EQ(guests[static_cast<size_t>(i)].verify(*image).mismatches, 0u);
    }
}

// A reactor at its VM limit refuses the next VM in one line and serves the
// ones it has.
TEST(ReactorLimitsTest, AReactorAtItsVmLimitRefusesTheNextVm) {
    TempDir dir;
    const std::string mem = make_image(dir, "mem", 4 * MiB, 0.3, 3);
    auto image = sim::ExpectedImage::open(mem);
    ASSERT_TRUE(image.ok());
    RunningEngine e = start_engine(dir, mem, ServeMode::lazy, 1, std::chrono::seconds(30), nullptr,
                                   [](EngineConfig& c) { c.vms_per_reactor = 1; });
    ::testing::internal::CaptureStderr();
    sim::Guest first = make_guest(e.socket, {4 * MiB});
    ASSERT_TRUE(first.connect_and_send().ok());
    ASSERT_TRUE(e.engine->wait_until([](const EngineStats& s) { return s.vms_active == 1; }, kWait));
    {
        sim::Guest second = make_guest(e.socket, {4 * MiB});
        ASSERT_TRUE(second.connect_and_send().ok());
        ASSERT_TRUE(e.engine->wait_released(1, kWait));
    }
    const std::string log = ::testing::internal::GetCapturedStderr();
    EXPECT_NE(log.find("refused: reactor 0 is at its VM limit"), std::string::npos) << log;
    first.touch(sim::Pattern::random, 2, 1.0, 3);
    EXPECT_EQ(first.verify(*image).mismatches, 0u);
    EXPECT_EQ(e.engine->stats().vms_active, 1u);
}

}  // namespace
