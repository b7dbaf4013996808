// Pins Engine::reactors_responsive, what the systemd watchdog asks before
// each WATCHDOG=1: true while every reactor runs its loop, false while one is
// parked (a barrier, no sleeps), true again once it runs.
#include <gtest/gtest.h>

#include "common/engine_fixture.hpp"
#include "common/parker.hpp"
#include "reactor/test_hooks.hpp"

using namespace ringpager;
using namespace ringpager::testing;

namespace {

constexpr uint64_t MiB = 1024 * 1024;

// Parks reactor `index` at its next mailbox take until released.
class Park {
public:
    explicit Park(unsigned index) {
        test_hooks::arm(test_hooks::Point::before_take_mail, [this, index](uint64_t reactor, uint64_t) {
            if (reactor == index) parker_.park();
        });
    }
    ~Park() {
        release();
        test_hooks::disarm(test_hooks::Point::before_take_mail);
    }
    bool wait_parked() { return parker_.wait_parked(); }
    void release() { parker_.release(); }

private:
    Parker parker_;
};

TEST(LivenessTest, AParkedReactorIsNotResponsiveUntilItRunsAgain) {
    TempDir dir;
    const std::string mem = make_image(dir, "mem", 4 * MiB);
    std::string error;
    std::shared_ptr<const Source> source = open_raw_source(mem, error);
    ASSERT_TRUE(source) << error;
    EngineConfig config;
    config.listeners.push_back({dir.file("vm.sock"), source, ServeMode::lazy});
    config.reactors = 2;
    auto engine = Engine::start(std::move(config), error);
    ASSERT_TRUE(engine) << error;
    EXPECT_TRUE(engine->reactors_responsive(std::chrono::milliseconds(kWait)));
    {
        Park park(1);
        // The ping wakes reactor 1, which parks before it takes its mail. A
        // turn already past that point when the hook was armed may answer the
        // first; the turn that takes the next one passes the hook and parks.
        bool answered = engine->reactors_responsive(std::chrono::milliseconds(20));
        if (answered) answered = engine->reactors_responsive(std::chrono::milliseconds(20));
        EXPECT_FALSE(answered);
        ASSERT_TRUE(park.wait_parked());
        EXPECT_FALSE(engine->reactors_responsive(std::chrono::milliseconds(20)));  // the same ping, still unanswered
        park.release();
        EXPECT_TRUE(engine->reactors_responsive(std::chrono::milliseconds(kWait)));
    }
    EXPECT_TRUE(engine->reactors_responsive(std::chrono::milliseconds(kWait)));
    engine->request_stop();
    EXPECT_TRUE(engine->wait());
}

}  // namespace
