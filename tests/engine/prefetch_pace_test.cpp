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
    PrefetchPace::Signal signal = PrefetchPace::Signal::host_pressure;
    PrefetchPace pace{PrefetchPace::Config{.window = 10ms, .host_pressure = {0.10, 0.05}, .vm_run_delay = {0.15, 0.10}},
                      [this]() -> std::optional<PrefetchPace::Stall> {
                          if (!stall) return std::nullopt;
                          return PrefetchPace::Stall{*stall, signal};
                      }};
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

// The VM threads' run delay has bounds of its own (0.10 and 0.15 here): it
// sums over threads, so two threads waiting a tenth of the time are 0.2.
TEST(PrefetchPace, TheVmRunDelayHasItsOwnBounds) {
    PaceHarness h;
    h.signal = PrefetchPace::Signal::vm_run_delay;
    EXPECT_TRUE(h.at(0ms));
    h.stall = 1200;  // 0.12: calm for the host's pressure, not for the VMs' threads
    EXPECT_TRUE(h.at(10ms));
    h.stall = 1200 + 900;
    EXPECT_FALSE(h.at(20ms));
    h.stall = 2100 + 1400;  // 0.14 in steps: within the band
    EXPECT_FALSE(h.at(30ms));
    h.stall = 3500 + 1600;
    EXPECT_TRUE(h.at(40ms));
    EXPECT_EQ(h.pace.switches(), 2u);
}

// A window that began on one signal and ends on the other decides nothing:
// the next one measures on the signal now in use.
TEST(PrefetchPace, AWindowWhoseSignalChangedDecidesNothing) {
    PaceHarness h;
    h.signal = PrefetchPace::Signal::vm_run_delay;
    h.stall = 5000;
    EXPECT_TRUE(h.at(0ms));
    h.signal = PrefetchPace::Signal::host_pressure;
    h.stall = 1000000;  // another clock altogether
    EXPECT_TRUE(h.at(10ms));
    EXPECT_EQ(h.pace.window_end(), h.t0 + 20ms);
    EXPECT_FALSE(h.at(20ms));  // no stall over the host-pressure window
    EXPECT_EQ(h.pace.switches(), 1u);
}

// A burst's first window, and the one after a switch, may be shorter than
// the rest: a short restore is not spent measuring, and a wrong turn is
// soon put right. The windows after them are full length.
TEST(PrefetchPace, ABurstsFirstWindowAndTheOneAfterASwitchMayBeShort) {
    std::optional<uint64_t> stall = 0;
    PrefetchPace pace{PrefetchPace::Config{.window = 50ms, .first_window = 10ms},
                      [&]() -> std::optional<PrefetchPace::Stall> {
                          return PrefetchPace::Stall{*stall, PrefetchPace::Signal::vm_run_delay};
                      }};
    const auto t0 = PrefetchPace::Clock::now();
    EXPECT_TRUE(pace.pause(t0, true));
    EXPECT_EQ(pace.window_end(), t0 + 10ms);
    EXPECT_FALSE(pace.pause(t0 + 10ms, true));  // calm: steps, checked again in 10 ms
    EXPECT_EQ(pace.window_end(), t0 + 20ms);
    EXPECT_FALSE(pace.pause(t0 + 20ms, true));  // still calm: a full window
    EXPECT_EQ(pace.window_end(), t0 + 70ms);
    *stall += 10000;  // 0.2 of the window waiting
    EXPECT_TRUE(pace.pause(t0 + 70ms, true));
    EXPECT_EQ(pace.window_end(), t0 + 80ms);
    EXPECT_FALSE(pace.pause(t0 + 90ms, false));  // quiet: full batches
    EXPECT_TRUE(pace.pause(t0 + 200ms, true));  // a new burst: paused, a short window again
    EXPECT_EQ(pace.window_end(), t0 + 210ms);
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
