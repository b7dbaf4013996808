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
#include "reactor/prefetch_pace.hpp"
#include "reactor/counters.hpp"
#include "ringpager/engine.hpp"
#include "ringpager/source.hpp"

namespace ringpager {

struct ReactorConfig {
    unsigned index = 0;
    std::vector<const Source*> sources;      // the engine's distinct sources; a VM names one by index
    unsigned max_vms = 2000;                 // fixed-file slots for uffds (sized to RLIMIT_NOFILE)
    size_t mailbox_vms = 1024;               // VMs handed over but not yet adopted
    std::chrono::microseconds busy_poll_max{50};
    std::chrono::microseconds fault_quiet_period{2000};  // EngineConfig::fault_quiet_period
    // PrefetchDuringFaults::automatic: the pause follows the VM processes'
    // threads' run delay under `proc_root`, or where those cannot be read
    // the CPU pressure in `cpu_pressure_path` (either empty: not read).
    // Otherwise Prefetcher::Config::pause_during_faults decides.
    bool pace_prefetch = false;
    std::string cpu_pressure_path;
    std::string proc_root;
    PrefetchPace::Config pace;
    int nice = -10;
    bool kill_on_failure = false;
    PagerConfig pager;
    Prefetcher::Config prefetch;
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
