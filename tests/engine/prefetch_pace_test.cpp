// PrefetchPace's rules (PrefetchDuringFaults::automatic), on a stall total
// the test sets, and CpuPressure's reading of a PSI file: the kernel's own
// /proc/pressure/cpu where there is one, and files the test writes.
#include <gtest/gtest.h>

#include <fstream>

#include "common/engine_fixture.hpp"
#include "reactor/prefetch_pace.hpp"

using namespace ringpager;
using namespace ringpager::testing;
using namespace std::chrono_literals;

namespace {

// A pace over a stall total the test moves (microseconds), 10 ms windows.
struct PaceHarness {
    std::optional<uint64_t> stall = 0;
    PrefetchPace pace{PrefetchPace::Config{10ms, 0.10, 0.05}, [this] { return stall; }};
    PrefetchPace::Clock::time_point t0 = PrefetchPace::Clock::now();
    bool at(std::chrono::milliseconds ms, bool faults_recent = true) { return pace.pause(t0 + ms, faults_recent); }
};

}  // namespace

TEST(PrefetchPace, StartsPausedAndStepsOnceAWindowWithoutItIsCalm) {
    PaceHarness h;
    EXPECT_TRUE(h.at(0ms));   // the first window measures the host without prefetch
    EXPECT_EQ(h.pace.window_end(), h.t0 + 10ms);
    h.stall = 400;            // 4 % of 10 ms stalled
    EXPECT_TRUE(h.at(9ms));   // the window has not ended
    EXPECT_FALSE(h.at(10ms));
    EXPECT_NEAR(h.pace.last_share(), 0.04, 1e-9);
    EXPECT_EQ(h.pace.switches(), 1u);
}

TEST(PrefetchPace, StaysPausedWhileTheHostIsContendedWithoutPrefetch) {
    PaceHarness h;
    EXPECT_TRUE(h.at(0ms));
    h.stall = 600;  // 6 %: not below resume_below
    EXPECT_TRUE(h.at(10ms));
    h.stall = 1200;
    EXPECT_TRUE(h.at(20ms));
    EXPECT_EQ(h.pace.switches(), 0u);
}

TEST(PrefetchPace, PausesWhenStepsStallTheHostAndNotWithinTheBand) {
    PaceHarness h;
    h.at(0ms);
    EXPECT_FALSE(h.at(10ms));  // nothing stalled: steps
    h.stall = 800;             // 8 % in steps: inside the band, steps stay
    EXPECT_FALSE(h.at(20ms));
    h.stall = 800 + 1100;      // 11 % in steps: pause
    EXPECT_TRUE(h.at(30ms));
    EXPECT_EQ(h.pace.switches(), 2u);
}

TEST(PrefetchPace, QuietReactorsPrefetchAndTheNextBurstStartsAFreshWindow) {
    PaceHarness h;
    h.at(0ms);
    EXPECT_FALSE(h.at(10ms));
    // Faults stop: full batches, whatever the state; the stall meanwhile
    // (prefetch at full speed) is not measured.
    EXPECT_FALSE(h.at(15ms, false));
    h.stall = 100000;
    EXPECT_FALSE(h.at(40ms, false));
    // A new burst: the state kept (steps), a window from here.
    EXPECT_FALSE(h.at(100ms));
    EXPECT_EQ(h.pace.window_end(), h.t0 + 110ms);
    EXPECT_FALSE(h.at(110ms));  // no stall since the burst began
    EXPECT_EQ(h.pace.last_share(), 0.0);
}

TEST(PrefetchPace, StepsWithoutASignal) {
    PaceHarness h;
    h.stall = std::nullopt;
    EXPECT_FALSE(h.at(0ms));
    EXPECT_FALSE(h.at(10ms));
    h.stall = 0;  // a signal again: the next burst measures
    EXPECT_FALSE(h.at(20ms, false));
    EXPECT_FALSE(h.at(30ms));
    EXPECT_FALSE(h.at(40ms));
}

TEST(PrefetchPace, SignalLostMidBurstMeansSteps) {
    PaceHarness h;
    EXPECT_TRUE(h.at(0ms));
    h.stall = std::nullopt;
    EXPECT_FALSE(h.at(10ms));
}

TEST(CpuPressure, ParsesTheSomeLinesTotal) {
    EXPECT_EQ(CpuPressure::parse_some_total("some avg10=0.01 avg60=0.23 avg300=7.73 total=20054797229\n"
                                            "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"),
              20054797229u);
    EXPECT_EQ(CpuPressure::parse_some_total("some avg10=0.00 avg60=0.00 avg300=0.00 total=0"), 0u);
    for (const char* bad : {"", "\n", "full avg10=0.00 total=5\n", "some avg10=0.00\n", "some total=\n",
                            "some total=12x\n", "some total=-1\n", "some total=99999999999999999999999\n",
                            "some avg10=0.00 total=1 2\n"})
        EXPECT_EQ(CpuPressure::parse_some_total(bad), std::nullopt) << bad;
}

TEST(CpuPressure, ReadsTheKernelsFileAndRefusesOthers) {
    std::string error;
    CpuPressure kernel("/proc/pressure/cpu", error);
    if (error.empty()) {  // a kernel with PSI: the total only grows
        const auto a = kernel.read(), b = kernel.read();
        ASSERT_TRUE(a && b);
        EXPECT_LE(*a, *b);
    }
    TempDir dir;
    std::ofstream(dir.file("psi")) << "some avg10=1.00 avg60=0.50 avg300=0.10 total=4242\nfull total=0\n";
    error.clear();
    CpuPressure written(dir.file("psi"), error);
    EXPECT_EQ(error, "");
    EXPECT_EQ(written.read(), 4242u);

    std::ofstream(dir.file("long")) << "some total=1" << std::string(300, '0') << "\n";
    error.clear();
    CpuPressure long_line(dir.file("long"), error);
    EXPECT_EQ(error, dir.file("long") + ": no \"some ... total=\" line");

    std::ofstream(dir.file("not-psi")) << "cpu  1 2 3\n";
    error.clear();
    CpuPressure other(dir.file("not-psi"), error);
    EXPECT_EQ(error, dir.file("not-psi") + ": no \"some ... total=\" line");
    EXPECT_EQ(other.read(), std::nullopt);

    error.clear();
    CpuPressure missing(dir.file("missing"), error);
    EXPECT_EQ(error, dir.file("missing") + ": open: No such file or directory");
    EXPECT_EQ(missing.read(), std::nullopt);
}
