// The counters a reactor writes (one thread each: relaxed atomics, no lock,
// no syscall) and anyone reads: per listener the VM-level figures
// (VmCounters, what metrics label by listener), per reactor its own
// (ReactorCounters). The engine's StatsTable owns them and sums them.
#pragma once

#include <atomic>
#include <cstdint>

#include "common/histogram.hpp"

namespace ringpager {

// What the VMs of one listener on one reactor did.
struct VmCounters {
    std::atomic<uint64_t> vms_active{0}, vms_served{0}, vms_failed{0}, vms_resident{0}, faults{0}, pages_copied{0},
        pages_prefetched{0}, pages_zeroed{0}, copy_ioctls{0}, bytes_read{0}, removed_pages{0}, eagain_retries{0},
        events_other{0}, stray_fds_closed{0}, page_cache_hits{0}, ranges_unmapped{0}, pages_poisoned{0};
    Histogram fault_service;     // from the fault message read to the install that wakes it
    Histogram time_to_resident;  // from adoption to every page present or removed
};

// The reactor's own figures.
struct ReactorCounters {
    std::atomic<uint64_t> vms_active{0}, buffers_busy{0}, buffers_pinned_bytes{0}, busy_poll_hits{0},
        busy_poll_misses{0};
    // PrefetchDuringFaults::automatic: 1 while the pace holds prefetch back
    // (faults flowing, CPUs contended), and how often it changed its mind.
    std::atomic<uint64_t> prefetch_paused{0}, prefetch_pace_switches{0};
    // Which signal its last window read: 0 none, 1 its VMs' run delay, 2 the host's CPU pressure.
    std::atomic<uint64_t> prefetch_pace_signal{0};
    void add(std::atomic<uint64_t>& c, uint64_t n) { bump(c, n); }
};

}  // namespace ringpager
