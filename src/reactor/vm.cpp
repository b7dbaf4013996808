// A VM's side of a loop turn: read uffd messages, apply events, classify
// faults by page state, issue reads (faults first, then prefetch).
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include <sys/uio.h>

#include "common/log.hpp"
#include "pager/install.hpp"
#include "reactor/reactor_impl.hpp"
#include "reactor/test_hooks.hpp"

namespace ringpager {

void Reactor::Impl::on_uffd_read(Vm& vm, int32_t res) {
    if (vm.closing) return;
    if (res < 0) {
        const int err = io::error_of(res);
        if (err == EAGAIN || err == EINTR) {
            mark_turn(vm);  // re-armed at the end of the turn
            return;
        }
        close_vm(vm, std::string("reading its userfaultfd failed: ") + std::strerror(err), true);
        return;
    }
    const size_t count = static_cast<size_t>(res) / sizeof(uffd_msg);
    vm.turn_msgs.insert(vm.turn_msgs.end(), vm.msgs, vm.msgs + count);
    // A full buffer means more may be queued: drain the uffd completely now,
    // so every event of this turn is applied before any fault (DESIGN.md).
    while (count == kUffdMsgsPerRead) {
        const ssize_t n = read(vm.setup.uffd.fd(), vm.msgs, sizeof vm.msgs);
        if (n <= 0) break;  // EAGAIN: drained
        vm.turn_msgs.insert(vm.turn_msgs.end(), vm.msgs, vm.msgs + static_cast<size_t>(n) / sizeof(uffd_msg));
        if (static_cast<size_t>(n) < sizeof vm.msgs) break;
    }
    mark_turn(vm);
}

namespace {

ssize_t pread_nowait(int fd, void* into, uint64_t len, uint64_t offset) {
    iovec iov{into, len};
    ssize_t n;
    do {
        n = preadv2(fd, &iov, 1, static_cast<off_t>(offset), RWF_NOWAIT);
    } while (n < 0 && errno == EINTR);
    return n;
}

// Pages of `map` overlapping [start, end), as global page ranges.
template <typename Fn>
void for_pages_in_range(const AddressMap& map, uint64_t start, uint64_t end, Fn fn) {
    for (const AddressExtent& e : map.extents()) {
        const uint64_t lo = std::max(start, e.addr), hi = std::min(end, e.end());
        if (lo >= hi) continue;
        const uint64_t first = e.first_page + (lo - e.addr) / e.page_size;
        const uint64_t last = e.first_page + (hi - e.addr + e.page_size - 1) / e.page_size;
        fn(first, last - first);
    }
}

}  // namespace

void Reactor::Impl::apply_events(Vm& vm) {
    if (vm.turn_msgs.empty()) return;
    uint64_t faults = 0;
    // Pass 1: events. They change page states that faults read in pass 2.
    for (const uffd_msg& msg : vm.turn_msgs) {
        switch (msg.event) {
            case UFFD_EVENT_PAGEFAULT:
                break;
            case UFFD_EVENT_REMOVE:
                for_pages_in_range(vm.map, msg.arg.remove.start, msg.arg.remove.end,
                                   [&](uint64_t first, uint64_t pages) {
                                       for (uint64_t p = first; p < first + pages; p++)
                                           vm.states.set(p, PageState::removed);
                                       counters.add(counters.removed_pages, pages);
                                   });
                break;
            case UFFD_EVENT_UNMAP:
                retire_range(vm.map, vm.states, msg.arg.remove.start, msg.arg.remove.end);
                counters.add(counters.events_other, 1);
                break;
            case UFFD_EVENT_REMAP:
                vm.map.remap(msg.arg.remap.from, msg.arg.remap.to, msg.arg.remap.len);
                counters.add(counters.events_other, 1);
                break;
            case UFFD_EVENT_FORK: {
                // The child's uffd was installed in our fd table by the read; we do not serve forks.
                FileDesc child(static_cast<int>(msg.arg.fork.ufd));
                RP_WARN("%s: the VM forked; the child's userfaultfd is closed, not served", vm.name().c_str());
                counters.add(counters.events_other, 1);
                break;
            }
            default:
                RP_WARN("%s: ignored unknown userfaultfd event %u", vm.name().c_str(), unsigned{msg.event});
        }
    }
    // Pass 2: faults, translated through the (possibly just edited) map.
    for (const uffd_msg& msg : vm.turn_msgs) {
        if (msg.event != UFFD_EVENT_PAGEFAULT) continue;
        faults++;
        const uint64_t addr = msg.arg.pagefault.address;
        const AddressExtent* e = vm.map.find_addr(addr);
        if (e != nullptr) {
            vm.fault_pages.push_back(e->first_page + (addr - e->addr) / e->page_size);
        } else if (vm.map.was_retired(addr)) {
            RP_DEBUG("%s: stale fault at 0x%llx in a range unmapped since", vm.name().c_str(), (unsigned long long)addr);
        } else if (!vm.closing) {
            // The VM registered memory it did not declare: nothing can serve
            // it, and leaving it would hang that vCPU silently forever.
            char what[96];
            snprintf(what, sizeof what, "fault at 0x%llx outside every region it declared", (unsigned long long)addr);
            close_vm(vm, what, true);
        }
    }
    vm.turn_msgs.clear();
    if (faults != 0) last_fault_seen = std::chrono::steady_clock::now();
    vm.report.faults += faults;
    counters.add(counters.faults, faults);
    test_hooks::at(test_hooks::Point::after_event_drain, vm.setup.id, 0);
}

// Installs met ENOENT: ranges no longer registered in the VM were retired.
// One line for the first such range of a VM; the rest are counted and named
// in its release line.
void Reactor::Impl::note_unmapped(Vm& vm, const InstallResult& r) {
    counters.add(counters.ranges_unmapped, r.ranges_unmapped);
    if (vm.ranges_unmapped == 0)
        RP_WARN("%s: [0x%llx, 0x%llx) is no longer mapped in the VM (ENOENT); that range is not served any more, "
                "the rest of the VM is", vm.name().c_str(), (unsigned long long)r.first_unmapped_start,
                (unsigned long long)r.first_unmapped_end);
    vm.ranges_unmapped += r.ranges_unmapped;
}

bool Reactor::Impl::install_zero_source_run(Vm& vm, uint64_t first_page, uint64_t pages) {
    for (uint64_t p = first_page; p < first_page + pages; p++) vm.states.set(p, PageState::in_flight);
    if (!install_zero_pages(vm, {first_page, pages})) {
        vm.deferred_zero.push_back({first_page, pages});
        return false;
    }
    return true;
}

void Reactor::Impl::serve_faults(Vm& vm) {
    auto& pages = vm.fault_pages;
    if (pages.empty()) return;
    std::sort(pages.begin(), pages.end());
    pages.erase(std::unique(pages.begin(), pages.end()), pages.end());
    std::vector<uint64_t> waiting;  // no buffer free this turn
    // One page size per VM (the handshake refuses mixed sizes), so a run of
    // max_run_pages always fits the slot issue_read_job takes for it.
    const uint64_t page_size = vm.setup.handshake.regions[0].page_size_bytes;
    const uint64_t max_run_pages = std::max<uint64_t>(1, (vm.hugetlb() ? BufferPool::kBigBytes : BufferPool::kSmallBytes) / page_size);
    size_t i = 0;
    while (i < pages.size() && !vm.closing) {
        const uint64_t page = pages[i];
        const auto place = vm.map.place_of(page);
        if (!place) {
            i++;
            continue;
        }
        const PageState state = vm.states.get(page);
        if (state == PageState::in_flight) {  // the pending install wakes this fault
            i++;
            continue;
        }
        if (state == PageState::present) {  // installed after the fault was queued
            if (auto r = vm.setup.uffd.wake(place->addr, place->page_size); !r)
                RP_DEBUG("%s: wake failed: %s", vm.name().c_str(), r.error().message().c_str());
            i++;
            continue;
        }
        if (state == PageState::removed) {  // removed pages read zeros from now on
            if (!install_zero_pages(vm, {page, 1})) vm.deferred_zero.push_back({page, 1});
            i++;
            continue;
        }
        // Missing: coalesce with the following faulted pages that are adjacent
        // and missing, into one read and (later) one copy.
        size_t j = i + 1;
        while (j < pages.size() && j - i < max_run_pages && pages[j] == page + (j - i) &&
               pages[j] < place->extent_end_page && vm.states.get(pages[j]) == PageState::missing)
            j++;
        const uint32_t run = static_cast<uint32_t>(j - i);
        const SourceExtent first = vm.setup.source->lookup(place->file_offset, run * place->page_size);
        if (first.kind == SourceExtent::Kind::zero && first.length_bytes == run * place->page_size) {
            install_zero_source_run(vm, page, run);
        } else if (!issue_read_job(vm, page, run, false)) {
            waiting.insert(waiting.end(), pages.begin() + static_cast<long>(i), pages.begin() + static_cast<long>(j));
        }
        i = j;
    }
    pages.swap(waiting);
}

bool Reactor::Impl::issue_read_job(Vm& vm, uint64_t first_page, uint32_t pages, bool prefetch) {
    const bool big = prefetch || vm.hugetlb();
    auto& free_list = big ? pool.big_free : pool.small_free;
    // Faults on huge pages keep a few big slots the prefetcher may not take.
    if (free_list.empty() || (prefetch && pool.big_free.size() <= kBigReservedForFaults)) return false;
    if (io->ops_free() < 64) return false;  // keep in-flight ops within the CQ
    const auto place = vm.map.place_of(first_page);
    // Hard bounds, checked before any byte moves: the run fits the slot it
    // will be read into, lies in one address extent and inside the source.
    // A violation fails this VM; it never reads outside its own slot.
    const uint64_t run_bytes = uint64_t{pages} * (place ? place->page_size : 0);
    const uint64_t slot_bytes = big ? BufferPool::kBigBytes : BufferPool::kSmallBytes;
    if (!place || pages == 0 || run_bytes > slot_bytes || first_page + pages > place->extent_end_page ||
        place->file_offset + run_bytes > vm.setup.source->size_bytes()) {
        char what[160];
        snprintf(what, sizeof what, "refusing a read of %u page(s) at page %llu: it does not fit its %llu-byte buffer "
                 "or the source", pages, (unsigned long long)first_page, (unsigned long long)slot_bytes);
        close_vm(vm, what, true);
        return true;
    }
    const uint32_t slot = free_list.back();
    free_list.pop_back();
    counters.buffers_busy.fetch_add(1, std::memory_order_relaxed);
    ReadJob& job = jobs[slot];
    job.poison_pages.clear();  // keeps its capacity: no allocation per job
    job = ReadJob{.poison_pages = std::move(job.poison_pages)};
    job.busy = true;
    job.prefetch = prefetch;
    job.vm_slot = vm.slot;
    job.vm_gen = vm.gen;
    job.first_page = first_page;
    job.pages = pages;
    job.page_size = place->page_size;
    job.file_offset = place->file_offset;
    uint8_t* buffer = pool.data(slot);
    const uint64_t total = uint64_t{pages} * place->page_size;
    for (uint64_t p = first_page; p < first_page + pages; p++) vm.states.set(p, PageState::in_flight);
    for (uint64_t done = 0; done < total;) {
        const SourceExtent e = vm.setup.source->lookup(job.file_offset + done, total - done);
        if (e.length_bytes == 0 || e.length_bytes > total - done || e.length_bytes > UINT32_MAX ||
            (e.kind == SourceExtent::Kind::data && e.file_index >= vm.setup.source->file_fds().size())) {
            job.error = EIO;  // fails the job (and so the VM) through the usual check
            job.error_what = "the source answered an extent outside the run";
            break;
        }
        if (e.kind == SourceExtent::Kind::zero) {
            std::memset(buffer + done, 0, e.length_bytes);
        } else if (!prefetch && read_from_page_cache(vm, e, buffer + done)) {
            // Served from the page cache without blocking: no ring round trip.
        } else {
            // Prefetch reads go to io-wq workers: a page cache hit would
            // otherwise be copied inline inside io_uring_enter, holding up this
            // turn's faults, and the worker runs on another core meanwhile.
            io->read_fixed(op_data(OpKind::page_read, vm.slot, vm.gen,
                                   (uint64_t{static_cast<uint32_t>(e.length_bytes)} << 32) | slot),
                           file_slot_of(vm, e.file_index), buffer + done, static_cast<uint32_t>(e.length_bytes),
                           e.file_offset, static_cast<uint16_t>(pool.iovec_index(slot)), prefetch);
            job.pending_reads++;
            if (!prefetch) maybe_readahead(vm, e.file_index, e.file_offset);
        }
        done += e.length_bytes;
    }
    vm.outstanding++;
    if (prefetch) prefetch_inflight++;
    if (job.pending_reads == 0) {
        // Read already (page cache fast path, or all zeros). A fault is
        // installed at once: this turn's events are applied, and the install
        // re-checks every page's state. A prefetch job goes to the next turn.
        if (!prefetch) {
            if (!check_job(vm, slot) || install_job(vm, slot)) {
                release_job(slot);
                vm.outstanding--;
            } else {
                vm.deferred_jobs.push_back(slot);
            }
        } else {
            vm.completed_jobs.push_back(slot);
            more_work = true;
        }
        mark_turn(vm);
    }
    return true;
}

// Page cache readahead for faults that walk forward through a file: a fault
// landing just past the previous one (within one window) asks for the next
// window asynchronously. Random faults get none: on a cold file that would
// waste disk bandwidth, and on a hot one it is pure overhead.
// The fault fast path: hundreds of VMs restored from one snapshot keep it in
// the page cache, where a RWF_NOWAIT read completes at once and never blocks
// on disk (it fails with EAGAIN instead). Anything else goes through the ring.
bool Reactor::Impl::read_from_page_cache(Vm& vm, const SourceExtent& e, uint8_t* into) {
    if (!shared.config.page_cache_fast_path) return false;
    const int fd = vm.setup.source->file_fds()[e.file_index];
    const ssize_t n = pread_nowait(fd, into, e.length_bytes, e.file_offset);
    if (n != static_cast<ssize_t>(e.length_bytes)) return false;  // EAGAIN, short, or error: the ring decides
    counters.add(counters.bytes_read, e.length_bytes);
    vm.report.bytes_read += e.length_bytes;
    counters.add(counters.page_cache_hits, 1);
    maybe_readahead(vm, e.file_index, e.file_offset);
    return true;
}

void Reactor::Impl::maybe_readahead(Vm& vm, uint32_t file_index, uint64_t file_offset) {
    const uint64_t window = shared.config.readahead_bytes;
    const bool forward = vm.readahead_file == file_index && file_offset >= vm.last_fault_offset &&
                         file_offset - vm.last_fault_offset <= window;
    if (vm.readahead_file != file_index) vm.readahead_end = 0;
    vm.readahead_file = file_index;
    vm.last_fault_offset = file_offset;
    if (window == 0 || !forward || io->ops_free() < 256) return;
    if (file_offset + window <= vm.readahead_end) return;  // the current window still covers it
    const uint64_t start = std::max(file_offset, vm.readahead_end);
    vm.readahead_end = file_offset + 2 * window;
    io->fadvise(op_data(OpKind::readahead, vm.slot, vm.gen), file_slot_of(vm, file_index), start,
                vm.readahead_end - start, POSIX_FADV_WILLNEED);
    vm.outstanding++;
}

void Reactor::Impl::note_resident(Vm& vm) {
    if (vm.report.seconds_to_resident >= 0 || !vm.resident()) return;
    vm.report.seconds_to_resident =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - vm.started).count();
    counters.add(counters.vms_resident, 1);
    shared.notify();
}

// One prefetch run per VM in round robin until the in-flight budget is used.
// Zero runs are installed at once (no read); data runs become big reads.
void Reactor::Impl::prefetch_step() {
    // While faults keep arriving the prefetcher takes small steps, so a fault
    // waits behind little; once the VMs go quiet it takes full batches.
    const bool faults_recent = std::chrono::steady_clock::now() - last_fault_seen < kFaultQuietPeriod;
    const unsigned budget = faults_recent ? 2 : shared.config.prefetch_inflight_batches;
    const uint64_t batch_bytes =
        faults_recent ? std::min<uint64_t>(shared.config.prefetch_batch_bytes, kBusyPrefetchBatchBytes)
                      : shared.config.prefetch_batch_bytes;
    size_t idle_rounds = 0;
    unsigned zero_runs = 0;
    while (!prefetch_rr.empty() && prefetch_inflight < budget && idle_rounds < prefetch_rr.size()) {
        if (prefetch_rr_pos >= prefetch_rr.size()) prefetch_rr_pos = 0;
        Vm& vm = *vms[prefetch_rr[prefetch_rr_pos]];
        uint64_t first = 0;
        if (vm.closing || !vm.prefetch_order->next(vm.states, first)) {
            vm.prefetching = false;
            prefetch_rr.erase(prefetch_rr.begin() + static_cast<long>(prefetch_rr_pos));
            note_resident(vm);
            continue;
        }
        prefetch_rr_pos++;
        const auto place = vm.map.place_of(first);
        const uint64_t max_pages = std::max<uint64_t>(1, batch_bytes / place->page_size);
        uint64_t pages = 1;
        while (pages < max_pages && first + pages < place->extent_end_page &&
               vm.states.get(first + pages) == PageState::missing)
            pages++;
        pages = std::min<uint64_t>(pages, BufferPool::kBigBytes / place->page_size);
        const SourceExtent head = vm.setup.source->lookup(place->file_offset, pages * place->page_size);
        if (head.kind == SourceExtent::Kind::zero && head.length_bytes >= place->page_size) {
            const uint64_t zero_pages = head.length_bytes / place->page_size;
            install_zero_source_run(vm, first, zero_pages);
            vm.prefetch_order->consumed(first, zero_pages);
            more_work = true;
            idle_rounds = 0;
            if (++zero_runs >= (faults_recent ? 4u : 32u)) break;  // keep the turn short: faults come first
            continue;
        }
        // Stop the data run where the source turns to zeros, so those go by ZEROPAGE.
        uint64_t data_bytes = 0;
        while (data_bytes < pages * place->page_size) {
            const SourceExtent e = vm.setup.source->lookup(place->file_offset + data_bytes,
                                                           pages * place->page_size - data_bytes);
            if (e.kind == SourceExtent::Kind::zero && e.length_bytes >= place->page_size) break;
            data_bytes += e.length_bytes;
        }
        pages = std::max<uint64_t>(1, data_bytes / place->page_size);
        if (!issue_read_job(vm, first, static_cast<uint32_t>(pages), true)) break;  // no buffer: next turn
        vm.prefetch_order->consumed(first, pages);
        idle_rounds = 0;
    }
}

}  // namespace ringpager
