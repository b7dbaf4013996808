#include "pager/prefetcher.hpp"

#include <algorithm>

namespace ringpager {

void Prefetcher::add(VmPager& vm) {
    if (vm.prefetching()) return;
    vm.start_prefetch();
    round_.push_back(&vm);
}

void Prefetcher::remove(VmPager& vm) {
    auto it = std::find(round_.begin(), round_.end(), &vm);
    if (it == round_.end()) return;
    round_.erase(it);
    vm.stop_prefetch();
}

// Zero runs are installed at once (no read); data runs become big reads.
bool Prefetcher::step(const ReadJobs& jobs, PagerHost& host, bool faults_recent, const Config& config) {
    // A replayed working set keeps its full budget while faults arrive: its
    // reads are a recorded run each (a few pages), so a fault waits behind
    // little, and the faults arriving are for the pages it is installing.
    const bool replaying = std::any_of(round_.begin(), round_.end(), [](const VmPager* vm) { return vm->replaying(); });
    const unsigned budget = faults_recent && !replaying ? kBusyBatchesInFlight : config.batches_in_flight;
    const uint64_t batch_bytes = faults_recent ? std::min(config.batch_bytes, kBusyBatchBytes) : config.batch_bytes;
    // Paused: only a replayed set goes (its pages are the ones faulted);
    // with none in the round, not even fault work is asked for.
    const bool pause = faults_recent && config.pause_during_faults;
    if (pause && !replaying) return !round_.empty();
    bool held_back = false;
    size_t idle_rounds = 0;
    unsigned zero_runs = 0;
    while (!round_.empty() && jobs.prefetch_in_flight() < budget && idle_rounds < round_.size()) {
        // While faults flow, one that came in meanwhile goes before the
        // next run: its uffd read is armed already (Reactor's on_uffd_read),
        // and asking costs no syscall when nothing came. Prefetch still
        // moves: install_completed installs a run per turn before it yields.
        if (faults_recent && host.fault_work_pending()) break;
        if (pos_ >= round_.size()) pos_ = 0;
        VmPager& vm = *round_[pos_];
        if (pause && !vm.replaying()) {
            held_back = true;
            pos_++;
            idle_rounds++;
            continue;
        }
        const VmPager::Step step = vm.prefetch_run(batch_bytes);
        if (step == VmPager::Step::done) {
            round_.erase(round_.begin() + static_cast<long>(pos_));
            vm.stop_prefetch();
            vm.note_resident();
            continue;
        }
        pos_++;
        if (step == VmPager::Step::no_buffer) break;  // next turn
        if (step == VmPager::Step::waiting) {         // on its fetches: the others go on
            idle_rounds++;
            continue;
        }
        idle_rounds = 0;
        if (step == VmPager::Step::zero_run || step == VmPager::Step::skipped) {
            host.more_work();
            if (++zero_runs >= (faults_recent ? 4u : 32u)) break;  // keep the turn short: faults come first
        }
    }
    return held_back;
}

}  // namespace ringpager
