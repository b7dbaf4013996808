// The VM lifecycle on its reactor: adopt a handed-over VM, watch its uffd,
// pidfd and connection, close it (cancelling its ops), destroy it once no op
// names it any more.
#include <poll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstring>

#include "common/log.hpp"
#include "common/pidfd.hpp"
#include "common/unix_socket.hpp"
#include "reactor/reactor_impl.hpp"
#include "snapshot/working_set.hpp"

namespace ringpager {

void Reactor::Impl::adopt(std::unique_ptr<VmSetup> setup) {
    const std::string who = "vm " + std::to_string(setup->id) + " (pid " + std::to_string(setup->pid) + ")";
    if (stopping || draining || vms.size() - free_vm_slots.size() >= config.max_vms || io->ops_free() < 64) {
        RP_WARN("%s: refused: reactor %u is %s", who.c_str(), config.index,
                stopping || draining ? "shutting down" : "at its VM limit");
        kill_if_asked(*setup, who);
        sink.vm_dropped();
        return;
    }
    uint32_t slot;
    if (!free_vm_slots.empty()) {
        slot = free_vm_slots.back();
        free_vm_slots.pop_back();
    } else {
        slot = static_cast<uint32_t>(vms.size());
        vms.emplace_back();
    }
    auto vm = std::make_unique<Vm>();
    vm->setup = std::move(*setup);
    vm->slot = slot;
    vm->gen = ++vm_generation;
    vm->started = std::chrono::steady_clock::now();
    // The pager refers to the setup's uffd and source: the Vm never moves.
    vm->events = listener_events[std::min<size_t>(vm->setup.listener_index, listener_events.size() - 1)].get();
    vm->pager = std::make_unique<VmPager>(*pager_context, *vm->events, PagerIdentity{vm->setup.id, slot, vm->gen, who},
                                          vm->setup.uffd, *vm->setup.source, vm->setup.source_index,
                                          vm->setup.handshake.regions,
                                          std::move(vm->setup.states));  // sized by the acceptor, within the memory bound
    vm->pager->report().pid = vm->setup.pid;
    use_working_sets(*vm);
    auto file_slot = io->add_file(vm->setup.uffd.fd());
    if (!file_slot) {
        RP_ERROR("%s: cannot register its userfaultfd with the ring: %s", who.c_str(),
                 file_slot.error().message().c_str());
        kill_if_asked(vm->setup, who);
        free_vm_slots.push_back(slot);
        sink.vm_dropped();
        return;
    }
    vm->uffd_file_slot = *file_slot;
    Vm& v = *vm;
    vms[slot] = std::move(vm);
    counters.add(counters.vms_active, 1);
    bump(v.events->counters().vms_active);
    arm_uffd_read(v);
    if (v.setup.pidfd.valid()) arm_poll(v, OpKind::pid_poll, v.setup.pidfd.get(), POLLIN);
    arm_poll(v, OpKind::conn_poll, v.setup.conn.get(), POLLIN | POLLRDHUP);
    // Firecracker faults right away during the restore call: start the
    // prefetcher in its small-step mode.
    last_fault_seen = std::chrono::steady_clock::now();
    if (v.setup.mode == ServeMode::prefetch) start_prefetch(v);
    RP_DEBUG("%s: served by reactor %u", v.name().c_str(), config.index);
    sink.changed();  // vms_active moved
}

void Reactor::Impl::start_prefetch(Vm& vm) { prefetcher.add(*vm.pager); }

// Where a run of this VM's pages starting at `page` is stored: replay reads
// follow the source's files in offset order (prefetch_order.hpp). The map
// is the handshake's: a page keeps its file offset when the VM moves it.
static ReplayFileKey replay_file_key(const Vm& vm) {
    return [map = AddressMap(vm.setup.handshake.regions), source = vm.setup.source](uint64_t page) {
        const auto place = map.place_of(page);
        if (!place) return std::pair<uint64_t, uint64_t>{UINT64_MAX, page};
        const SourceExtent e = source->lookup(place->file_offset, place->page_size);
        if (e.kind == SourceExtent::Kind::zero) return std::pair<uint64_t, uint64_t>{UINT64_MAX, page};
        return std::pair<uint64_t, uint64_t>{e.file_index, e.file_offset};
    };
}

// The VM's pages whose source bytes are zero, as runs in ascending order:
// installed right after a replayed set (no reads), before the rest. One
// lookup per extent of the source over the VM's regions, and at most
// kMaxZeroRuns runs (1 MiB, not charged to --memory-limit): zero extents
// past them are installed by the ascending walk, as without a set.
static std::vector<PageRun> zero_runs(const Vm& vm) {
    constexpr size_t kMaxZeroRuns = 65536;
    std::vector<PageRun> runs;
    const Source& source = *vm.setup.source;
    uint64_t page = 0;
    for (const Region& r : vm.setup.handshake.regions) {
        const uint64_t ps = r.page_size_bytes;
        for (uint64_t at = 0; at < r.size_bytes && r.offset_bytes + at < source.size_bytes();) {
            const SourceExtent e = source.lookup(r.offset_bytes + at, r.size_bytes - at);
            if (e.length_bytes == 0) break;
            // Whole pages only: an extent may start or end inside a huge page.
            const uint64_t first = (at + ps - 1) / ps, end = (at + e.length_bytes) / ps;
            if (e.kind == SourceExtent::Kind::zero && end > first) runs.push_back({page + first, end - first});
            if (runs.size() == kMaxZeroRuns) return runs;
            at += e.length_bytes;
        }
        page += r.page_count();
    }
    return runs;
}

// A working set to replay (the listener's prefetch_first) goes first in the
// prefetcher's order, if the VM's pages have the size it was recorded with;
// recording starts with the VM.
void Reactor::Impl::use_working_sets(Vm& vm) {
    const auto& first = vm.setup.prefetch_first;
    const uint64_t page_size = vm.setup.handshake.regions.empty() ? 0 : vm.setup.handshake.regions[0].page_size_bytes;
    if (first && !first->empty()) {
        if (vm.setup.prefetch_first_page_size != 0 && vm.setup.prefetch_first_page_size != page_size) {
            RP_WARN("%s: the working set was recorded with %llu-byte pages, this VM has %llu-byte pages: served "
                    "without replay", vm.pager->name().c_str(), (unsigned long long)vm.setup.prefetch_first_page_size,
                    (unsigned long long)page_size);
        } else {
            vm.pager->use_prefetch_order(make_recorded_order(*first, replay_shape_for(page_size), replay_file_key(vm),
                                                             zero_runs(vm)));
            vm.pager->track_working_set(*first);
        }
    }
    if (vm.setup.record_ws) vm.pager->record_working_set();
}

// Writes the VM's recorded working set (at release, or when the operator
// asks: ringpager ctl record-ws), on this thread: one small file, written
// and fsynced once per request. The recording goes on after a request.
bool Reactor::Impl::write_working_set(Vm& vm, std::string& path, uint64_t& pages, std::string& error) {
    const WorkingSetRecording& rec = *vm.setup.record_ws;
    path = rec.path;
    if (const size_t at = path.find("{vm}"); at != std::string::npos)
        path.replace(at, 4, std::to_string(vm.setup.id));
    WorkingSet set;
    set.page_size_bytes = vm.setup.handshake.regions.empty() ? 4096 : vm.setup.handshake.regions[0].page_size_bytes;
    set.identity = {rec.source_size_bytes, rec.source_fingerprint};
    set.runs = runs_from_pages(vm.pager->recorded_pages());
    pages = set.pages();
    if (!write_working_set_file(path, set, error)) {
        RP_ERROR("%s: working set not written: %s", vm.name().c_str(), error.c_str());
        return false;
    }
    RP_INFO("%s: working set of %llu pages (%zu runs) written to %s", vm.name().c_str(),
            (unsigned long long)set.pages(), set.runs.size(), path.c_str());
    return true;
}

// A VM that cannot be served hangs on its next fault; its operator asked for
// it to be killed instead (--kill-on-failure). Only ever through its pidfd.
void Reactor::Impl::kill_if_asked(const VmSetup& setup, const std::string& who) {
    if (!config.kill_on_failure || setup.pid == getpid()) return;
    const std::string why_not = kill_through_pidfd(setup.pidfd);
    if (why_not.empty()) RP_ERROR("%s: killed with SIGKILL through its pidfd (--kill-on-failure)", who.c_str());
    else RP_ERROR("%s: could not be killed: %s", who.c_str(), why_not.c_str());
}

// Graceful stop (Engine::request_drain). Resident VMs are released now; the
// others are prefetched to resident and released as they get there
// (drain_step); whatever is left at the deadline goes loudly (end_drain).
void Reactor::Impl::begin_drain(std::chrono::steady_clock::time_point deadline) {
    draining = true;
    if (service) service->stop(self);
    for (auto& v : vms) {
        if (!v || v->closing) continue;
        if (v->resident()) close_vm(*v, "engine stopping (the VM was resident)", false);
        else start_prefetch(*v);
    }
    const auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return end_drain();
    RP_INFO("reactor %u: stopping: finishing %zu restore(s) within %lld ms", config.index,
            prefetcher.size(), static_cast<long long>(left.count() / 1000000));
    drain_timer_op = arm_timeout(OpKind::drain_timer, drain_ts, left);
    drain_step();
}

void Reactor::Impl::drain_step() {
    bool all_released = true;
    for (auto& v : vms) {
        if (!v || v->closing) continue;
        if (v->resident()) close_vm(*v, "engine stopping (restore finished)", false);
        else all_released = false;
    }
    if (!all_released) return;
    stopping = true;  // the loop ends once every VM is destroyed
    if (drain_timer_op != 0) self.cancel_op(drain_timer_op);
}

void Reactor::Impl::end_drain() {
    stopping = true;
    for (auto& v : vms)
        if (v && !v->closing) release_at_stop(*v, "the stop timeout passed");
}

// Releases a VM because the engine stops. A VM that is not resident still
// needs the pager for pages it has not touched: it hangs on its next fault
// there, so this is a failure, said in one line and killed under
// --kill-on-failure.
void Reactor::Impl::release_at_stop(Vm& vm, const std::string& why) {
    if (vm.resident()) return close_vm(vm, "engine stopping (the VM was resident)", false);
    close_vm(vm, "released before it was resident: " + why + "; " + std::to_string(vm.pager->states().missing_count()) +
                     " of " + std::to_string(vm.pager->states().size()) + " pages were never served and it hangs on its next "
                     "fault there",
             true);
}

void Reactor::Impl::arm_uffd_read(Vm& vm) {
    if (vm.closing || vm.uffd_read_op != 0) return;
    vm.uffd_read_op = io->read(op_data(OpKind::uffd_read, vm.slot, vm.gen), vm.uffd_file_slot, vm.pager->msg_buffer(),
                               VmPager::msg_buffer_bytes());
    vm.ops_outstanding++;
}

void Reactor::Impl::arm_poll(Vm& vm, OpKind kind, int fd, unsigned events) {
    (kind == OpKind::pid_poll ? vm.pid_poll_op : vm.conn_poll_op) = io->poll(op_data(kind, vm.slot, vm.gen), fd, events);
    vm.ops_outstanding++;
}

// The connection stays open for the VM's life (Firecracker >= 1.12). Later
// messages are read and ignored; any fds they carry are closed, never kept.
void Reactor::Impl::on_conn_ready(Vm& vm, int32_t res) {
    if (vm.closing || res < 0) return;
    bool hung_up = (res & (POLLHUP | POLLRDHUP | POLLERR)) != 0;
    for (;;) {
        char data[4096];
        std::vector<FileDesc> fds;  // closed at end of scope: we serve only the first uffd
        const Received r = receive_with_fds(vm.setup.conn.get(), data, sizeof data, fds);
        if (!fds.empty()) {
            RP_WARN("%s: closed %zu unexpected fd(s) sent after the handshake", vm.name().c_str(), fds.size());
            bump(vm.events->counters().stray_fds_closed, fds.size());
            sink.changed();
        }
        if (r.bytes > 0) {
            RP_DEBUG("%s: ignored %zd bytes sent after the handshake", vm.name().c_str(), r.bytes);
            continue;
        }
        if (r.bytes == 0) hung_up = true;
        break;
    }
    if (!hung_up) {
        arm_poll(vm, OpKind::conn_poll, vm.setup.conn.get(), POLLIN | POLLRDHUP);
        return;
    }
    // Firecracker >= 1.12 closes the connection only when it exits. Older
    // versions close it right after the handshake; for them the pidfd decides.
    if (vm.setup.handshake.shape == HandshakeShape::both_fields || !vm.setup.pidfd.valid())
        close_vm(vm, "peer closed the connection", false);
}

void Reactor::Impl::close_vm(Vm& vm, const std::string& reason, bool failure) {
    if (vm.closing) return;
    vm.closing = true;
    vm.failed = failure;
    vm.end_reason = reason;
    if (failure) {
        RP_ERROR("%s: %s", vm.name().c_str(), reason.c_str());
        bump(vm.events->counters().vms_failed);
        kill_if_asked(vm.setup, vm.name());
    }
    for (uint64_t op : {vm.uffd_read_op, vm.pid_poll_op, vm.conn_poll_op})
        if (op != 0) self.cancel_op(op);
    vm.pager->mark_closing();
    // Its jobs are released at the end of the turn (VmPager::release_jobs):
    // the pager may be iterating them right now.
    mark_turn(vm);
}

void Reactor::Impl::destroy_vm(Vm& vm) {
    const auto now = std::chrono::steady_clock::now();
    VmReport& report = vm.pager->report();
    report.seconds_served = std::chrono::duration<double>(now - vm.started).count();
    report.end_reason = vm.end_reason;
    std::string extra;
    if (report.seconds_to_resident >= 0)
        extra += ", resident after " + std::to_string(static_cast<int>(report.seconds_to_resident * 1000)) + " ms";
    if (vm.pager->ranges_unmapped() != 0)
        extra += ", " + std::to_string(vm.pager->ranges_unmapped()) + " unmapped range(s) dropped";
    vm.pager->finish_working_set_report();
    if (report.ws_pages != 0)
        extra += ", working set of " + std::to_string(report.ws_pages) + " pages: " + std::to_string(report.ws_saved) +
                 " installed ahead of a fault (faults saved), " + std::to_string(report.ws_missed) +
                 " faults on set pages still missing";
    if (report.ws_read_bytes != 0) {
        char read[160];
        snprintf(read, sizeof read, "; replay read %.1f MiB in %.1f ms (%llu reads, in flight %.1f ms)",
                 report.ws_read_bytes / 1048576.0, report.ws_read_seconds * 1000, (unsigned long long)report.ws_reads,
                 report.ws_read_busy_seconds * 1000);
        extra += read;
    }
    if (vm.pager->recording_working_set()) extra += ", " + std::to_string(report.ws_recorded) + " pages recorded";
    char text[256];
    snprintf(text, sizeof text, "%llu faults, %llu pages copied on fault, %llu prefetched, %llu zero-filled, %.1f MiB read",
             (unsigned long long)report.faults, (unsigned long long)report.pages_copied_on_fault,
             (unsigned long long)report.pages_prefetched, (unsigned long long)report.pages_zeroed,
             report.bytes_read / 1048576.0);
    RP_EVENT(LogLevel::info, "vm_released",
             {{"vm", vm.setup.id}, {"pid", vm.setup.pid}, {"listener", vm.setup.socket_path},
              {"result", vm.failed ? "failed" : "served"}, {"reason", vm.end_reason},
              {"seconds_served", report.seconds_served}, {"seconds_to_resident", report.seconds_to_resident},
              {"faults", report.faults}, {"pages_copied_on_fault", report.pages_copied_on_fault},
              {"pages_prefetched", report.pages_prefetched}, {"pages_zeroed", report.pages_zeroed},
              {"bytes_read", report.bytes_read}, {"ranges_unmapped", vm.pager->ranges_unmapped()},
              {"ws_pages", report.ws_pages}, {"ws_saved", report.ws_saved}, {"ws_missed", report.ws_missed},
              {"ws_recorded", report.ws_recorded}, {"ws_read_bytes", report.ws_read_bytes},
              {"ws_reads", report.ws_reads}, {"ws_read_seconds", report.ws_read_seconds},
              {"ws_read_busy_seconds", report.ws_read_busy_seconds}},
             vm.name() + ": released (" + vm.end_reason + "): " + text + extra);
    // A VM that failed (its restore cut short) would replace a good set with
    // a partial one: only a VM served to its end is written.
    if (vm.pager->recording_working_set() && !vm.failed) {
        std::string path, error;
        uint64_t pages = 0;
        write_working_set(vm, path, pages, error);
    }
    else if (vm.pager->recording_working_set())
        RP_WARN("%s: working set not written: the VM failed", vm.name().c_str());
    io->remove_file(vm.uffd_file_slot);
    prefetcher.remove(*vm.pager);
    const uint32_t slot = vm.slot;
    const VmReport final_report = report;
    VmCounters& listener = vm.events->counters();
    vms[slot].reset();  // closes the uffd, the connection and the pidfd
    free_vm_slots.push_back(slot);
    // Single writer: a relaxed load and store (no locked instruction).
    counters.vms_active.store(counters.vms_active.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
    listener.vms_active.store(listener.vms_active.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
    bump(listener.vms_served);
    sink.vm_released(final_report);
}

// The control API's question: this reactor's VMs (or the one named), after
// acting on it (release, switch to prefetch). Runs on the reactor's thread.
void Reactor::Impl::answer(VmQuery& query) {
    std::vector<VmInfo> infos;
    if (query.action == VmQuery::Action::ping) return query.answer({});
    const auto now = std::chrono::steady_clock::now();
    for (auto& v : vms) {
        if (!v || v->closing || (query.vm_id != 0 && v->setup.id != query.vm_id)) continue;
        if (query.action == VmQuery::Action::release) close_vm(*v, "released by the operator (ringpager ctl release)", false);
        if (query.action == VmQuery::Action::prefetch) start_prefetch(*v);
        VmInfo info;
        if (query.action == VmQuery::Action::record_ws) {
            if (!v->pager->recording_working_set())
                info.ws_error = "it is not recording a working set (serve --record-ws)";
            else
                write_working_set(*v, info.ws_path, info.ws_pages, info.ws_error);
        }
        const VmPager& pager = *v->pager;
        const PageStates& states = pager.states();
        const Histogram::Snapshot latency = pager.fault_service().snapshot();
        info.id = v->setup.id;
        info.pid = v->setup.pid;
        info.listener = v->setup.listener_index;
        info.reactor = config.index;
        info.prefetching = pager.prefetching();
        info.age_seconds = std::chrono::duration<double>(now - v->started).count();
        info.pages_total = states.size();
        info.pages_missing = states.missing_count();
        info.pages_in_flight = states.in_flight_count();
        info.pages_removed = states.count(PageState::removed);
        info.pages_present = info.pages_total - info.pages_missing - info.pages_in_flight - info.pages_removed;
        info.faults = v->pager->report().faults;
        info.seconds_to_resident = v->pager->report().seconds_to_resident;
        info.fault_p50_seconds = latency.quantile(0.5);
        info.fault_p99_seconds = latency.quantile(0.99);
        infos.push_back(std::move(info));
    }
    query.answer(std::move(infos));
}

}  // namespace ringpager
