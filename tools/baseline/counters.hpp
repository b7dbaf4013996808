// Counters the baseline's VM threads update concurrently.
#pragma once

#include <atomic>
#include <cstdint>

#include "baseline/server.hpp"

namespace ringpager::baseline {

struct Counters {
    std::atomic<uint64_t> connections_accepted{0};
    std::atomic<uint64_t> handshake_failures{0};
    std::atomic<uint64_t> faults{0};
    std::atomic<uint64_t> pages_copied{0};
    std::atomic<uint64_t> pages_zeroed{0};
    std::atomic<uint64_t> eexist{0};
    std::atomic<uint64_t> eagain{0};
    std::atomic<uint64_t> remove_events{0};
};

}  // namespace ringpager::baseline
