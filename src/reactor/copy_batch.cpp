// Installing completed reads: one UFFDIO_COPY per contiguous run of pages,
// UFFDIO_ZEROPAGE for zero pages, and the state re-check that keeps a page
// removed while its read was in flight from receiving snapshot bytes.
#include <algorithm>
#include <cstring>
#include <vector>

#include "common/log.hpp"
#include "reactor/reactor_impl.hpp"
#include "reactor/test_hooks.hpp"

namespace ringpager {
namespace {

// Stamped or random data fails on its first bytes; only zero pages are read
// to the end. Checks 64 bytes per step so the loop vectorizes.
bool all_zero(const uint8_t* data, size_t len) {
    const uint64_t* words = reinterpret_cast<const uint64_t*>(data);
    for (size_t i = 0; i < len / 8; i += 8) {
        uint64_t acc = 0;
        for (size_t j = 0; j < 8; j++) acc |= words[i + j];
        if (acc != 0) return false;
    }
    return true;
}

enum class Action { skip, copy, zero, poison };

constexpr uint64_t kMinZeroRunPages = 16;

}  // namespace

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

static void count_installed(Reactor::Impl& r, Vm& vm, Action action, uint64_t installed, uint64_t done,
                            bool prefetch) {
    if (action == Action::copy) {
        r.counters.add(r.counters.copy_ioctls, 1);
        r.counters.add(r.counters.pages_copied, installed);
        if (prefetch) {
            r.counters.add(r.counters.pages_prefetched, installed);
            vm.report.pages_prefetched += installed;
        } else {
            vm.report.pages_copied_on_fault += installed;
        }
    } else if (action == Action::poison) {
        r.counters.add(r.counters.pages_poisoned, installed);
    } else {
        r.counters.add(r.counters.pages_zeroed, done);
        vm.report.pages_zeroed += done;
    }
}

// Installs `pages` pages at `addr` by `action`; returns the outcome.
static InstallOutcome install_run(const Uffd& uffd, Action action, uint64_t addr, const uint8_t* src,
                                  uint64_t pages, uint64_t page_size, const void* zero_buffer) {
    if (action == Action::copy) return uffd.copy(addr, src, pages * page_size, page_size);
    if (action == Action::poison) return uffd.poison(addr, pages * page_size, page_size);
    if (page_size == 4096) return uffd.zeropage(addr, pages * page_size, page_size);
    // hugetlb has no zero page: copy zeros, one huge page at a time.
    InstallOutcome total;
    for (uint64_t i = 0; i < pages; i++) {
        InstallOutcome one = uffd.copy(addr + i * page_size, zero_buffer, page_size, page_size);
        total.bytes_done += one.bytes_done;
        total.existing_pages += one.existing_pages;
        if (one.error != 0) {
            total.error = one.error;
            break;
        }
    }
    return total;
}

// Decides, from each page's state *now*, what to install: removed pages get
// zeros (never the bytes read), in-flight pages their bytes (or poison, when
// their bytes must not be served), others nothing.
// Read bytes that are all zero go by UFFDIO_ZEROPAGE (no page allocated) when
// they form a run of kMinZeroRunPages or the whole job; shorter zero gaps are
// copied with their neighbours, since one ioctl beats three.
static void decide_actions(const Vm& vm, uint64_t first, uint64_t pages, const uint8_t* data, uint64_t ps,
                           const std::vector<uint8_t>& poison, std::vector<Action>& actions) {
    actions.assign(pages, Action::skip);
    for (uint64_t i = 0; i < pages; i++) {
        const PageState s = vm.states.get(first + i);
        if (s == PageState::removed) actions[i] = Action::zero;
        else if (s == PageState::in_flight)
            actions[i] = i < poison.size() && poison[i] ? Action::poison : data == nullptr ? Action::zero : Action::copy;
    }
    if (data == nullptr || ps != 4096) return;
    for (uint64_t i = 0; i < pages;) {
        uint64_t k = 0;
        while (i + k < pages && actions[i + k] == Action::copy && all_zero(data + (i + k) * ps, ps)) k++;
        if (k >= kMinZeroRunPages || k == pages)
            for (uint64_t j = i; j < i + k; j++) actions[j] = Action::zero;
        i += k == 0 ? 1 : k;
    }
}

// Installs [first, first+pages) in maximal runs of one action within one
// address extent. `data` (may be null) holds the pages' bytes, `data_bytes`
// of them. Returns false on EAGAIN: nothing is lost, the caller retries the
// whole job later (pages already installed are `present` by then and skipped).
static bool install_pages(Reactor::Impl& r, Vm& vm, uint64_t first, uint64_t pages, const uint8_t* data,
                          uint64_t data_bytes, bool prefetch, const std::vector<uint8_t>& poison) {
    thread_local std::vector<Action> actions;
    const auto first_place = vm.map.place_of(first);
    decide_actions(vm, first, pages, data, first_place ? first_place->page_size : 4096, poison, actions);
    uint64_t p = first;
    const uint64_t end = first + pages;
    while (p < end && !vm.closing) {
        const auto place = vm.map.place_of(p);
        if (!place) {  // unmapped while in flight
            if (vm.states.get(p) == PageState::in_flight) vm.states.set(p, PageState::present);
            p++;
            continue;
        }
        const uint64_t ps = place->page_size;
        const Action action = actions[p - first];
        uint64_t n = 1;
        while (p + n < end && p + n < place->extent_end_page && actions[p + n - first] == action) n++;
        if (action == Action::skip) {
            p += n;
            continue;
        }
        // Bounds: a copy never reads past the bytes of its own buffer slot.
        if (action == Action::copy && (data == nullptr || (p - first + n) * ps > data_bytes)) {
            r.close_vm(vm, "refusing a copy past the end of its read buffer", true);
            return true;
        }
        const uint8_t* src = data ? data + (p - first) * ps : nullptr;
        const InstallOutcome out = install_run(vm.setup.uffd, action, place->addr, src, n, ps, r.zero_buffer);
        const uint64_t done = out.bytes_done / ps;
        uint64_t installed = 0;
        for (uint64_t i = p; i < p + done; i++)
            if (vm.states.get(i) == PageState::in_flight) vm.states.set(i, PageState::present), installed++;
        count_installed(r, vm, action, installed, done, prefetch);
        if (out.error == EAGAIN) {
            r.counters.add(r.counters.eagain_retries, 1);
            return false;
        }
        if (out.error == ESRCH) {
            r.close_vm(vm, "its address space is gone (" + std::string(std::strerror(out.error)) + ")", false);
            return true;
        }
        if (out.error == ENOENT) {
            // No VMA registered with this uffd there any more: the VM unmapped
            // the range (Firecracker asks for no UNMAP events). Only that range
            // stops being served; the rest of the VM is served as before.
            r.drop_unmapped(vm, place->addr + done * ps, place->addr + n * ps);
            p += n;
            continue;
        }
        if (out.error != 0) {
            const char* op = action == Action::copy ? "UFFDIO_COPY" : action == Action::poison ? "UFFDIO_POISON" : "zero fill";
            const bool no_poison = action == Action::poison && (out.error == EINVAL || out.error == ENOTTY);
            char what[160];
            snprintf(what, sizeof what, "%s at 0x%llx failed: %s%s", op,
                     static_cast<unsigned long long>(place->addr + done * ps), std::strerror(out.error),
                     no_poison ? " (this kernel cannot poison pages: UFFDIO_POISON needs Linux 6.6)" : "");
            r.close_vm(vm, what, true);
            return true;
        }
        p += n;
    }
    return true;
}

bool Reactor::Impl::install_job(Vm& vm, uint32_t slot) {
    ReadJob& job = jobs[slot];
    test_hooks::at(test_hooks::Point::before_copy, vm.setup.id, job.first_page);
    const uint64_t bytes = uint64_t{job.pages} * job.page_size;
    return install_pages(*this, vm, job.first_page, job.pages, pool.data(slot),
                         std::min<uint64_t>(bytes, pool.capacity(slot)), job.prefetch, job.poison_pages);
}

bool Reactor::Impl::install_zero_pages(Vm& vm, DeferredZero run) {
    static const std::vector<uint8_t> no_poison;
    return install_pages(*this, vm, run.first_page, run.pages, nullptr, 0, false, no_poison);
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
