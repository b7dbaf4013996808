// The one clock every guest simulator measurement uses.
#pragma once

#include <time.h>

#include <cstdint>

namespace ringpager::sim {

// CLOCK_MONOTONIC in nanoseconds. clock_gettime cannot fail for this clock
// with a valid pointer, so the result is not checked.
inline uint64_t monotonic_ns() {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace ringpager::sim
