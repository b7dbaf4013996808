// A VmPager's side of working sets (issue 11): recording the pages of its
// first on-demand faults in order, and counting what a replayed set saved.
// The file format and its writing live in src/snapshot/working_set.cpp.
#include <algorithm>

#include "pager/vm_pager.hpp"

namespace ringpager {

void VmPager::record_working_set() {
    ws_recording_ = true;
    ws_faulted_.assign(states_.size(), false);
}

void VmPager::track_working_set(const std::vector<PageRun>& runs) {
    ws_member_.assign(states_.size(), false);
    ws_faulted_.assign(states_.size(), false);
    for (const PageRun& r : runs)
        for (uint64_t p = r.first_page; p < r.first_page + r.pages && p < states_.size(); p++) {
            if (!ws_member_[p]) report_.ws_pages++;
            ws_member_[p] = true;
        }
}

// Called for every fault message, in the order the kernel queued them, after
// this turn's events were applied: the state read here is the page's state
// when its fault is served.
void VmPager::note_fault(uint64_t page) {
    if (page >= ws_faulted_.size() || ws_faulted_[page]) return;
    ws_faulted_[page] = true;
    const PageState state = states_.get(page);
    if (ws_recording_ && state == PageState::missing) {
        // Grows by doubling but never past one entry per page: the
        // handshake charged exactly that (working_set_bytes).
        if (ws_recorded_.size() == ws_recorded_.capacity())
            ws_recorded_.reserve(std::min<uint64_t>(states_.size(), std::max<uint64_t>(1024, 2 * ws_recorded_.capacity())));
        ws_recorded_.push_back(page);
    }
    // In flight counts as missed: the replay started the read, but the vCPU
    // still waits for it.
    if (!ws_member_.empty() && ws_member_[page] && (state == PageState::missing || state == PageState::in_flight))
        report_.ws_missed++;
}

// A replay read went to the ring: the reads are busy from now until the
// last one out completes (VmReport::ws_read_busy_seconds).
void VmPager::replay_read_issued() {
    if (replay_reads_out_++ == 0) replay_busy_from_ = std::chrono::steady_clock::now();
}

void VmPager::replay_read_done() {
    if (replay_reads_out_ == 0 || --replay_reads_out_ != 0) return;
    report_.ws_read_busy_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - replay_busy_from_).count();
}

// A replay read ran inline from `from` to now: busy then, unless ring reads
// were out meanwhile (their interval covers it).
void VmPager::replay_read_inline(std::chrono::steady_clock::time_point from) {
    if (replay_reads_out_ == 0)
        report_.ws_read_busy_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - from).count();
}

// A replay span's read completed (or was read inline): `bytes` of it.
void VmPager::note_replay_read(uint64_t bytes) {
    report_.ws_read_bytes += bytes;
    report_.ws_reads++;
    ws_read_last_ = std::chrono::steady_clock::now();
}

void VmPager::finish_working_set_report() {
    report_.ws_recorded = ws_recorded_.size();
    if (report_.ws_read_bytes != 0)
        report_.ws_read_seconds = std::chrono::duration<double>(ws_read_last_ - ws_read_first_).count();
    if (ws_member_.empty()) return;
    uint64_t saved = 0;
    for (uint64_t p = 0; p < ws_member_.size(); p++)
        saved += ws_member_[p] && !ws_faulted_[p] && states_.get(p) == PageState::present;
    report_.ws_saved = saved;
}

}  // namespace ringpager
