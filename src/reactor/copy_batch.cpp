// Installing completed reads: one UFFDIO_COPY per contiguous run of pages,
// UFFDIO_ZEROPAGE for zero pages, and the state re-check that keeps a page
// removed while its read was in flight from receiving snapshot bytes.
#include <algorithm>
#include <cstring>
#include <vector>

#include "common/log.hpp"
#include "pager/install.hpp"
#include "reactor/reactor_impl.hpp"
#include "reactor/test_hooks.hpp"

namespace ringpager {

void Reactor::Impl::on_page_read(uint32_t slot, int32_t res, uint64_t expected) {
    ReadJob& job = jobs[slot];
    Vm* vm = vm_at(job.vm_slot, job.vm_gen);
    if (res < 0 && job.error == 0) {
        job.error = io::error_of(res);
        job.error_what = "read";
    } else if (res >= 0 && static_cast<uint64_t>(res) < expected && job.error == 0) {
        job.error = EIO;
        job.error_what = "short read (snapshot file truncated after start?)";
    }
    if (res > 0) {
        counters.add(counters.bytes_read, static_cast<uint64_t>(res));
        if (vm) vm->report.bytes_read += static_cast<uint64_t>(res);
    }
    if (--job.pending_reads != 0) return;
    if (vm == nullptr || vm->closing) {
        release_job(slot);
        if (vm) vm->outstanding--;
        return;
    }
    vm->completed_jobs.push_back(slot);
    mark_turn(*vm);
}

void Reactor::Impl::release_job(uint32_t slot) {
    ReadJob& job = jobs[slot];
    if (job.prefetch) prefetch_inflight--;
    job.busy = false;
    pool.release(slot);
    counters.buffers_busy.fetch_sub(1, std::memory_order_relaxed);
}

bool Reactor::Impl::install_job(Vm& vm, uint32_t slot) {
    ReadJob& job = jobs[slot];
    test_hooks::at(test_hooks::Point::before_copy, vm.setup.id, job.first_page);
    const uint64_t bytes = uint64_t{job.pages} * job.page_size;
    const InstallResult r = install_pages(install_target(vm), job.first_page, job.pages, pool.data(slot),
                                          std::min<uint64_t>(bytes, pool.capacity(slot)), job.poison_pages);
    return apply_install(vm, r, job.prefetch);
}

bool Reactor::Impl::install_zero_pages(Vm& vm, DeferredZero run) {
    static const std::vector<uint8_t> no_poison;
    return apply_install(vm, install_pages(install_target(vm), run.first_page, run.pages, nullptr, 0, no_poison), false);
}

InstallTarget Reactor::Impl::install_target(Vm& vm) { return {vm.setup.uffd, vm.map, vm.states, zero_buffer}; }

// Counts what an install did and acts on how it ended. Returns false when the
// job must be retried after the pending events are read (EAGAIN).
bool Reactor::Impl::apply_install(Vm& vm, const InstallResult& r, bool prefetch) {
    counters.add(counters.copy_ioctls, r.copy_ioctls);
    counters.add(counters.pages_copied, r.pages_copied);
    (prefetch ? vm.report.pages_prefetched : vm.report.pages_copied_on_fault) += r.pages_copied;
    if (prefetch) counters.add(counters.pages_prefetched, r.pages_copied);
    counters.add(counters.pages_zeroed, r.pages_zeroed);
    vm.report.pages_zeroed += r.pages_zeroed;
    counters.add(counters.pages_poisoned, r.pages_poisoned);
    if (r.ranges_unmapped != 0) note_unmapped(vm, r);
    switch (r.end) {
        case InstallResult::End::done: return true;
        case InstallResult::End::retry_later:
            counters.add(counters.eagain_retries, 1);
            return false;
        case InstallResult::End::gone:
            close_vm(vm, std::string("its address space is gone (") + std::strerror(ESRCH) + ")", false);
            return true;
        case InstallResult::End::failed:
            close_vm(vm, r.failure, true);
            return true;
    }
    return true;
}

// A completed read is installed only if every read succeeded and every block
// matches its checksum (layered snapshots, unless --no-verify-reads). Bytes
// that fail are never installed: the VM fails (killed under
// --kill-on-failure), or, when it is not to be killed, the failed pages are
// poisoned so the guest gets a memory error there instead of waiting forever
// (Linux 6.6+; an older kernel fails the VM). The job's good pages are served
// as usual. Returns false when the VM failed.
bool Reactor::Impl::check_job(Vm& vm, uint32_t slot) {
    ReadJob& job = jobs[slot];
    const Source& source = *vm.setup.source;
    const uint8_t* data = pool.data(slot);
    std::string bad;
    if (job.error != 0) {
        char where[64];
        snprintf(where, sizeof where, " at snapshot offset 0x%llx", (unsigned long long)job.file_offset);
        bad = std::string("cannot read the snapshot") + where + ": " + job.error_what + ": " + std::strerror(job.error);
        job.poison_pages.assign(job.pages, 1);
    } else if (source.verifies_reads()) {
        const auto bytes = [&](uint64_t from, uint64_t len) {
            return std::span<const std::byte>(reinterpret_cast<const std::byte*>(data) + from, len);
        };
        const std::string corrupt = source.verify(job.file_offset, bytes(0, uint64_t{job.pages} * job.page_size));
        if (!corrupt.empty()) {
            bad = "refusing to serve corrupt snapshot data: " + corrupt;
            // Rare path: find which pages failed (a page holds whole blocks,
            // see the acceptor's block size check).
            job.poison_pages.assign(job.pages, 0);
            for (uint32_t i = 0; i < job.pages; i++)
                job.poison_pages[i] =
                    !source.verify(job.file_offset + uint64_t{i} * job.page_size, bytes(uint64_t{i} * job.page_size, job.page_size))
                         .empty();
        }
    }
    if (bad.empty()) return true;
    if (shared.config.kill_on_failure) {
        job.poison_pages.clear();
        close_vm(vm, bad, true);
        return false;
    }
    const uint64_t poisoned = static_cast<uint64_t>(std::count(job.poison_pages.begin(), job.poison_pages.end(), 1));
    const auto place = vm.map.place_of(job.first_page);
    RP_ERROR("%s: %s; poisoning %llu page(s) of the %u at 0x%llx: the guest gets a memory error there instead of a hang",
             vm.name().c_str(), bad.c_str(), (unsigned long long)poisoned, job.pages,
             (unsigned long long)(place ? place->addr : 0));
    return true;
}

bool Reactor::Impl::fault_work_pending() {
    io->flush_completions();
    return io->any_completion([&](const io::OpData& op) {
        const OpKind kind = kind_of(op);
        if (kind == OpKind::uffd_read || kind == OpKind::exit_read || kind == OpKind::wake_read) return true;
        return kind == OpKind::page_read && !jobs[static_cast<uint32_t>(op.arg)].prefetch;
    });
}

void Reactor::Impl::install_completed(Vm& vm) {
    auto& done = vm.completed_jobs;
    if (done.empty()) return;
    // Faults first, then by address so neighbouring runs install in order.
    std::sort(done.begin(), done.end(), [&](uint32_t a, uint32_t b) {
        if (jobs[a].prefetch != jobs[b].prefetch) return !jobs[a].prefetch;
        return jobs[a].first_page < jobs[b].first_page;
    });
    std::vector<uint32_t> later;
    bool yield = false;
    for (uint32_t slot : done) {
        ReadJob& job = jobs[slot];
        if (vm.closing || (yield && job.prefetch)) {
            later.push_back(slot);
            continue;
        }
        if (!check_job(vm, slot)) {
            later.push_back(slot);
            continue;
        }
        if (!install_job(vm, slot)) {
            vm.deferred_jobs.push_back(slot);
            continue;
        }
        release_job(slot);
        vm.outstanding--;
        // A fault never waits behind more than one prefetch batch: if fault
        // work completed meanwhile, leave the rest for the next turn.
        if (job.prefetch) yield = fault_work_pending();
    }
    done.swap(later);
    if (!vm.closing && !done.empty()) more_work = true;
}

void Reactor::Impl::retry_deferred(Vm& vm) {
    std::vector<uint32_t> jobs_left;
    for (uint32_t slot : vm.deferred_jobs) {
        if (vm.closing) {
            jobs_left.push_back(slot);
        } else if (install_job(vm, slot)) {
            release_job(slot);
            vm.outstanding--;
        } else {
            jobs_left.push_back(slot);
        }
    }
    vm.deferred_jobs.swap(jobs_left);
    std::vector<DeferredZero> zero_left;
    for (const DeferredZero& run : vm.deferred_zero)
        if (!vm.closing && !install_zero_pages(vm, run)) zero_left.push_back(run);
    vm.deferred_zero.swap(zero_left);
}

}  // namespace ringpager
