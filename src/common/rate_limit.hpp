// RateLimitedLine: at most one log line per period for a condition that can
// repeat millions of times a second (an fd table at its limit), with a count
// of the lines left out.
#pragma once

#include <chrono>
#include <cstdint>
#include <utility>

namespace ringpager {

class RateLimitedLine {
public:
    using Clock = std::chrono::steady_clock;
    explicit RateLimitedLine(Clock::duration period = std::chrono::seconds(10)) : period_(period) {}

    // True when a line may be written now; `suppressed` is then how many
    // were left out since the last one.
    bool allow(Clock::time_point now, uint64_t& suppressed) {
        if (now < next_) {
            suppressed_++;
            return false;
        }
        next_ = now + period_;
        suppressed = std::exchange(suppressed_, 0);
        return true;
    }

private:
    Clock::duration period_;
    Clock::time_point next_{};
    uint64_t suppressed_ = 0;
};

}  // namespace ringpager
