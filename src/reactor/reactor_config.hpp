// What a reactor is given at start (ReactorConfig, a value it keeps), where
// it counts (ReactorCounters, one block per reactor in the engine's stats
// table) and whom it tells when a VM leaves (ReactorSink). A reactor never
// reaches into the engine otherwise.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "pager/prefetcher.hpp"
#include "pager/vm_pager.hpp"
#include "ringpager/engine.hpp"
#include "ringpager/source.hpp"

namespace ringpager {

struct ReactorConfig {
    unsigned index = 0;
    std::vector<const Source*> sources;      // the engine's distinct sources; a VM names one by index
    unsigned max_vms = 2000;                 // fixed-file slots for uffds (sized to RLIMIT_NOFILE)
    size_t mailbox_vms = 1024;               // VMs handed over but not yet adopted
    std::chrono::microseconds busy_poll_max{50};
    int nice = -10;
    bool kill_on_failure = false;
    PagerConfig pager;
    Prefetcher::Config prefetch;
};

// Written by the reactor's thread only; read by anyone (relaxed atomics).
struct ReactorCounters {
    std::atomic<uint64_t> vms_active{0}, vms_failed{0}, faults{0}, pages_copied{0}, pages_prefetched{0},
        pages_zeroed{0}, copy_ioctls{0}, bytes_read{0}, removed_pages{0}, eagain_retries{0}, events_other{0}, vms_resident{0},
        buffers_busy{0}, stray_fds_closed{0}, page_cache_hits{0}, busy_poll_hits{0}, busy_poll_misses{0},
        ranges_unmapped{0}, pages_poisoned{0};
    void add(std::atomic<uint64_t>& c, uint64_t n) { c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
};

// The engine's side of what a reactor reports (off the fault path).
class ReactorSink {
public:
    virtual ~ReactorSink() = default;
    // A VM was served and is gone: its report.
    virtual void vm_released(const VmReport& report) = 0;
    // A VM handed over could not be adopted (the reactor was stopping or full).
    virtual void vm_dropped() = 0;
    // A counter moved that someone may wait on (a VM became resident).
    virtual void changed() = 0;
};

}  // namespace ringpager
