// A VmPager's side of a loop turn after the reads: completed reads are
// checked (every read succeeded, every block matches its checksum) and
// installed, faults before prefetch; installs that met EAGAIN are retried.
#include <algorithm>
#include <cstring>

#include "common/log.hpp"
#include "pager/vm_pager.hpp"
#include "reactor/test_hooks.hpp"

namespace ringpager {

void VmPager::on_read_done(uint32_t slot, int32_t res, uint64_t expected) {
    ReadJob& job = ctx_.jobs[slot];
    if (res < 0 && job.error == 0) {
        job.error = io::error_of(res);
        job.error_what = "read";
    } else if (res >= 0 && static_cast<uint64_t>(res) < expected && job.error == 0) {
        job.error = EIO;
        job.error_what = "short read (snapshot file truncated after start?)";
    }
    if (job.replay) replay_read_done();  // first: the read phase's end (note_replay_read) is not before it
    if (res > 0) {
        report_.bytes_read += static_cast<uint64_t>(res);
        events_.on_read(static_cast<uint64_t>(res), false);
        if (job.replay) note_replay_read(static_cast<uint64_t>(res));
    }
    if (--job.pending_reads != 0) return;
    if (closing_) return finish_job(slot);
    completed_jobs_.push_back(slot);
    ctx_.host.schedule(*this);
}

// A fetch ended. Its pages (those still in flight: a REMOVE meanwhile made
// some removed, for good) are missing again and planned anew: a fault's are
// served like new faults, a prefetch run's are walked over again. A fetch
// that failed is handled like a read that failed: the VM fails (killed under
// --kill-on-failure) or the pages are poisoned.
void VmPager::on_fetched(uint64_t cookie, const std::string& error) {
    auto it = std::find_if(fetches_.begin(), fetches_.end(), [&](const PendingFetch& f) { return f.cookie == cookie; });
    if (it == fetches_.end()) return;
    const PendingFetch fetch = *it;
    fetches_.erase(it);
    if (!fetch.fault) prefetch_fetches_--;
    if (fetch.replay) replay_fetches_--;
    if (closing_) return;
    if (!error.empty()) {
        const std::string why = "cannot fetch the snapshot's pages " + std::to_string(fetch.first_page) + "-" +
                                std::to_string(fetch.first_page + fetch.pages - 1) + ": " + error;
        if (ctx_.config.kill_on_failure) return ctx_.host.close(*this, why, true);
        RP_ERROR("%s: %s; poisoning them: the guest gets a memory error there instead of a hang", name().c_str(),
                 why.c_str());
        const std::vector<uint8_t> all(fetch.pages, 1);
        apply_install(install_pages(target(), fetch.first_page, fetch.pages, nullptr, 0, all), fetch.fault == false);
        return;
    }
    for (uint64_t p = fetch.first_page; p < fetch.first_page + fetch.pages; p++) {
        if (states_.get(p) != PageState::in_flight) continue;
        states_.set(p, PageState::missing);
        if (fetch.fault) fault_pages_.push_back(p);
    }
    if (!fetch.fault && prefetch_order_) prefetch_order_->revisit(fetch.first_page);
    ctx_.host.schedule(*this);
    ctx_.host.more_work();
}

void VmPager::finish_job(uint32_t slot) {
    if (ctx_.jobs[slot].with_worker) worker_jobs_out_--;
    ctx_.jobs.release(slot);
    ops_outstanding_--;
}

void VmPager::release_jobs() {
    for (uint32_t slot : completed_jobs_) finish_job(slot);
    for (uint32_t slot : deferred_jobs_) finish_job(slot);
    completed_jobs_.clear();
    deferred_jobs_.clear();
    deferred_zero_.clear();
    fault_pages_.clear();
}

bool VmPager::has_carry() const {
    return !deferred_jobs_.empty() || !deferred_zero_.empty() || !completed_jobs_.empty() || !fault_pages_.empty();
}

VmPager::Installed VmPager::install_job(uint32_t slot) {
    ReadJob& job = ctx_.jobs[slot];
    if (!job.scatter.empty()) return install_gather_job(slot);
    test_hooks::at(test_hooks::Point::before_copy, id_.vm_id, job.first_page);
    const uint64_t bytes = uint64_t{job.pages} * job.page_size;
    const InstallResult r = install_pages(target(), job.first_page, job.pages, ctx_.jobs.data(slot),
                                          std::min<uint64_t>(bytes, ctx_.jobs.capacity(slot)), job.poison_pages);
    if (!job.prefetch && r.end != InstallResult::End::retry_later) {  // every page of a fault job was faulted
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - job.faulted_at).count();
        fault_service_.observe(seconds, job.pages);
        events_.on_faults_served(seconds, job.pages);
    }
    return apply_install(r, job.prefetch) ? Installed::done : Installed::retry_after_events;
}

bool VmPager::install_zero_pages(DeferredZero run) {
    static const std::vector<uint8_t> no_poison;
    return apply_install(install_pages(target(), run.first_page, run.pages, nullptr, 0, no_poison), false);
}

// Counts what an install did and acts on how it ended. Returns false when the
// job must be retried after the pending events are read (EAGAIN).
bool VmPager::apply_install(const InstallResult& r, bool prefetch) {
    (prefetch ? report_.pages_prefetched : report_.pages_copied_on_fault) += r.pages_copied;
    report_.pages_zeroed += r.pages_zeroed;
    events_.on_installed(r, prefetch);
    if (r.ranges_unmapped != 0) {
        // One line for the first such range of a VM; the rest are counted
        // and named in its release line.
        if (ranges_unmapped_ == 0)
            RP_WARN("%s: [0x%llx, 0x%llx) is no longer mapped in the VM (ENOENT); that range is not served any "
                    "more, the rest of the VM is", name().c_str(), (unsigned long long)r.first_unmapped_start,
                    (unsigned long long)r.first_unmapped_end);
        ranges_unmapped_ += r.ranges_unmapped;
    }
    switch (r.end) {
        case InstallResult::End::done: return true;
        case InstallResult::End::retry_later: return false;
        case InstallResult::End::gone:
            ctx_.host.close(*this, std::string("its address space is gone (") + std::strerror(ESRCH) + ")", false);
            return true;
        case InstallResult::End::failed:
            ctx_.host.close(*this, r.failure, true);
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
bool VmPager::check_job(uint32_t slot) {
    ReadJob& job = ctx_.jobs[slot];
    const uint8_t* data = ctx_.jobs.data(slot);
    std::string bad;
    if (job.error != 0) {
        char where[64];
        snprintf(where, sizeof where, " at snapshot offset 0x%llx", (unsigned long long)job.file_offset);
        bad = std::string("cannot read the snapshot") + where + ": " + job.error_what + ": " + std::strerror(job.error);
        job.poison_pages.assign(job.pages, 1);
    } else if (source_.verifies_reads() && !job.scatter.empty()) {
        if (const std::string corrupt = verify_gather_job(slot); !corrupt.empty())
            bad = "refusing to serve corrupt snapshot data: " + corrupt;
    } else if (source_.verifies_reads()) {
        const auto bytes = [&](uint64_t from, uint64_t len) {
            return std::span<const std::byte>(reinterpret_cast<const std::byte*>(data) + from, len);
        };
        const std::string corrupt = source_.verify(job.file_offset, bytes(0, uint64_t{job.pages} * job.page_size));
        if (!corrupt.empty()) {
            bad = "refusing to serve corrupt snapshot data: " + corrupt;
            // Rare path: find which pages failed (a page holds whole blocks,
            // see the acceptor's block size check).
            job.poison_pages.assign(job.pages, 0);
            for (uint32_t i = 0; i < job.pages; i++)
                job.poison_pages[i] =
                    !source_.verify(job.file_offset + uint64_t{i} * job.page_size, bytes(uint64_t{i} * job.page_size, job.page_size))
                         .empty();
        }
    }
    if (bad.empty()) return true;
    if (ctx_.config.kill_on_failure) {
        job.poison_pages.clear();
        ctx_.host.close(*this, bad, true);
        return false;
    }
    const uint64_t poisoned = static_cast<uint64_t>(std::count(job.poison_pages.begin(), job.poison_pages.end(), 1));
    const auto place = map_.place_of(job.first_page);
    RP_ERROR("%s: %s; poisoning %llu page(s) of the %u at 0x%llx: the guest gets a memory error there instead of a hang",
             name().c_str(), bad.c_str(), (unsigned long long)poisoned, job.pages,
             (unsigned long long)(place ? place->addr : 0));
    return true;
}

void VmPager::install_completed() {
    auto& done = completed_jobs_;
    if (done.empty()) return;
    // Faults first, by address so neighbouring runs install in order; then
    // prefetch runs in the order the prefetcher chose them (ascending, or a
    // recorded working set's order).
    std::sort(done.begin(), done.end(), [&](uint32_t a, uint32_t b) {
        const ReadJob &x = ctx_.jobs[a], &y = ctx_.jobs[b];
        if (x.prefetch != y.prefetch) return !x.prefetch;
        return x.prefetch ? x.sequence < y.sequence : x.first_page < y.first_page;
    });
    std::vector<uint32_t> later;
    bool yield = false;
    for (uint32_t slot : done) {
        const bool prefetch = ctx_.jobs[slot].prefetch;
        if (closing_ || (yield && prefetch)) {
            later.push_back(slot);
            continue;
        }
        if (!check_job(slot)) {
            later.push_back(slot);
            continue;
        }
        const Installed installed = install_job(slot);
        if (installed == Installed::retry_after_events) {
            deferred_jobs_.push_back(slot);
            continue;
        }
        finish_job(slot);
        // A fault never waits behind more than one prefetch batch: if fault
        // work completed meanwhile, leave the rest for the next turn.
        if (prefetch) yield = ctx_.host.fault_work_pending();
    }
    done.swap(later);
    if (!closing_ && !done.empty()) ctx_.host.more_work();
}

void VmPager::retry_deferred() {
    std::vector<uint32_t> jobs_left;
    for (uint32_t slot : deferred_jobs_) {
        if (closing_) jobs_left.push_back(slot);
        else if (install_job(slot) == Installed::done) finish_job(slot);
        else jobs_left.push_back(slot);
    }
    deferred_jobs_.swap(jobs_left);
    std::vector<DeferredZero> zero_left;
    for (const DeferredZero& run : deferred_zero_)
        if (!closing_ && !install_zero_pages(run)) zero_left.push_back(run);
    deferred_zero_.swap(zero_left);
}

}  // namespace ringpager
