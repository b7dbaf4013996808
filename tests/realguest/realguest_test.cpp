// Pins that a real Linux guest, snapshotted under QEMU and restored through ringpager with
// QEMU playing Firecracker's part, runs on with the data it had, gets zeros for every page it
// gave back through the balloon and free page reporting, and that a handler ignoring REMOVE
// events is caught by those checks.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>

#include "realguest/session.hpp"
#include "realguest/snapshot.hpp"

namespace ringpager::realguest {
namespace {

// Set up once for the suite: finding the binaries, fetching the kernel package and building
// (or reusing) the snapshot. If any of it fails, every test fails with the reason: a missing
// QEMU or kernel package is never a pass or a skip.
struct Suite {
    Binaries bin;
    Snapshot snap;
    std::string setup_error;
};

Suite& suite() {
    static Suite s = [] {
        Suite out;
        try {
            out.bin = Binaries::find();
            SnapshotOptions o;
            o.cache_dir = out.bin.cache_dir;
            o.guest_program = out.bin.guest;
            out.snap = prepare_snapshot(o);
        } catch (const std::exception& e) {
            out.setup_error = e.what();
        }
        return out;
    }();
    return s;
}

std::string explain(const SessionResult& s) {
    std::string out = s.failure.empty() ? "" : "session: " + s.failure + "\n";
    for (const RestoreReport& r : s.vms) {
        if (!r.passed()) out += r.name + ": " + r.failure + "\n";
    }
    return out + "handler " + s.handler_exit + "; log tail:\n" + tail_of(s.handler_log, 1500) +
           "\n(logs kept in the work directory, " + ::testing::TempDir() + "realguest-<test>)";
}

class RealGuest : public ::testing::Test {
protected:
    void SetUp() override {
        ASSERT_TRUE(suite().setup_error.empty()) << "the real guest could not be prepared: " << suite().setup_error;
    }

    // Logs and placeholder files stay in the work directory when the test fails.
    void TearDown() override {
        if (!work_.empty() && !HasFailure()) std::filesystem::remove_all(work_);
    }

    SessionResult run(const std::vector<std::string>& kinds) {
        work_ = ::testing::TempDir() + "realguest-" + ::testing::UnitTest::GetInstance()->current_test_info()->name();
        std::filesystem::remove_all(work_);
        return run_session(suite().snap, suite().bin, kinds, work_, true);
    }

    std::string work_;

    // What every correct handler must show for one VM after the full checks.
    static void expect_healthy(const RestoreReport& r) {
        EXPECT_TRUE(r.passed()) << r.failure;
        EXPECT_GT(r.first_heartbeat_ms, 0);
        // Two inflations by half of RAM, one 4 KiB discard (one REMOVE) per balloon page.
        EXPECT_EQ(r.removes_balloon, 2 * (r.ram_pages / 2)) << r.name;
        EXPECT_GT(r.removes_after_free, 0u) << r.name << ": free page reporting gave nothing back";
        EXPECT_GT(r.removes_balloon_reporting, 0u) << r.name;
        EXPECT_NE(r.scan.find(" nonzero=0 stale=0 "), std::string::npos) << r.scan;
    }
};

TEST_F(RealGuest, LazyRestoreKeepsItsDataAndGetsZerosForEveryPageItGaveBack) {
    const SessionResult s = run({"lazy"});
    ASSERT_TRUE(s.passed()) << explain(s);
    expect_healthy(s.vms[0]);
    // Lazy installs only what the guest touched before the checks began.
    EXPECT_LT(s.vms[0].resident_ms, 0);
}

TEST_F(RealGuest, PrefetchRestoreBecomesResidentAndGetsZerosForEveryPageItGaveBack) {
    const SessionResult s = run({"prefetch"});
    ASSERT_TRUE(s.passed()) << explain(s);
    expect_healthy(s.vms[0]);
    EXPECT_GT(s.vms[0].resident_ms, 0);
}

TEST_F(RealGuest, FourGuestsRestoreAtOnceFromOneEngine) {
    const SessionResult s = run({"lazy", "prefetch", "lazy", "prefetch"});
    ASSERT_TRUE(s.passed()) << explain(s);
    ASSERT_EQ(s.vms.size(), 4u);
    for (const RestoreReport& r : s.vms) expect_healthy(r);
    EXPECT_NE(s.handler_log.find("stopped: 4 VMs served (1 refused, 0 failed)"), std::string::npos)
        << tail_of(s.handler_log);
}

TEST_F(RealGuest, HandlerThatIgnoresRemoveIsCaught) {
    const SessionResult s = run({"ignore-remove"});
    ASSERT_EQ(s.vms.size(), 1u);
    const RestoreReport& r = s.vms[0];
    EXPECT_FALSE(r.passed()) << "a handler serving snapshot bytes for discarded pages passed every check";
    // Caught by what the guest itself saw, not by the harness giving up.
    EXPECT_FALSE(r.caught_by.empty()) << r.failure;
    EXPECT_NE(s.handler_log.find(" REMOVE events (ignored)"), std::string::npos) << tail_of(s.handler_log);
    EXPECT_TRUE(s.handler_clean) << s.handler_exit;
}

// The snapshot's memory file is real guest memory; the benchmarks take it as their input.
TEST_F(RealGuest, BenchmarksRestoreTheRealGuestMemoryFile) {
    const char* rp_bench = std::getenv("RP_BENCH");
    const char* restore_bench = std::getenv("RP_RESTORE_BENCH");
    ASSERT_TRUE(rp_bench != nullptr && restore_bench != nullptr) << "RP_BENCH / RP_RESTORE_BENCH not set by meson";
    const CommandResult bench = run_command({rp_bench, "--smoke", "--rounds", "1", "--workloads", "none,random25",
                                             "--ringpager", suite().bin.ringpager, "--baseline", suite().bin.baseline,
                                             "--mem-file", suite().snap.mem_path});
    EXPECT_TRUE(bench.ok()) << tail_of(bench.output, 3000);
    // Seven handlers (replay included: it records the set on its first run; prefetch-pause and
    // prefetch-steps beside prefetch's default pace) x two workloads.
    EXPECT_NE(bench.output.find("All 14 scenarios: every VM's memory verified byte for byte"), std::string::npos)
        << tail_of(bench.output, 3000);
    const CommandResult restore =
        run_command({restore_bench, "--smoke", "--benchmark_min_time=0.01", "--mem-file", suite().snap.mem_path});
    EXPECT_TRUE(restore.ok()) << tail_of(restore.output, 3000);
    EXPECT_NE(restore.output.find("8 MiB of mem, random full touch"), std::string::npos) << tail_of(restore.output);
}

}  // namespace
}  // namespace ringpager::realguest
