#include "engine/stats.hpp"

#include <algorithm>

namespace ringpager {

StatsTable::StatsTable(unsigned reactors, unsigned listeners)
    : reactors_(std::make_unique<ReactorCounters[]>(reactors)),
      reactor_count_(reactors),
      listener_count_(std::max(1u, listeners)),
      vms_(std::make_unique<VmCounters[]>(size_t{reactors} * listener_count_)) {}

StatsTable::ListenerSnapshot StatsTable::listener(unsigned index) const {
    ListenerSnapshot s;
    for (unsigned r = 0; r < reactor_count_; r++) {
        const VmCounters& c = vms_[size_t{r} * listener_count_ + index];
        s.vms_active += c.vms_active.load();
        s.vms_served += c.vms_served.load();
        s.vms_failed += c.vms_failed.load();
        s.vms_resident += c.vms_resident.load();
        s.faults += c.faults.load();
        s.pages_copied += c.pages_copied.load();
        s.pages_prefetched += c.pages_prefetched.load();
        s.pages_zeroed += c.pages_zeroed.load();
        s.pages_poisoned += c.pages_poisoned.load();
        s.copy_ioctls += c.copy_ioctls.load();
        s.bytes_read += c.bytes_read.load();
        s.removed_pages += c.removed_pages.load();
        s.eagain_retries += c.eagain_retries.load();
        s.page_cache_hits += c.page_cache_hits.load();
        c.fault_service.add_to(s.fault_service);
        c.time_to_resident.add_to(s.time_to_resident);
    }
    return s;
}

EngineStats StatsTable::snapshot(const Budgets& budgets) const {
    EngineStats s;
    s.vms_accepted = vms_accepted.load();
    s.vms_refused = vms_refused.load();
    s.vms_released = vms_released_.load();
    s.handshakes_pending = handshakes_pending.load();
    s.accept_pauses = accept_pauses.load();
    s.vm_state_bytes = budgets.vm_state_bytes.load();
    for (unsigned i = 0; i < reactor_count_; i++) {
        const ReactorCounters& c = reactors_[i];
        s.vms_active += c.vms_active.load();
        s.read_buffers_busy += c.buffers_busy.load();
        s.read_buffer_bytes += c.buffers_pinned_bytes.load();
        s.busy_poll_hits += c.busy_poll_hits.load();
        s.busy_poll_misses += c.busy_poll_misses.load();
        s.reactors_prefetch_paused += c.prefetch_paused.load();
        s.prefetch_pace_switches += c.prefetch_pace_switches.load();
        const uint64_t signal = c.prefetch_pace_signal.load();
        if (signal == 1) s.reactors_paced_by_vm_run_delay++;
        if (signal == 2) s.reactors_paced_by_host_pressure++;
    }
    for (size_t i = 0; i < size_t{reactor_count_} * listener_count_; i++) {
        const VmCounters& c = vms_[i];
        s.vms_failed += c.vms_failed.load();
        s.vms_resident += c.vms_resident.load();
        s.faults += c.faults.load();
        s.pages_copied += c.pages_copied.load();
        s.pages_prefetched += c.pages_prefetched.load();
        s.pages_zeroed += c.pages_zeroed.load();
        s.copy_ioctls += c.copy_ioctls.load();
        s.bytes_read += c.bytes_read.load();
        s.removed_pages += c.removed_pages.load();
        s.eagain_retries += c.eagain_retries.load();
        s.events_other += c.events_other.load();
        s.stray_fds_closed += c.stray_fds_closed.load();
        s.page_cache_hits += c.page_cache_hits.load();
        s.ranges_unmapped += c.ranges_unmapped.load();
        s.pages_poisoned += c.pages_poisoned.load();
    }
    return s;
}

std::vector<VmReport> StatsTable::reports() const {
    std::lock_guard lock(mu_);
    return {reports_.begin(), reports_.end()};
}

bool StatsTable::wait_until(const Budgets& budgets, const std::function<bool(const EngineStats&)>& done,
                            std::chrono::milliseconds timeout) const {
    std::unique_lock lock(mu_);
    return changed_.wait_for(lock, timeout, [&] { return done(snapshot(budgets)); });
}

const char* StatsTable::refusal_name(Refusal r) {
    switch (r) {
        case Refusal::handshake: return "handshake";
        case Refusal::limits: return "limits";
        case Refusal::memory: return "memory";
        case Refusal::max_vms: return "max_vms";
        case Refusal::fds: return "fds";
        case Refusal::uid: return "uid";
        case Refusal::stopping: return "stopping";
        case Refusal::reactor_full: return "reactor_full";
        case Refusal::count: break;
    }
    return "?";
}

void StatsTable::vm_released(const VmReport& report) {
    {
        std::lock_guard lock(mu_);
        if (reports_.size() == kMaxReports) reports_.pop_front();
        reports_.push_back(report);
        vms_released_.fetch_add(1);
    }
    changed_.notify_all();
}

void StatsTable::vm_dropped() {
    vms_released_.fetch_add(1);
    changed();
}

void StatsTable::changed() {
    std::lock_guard lock(mu_);
    changed_.notify_all();
}

}  // namespace ringpager
