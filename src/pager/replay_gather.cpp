// Gather reads for a replayed working set whose bytes lie back to back in one
// file (a packed working-set layer, docs/snapshot-format.md): the replay
// walks the set in touch order, which is that file's order, so one read of up
// to a big buffer (2 MiB) covers many recorded runs that are scattered in
// guest memory. The job's buffer then holds those runs back to back; they are
// checked and installed run by run, in touch order.
#include <algorithm>
#include <cstring>

#include "pager/vm_pager.hpp"
#include "reactor/test_hooks.hpp"

namespace ringpager {

// The next span of the walk, if it starts with set pages whose bytes follow
// on at `file_offset` of file `file_index`: at most `max_pages` of them.
bool VmPager::gather_next(uint32_t file_index, uint64_t file_offset, uint64_t max_pages, ScatterRun& run) {
    uint64_t first = 0;
    if (!prefetch_order_->replaying() || !prefetch_order_->next(states_, first) || !replay_wants(first)) return false;
    const auto place = map_.place_of(first);
    if (!place) return false;
    const uint64_t ps = place->page_size;
    const uint64_t limit = std::min({prefetch_order_->run_limit(first), place->extent_end_page - first, max_pages});
    uint64_t pages = 1;
    while (pages < limit && replay_wants(first + pages)) pages++;
    const ReadPlan e = source_.plan(place->file_offset, pages * ps);
    if (e.kind != ReadPlan::Kind::ready || e.file_index != file_index || e.file_offset != file_offset ||
        e.length_bytes < ps)
        return false;
    run = ScatterRun{first, static_cast<uint32_t>(std::min(pages, e.length_bytes / ps))};
    return true;
}

// [first, first + pages) is the rest of a replay span from a set page. A
// span that is all set pages and one whole range of a file is read with the
// spans after it whose bytes follow on in that file, as one gather job (one
// read, up to a big buffer). A span with gaps (joined in guest order, the
// way a plain snapshot's set is read) goes the usual way.
std::optional<VmPager::Step> VmPager::replay_gather(uint64_t first, uint64_t pages) {
    const auto place = map_.place_of(first);
    const uint64_t ps = place->page_size;
    const uint64_t max_pages = ReadJobs::kBigBytes / ps;
    if (pages > max_pages) return std::nullopt;
    for (uint64_t i = 0; i < pages; i++)
        if (!replay_wants(first + i)) return std::nullopt;
    const ReadPlan head = source_.plan(place->file_offset, pages * ps);
    if (head.kind != ReadPlan::Kind::ready || head.length_bytes != pages * ps ||
        head.file_index >= source_.file_fds().size())
        return std::nullopt;
    if (ctx_.io.ops_free() < 64) return Step::no_buffer;  // keep in-flight ops within the CQ
    uint32_t slot = 0;
    if (!ctx_.jobs.take(true, true, slot)) return Step::no_buffer;
    ReadJob& job = ctx_.jobs[slot];
    job.scatter.push_back({first, static_cast<uint32_t>(pages)});
    prefetch_order_->consumed(first, pages);
    uint64_t total = pages;
    ScatterRun run;
    while (total < max_pages && gather_next(head.file_index, head.file_offset + total * ps, max_pages - total, run)) {
        job.scatter.push_back(run);
        prefetch_order_->consumed(run.first_page, run.pages);
        total += run.pages;
    }
    job.vm_slot = id_.slot;
    job.vm_gen = id_.gen;
    job.first_page = first;
    job.pages = static_cast<uint32_t>(total);
    job.page_size = ps;
    job.file_offset = place->file_offset;
    job.faulted_at = messages_read_at_;
    job.replay = true;
    issue_gather_job(slot, ReadPlan{ReadPlan::Kind::ready, head.file_index, head.file_offset, total * ps});
    return Step::read_issued;
}

// Marks the job's pages in flight and reads its bytes: inline from the page
// cache when small (as replay runs are), else one ring read through io-wq.
void VmPager::issue_gather_job(uint32_t slot, const ReadPlan& read) {
    ReadJob& job = ctx_.jobs[slot];
    for (const ScatterRun& r : job.scatter)
        for (uint64_t p = r.first_page; p < r.first_page + r.pages; p++) states_.set(p, PageState::in_flight);
    if (ws_read_first_ == std::chrono::steady_clock::time_point{}) ws_read_first_ = std::chrono::steady_clock::now();
    uint8_t* buffer = ctx_.jobs.data(slot);
    ops_outstanding_++;
    const auto from = std::chrono::steady_clock::now();
    if (read.length_bytes <= kInlinePrefetchBytes && worker_jobs_out_ == 0 && read_from_page_cache(read, buffer, false)) {
        replay_read_inline(from);  // first: see on_read_done
        note_replay_read(read.length_bytes);
        completed_jobs_.push_back(slot);
        ctx_.host.more_work();
        ctx_.host.schedule(*this);
        return;
    }
    ctx_.io.read_fixed(op(PagerOp::page_read, (uint64_t{static_cast<uint32_t>(read.length_bytes)} << 32) | slot),
                       ctx_.host.file_slot(source_index_, read.file_index), buffer,
                       static_cast<uint32_t>(read.length_bytes), read.file_offset, ctx_.jobs.buffer_index(slot), true);
    job.pending_reads = 1;
    replay_read_issued();
    job.with_worker = true;  // what the walk reads next queues behind it (issue_read_job)
    worker_jobs_out_++;
}

// check_job's verify for a gather job: each run against its own guest
// offsets. "" when every block matches; else the first failure, with the
// failed pages marked in job.poison_pages (buffer order).
std::string VmPager::verify_gather_job(uint32_t slot) {
    ReadJob& job = ctx_.jobs[slot];
    const auto* data = reinterpret_cast<const std::byte*>(ctx_.jobs.data(slot));
    std::string first_bad;
    uint64_t at = 0;
    for (const ScatterRun& r : job.scatter) {
        const auto place = map_.place_of(r.first_page);
        const uint64_t offset = place ? place->file_offset : 0;
        if (!source_.verify(offset, {data + at * job.page_size, uint64_t{r.pages} * job.page_size}).empty()) {
            job.poison_pages.resize(job.pages, 0);
            for (uint32_t i = 0; i < r.pages; i++) {
                const std::string bad = source_.verify(offset + uint64_t{i} * job.page_size,
                                                       {data + (at + i) * job.page_size, job.page_size});
                if (bad.empty()) continue;
                job.poison_pages[at + i] = 1;
                if (first_bad.empty()) first_bad = bad;
            }
        }
        at += r.pages;
    }
    return first_bad;
}

// install_job for a gather job: run by run, in touch order, all of it (up to
// 512 runs scattered in guest memory, about 1.5 ms of copies, which a fault
// elsewhere waits behind). EAGAIN: the job is retried after the events are
// read, from the run that met it.
VmPager::Installed VmPager::install_gather_job(uint32_t slot) {
    ReadJob& job = ctx_.jobs[slot];
    const uint8_t* data = ctx_.jobs.data(slot);
    thread_local std::vector<uint8_t> poison;
    uint64_t at = 0;
    for (size_t i = 0; i < job.scatter_installed; i++) at += job.scatter[i].pages;
    while (job.scatter_installed < job.scatter.size()) {
        const ScatterRun& r = job.scatter[job.scatter_installed];
        test_hooks::at(test_hooks::Point::before_copy, id_.vm_id, r.first_page);
        poison.clear();
        if (!job.poison_pages.empty())
            poison.assign(job.poison_pages.begin() + static_cast<long>(at),
                          job.poison_pages.begin() + static_cast<long>(at + r.pages));
        const InstallResult result = install_pages(target(), r.first_page, r.pages, data + at * job.page_size,
                                                   uint64_t{r.pages} * job.page_size, poison);
        if (!apply_install(result, true)) return Installed::retry_after_events;
        if (closing_) return Installed::done;
        at += r.pages;
        job.scatter_installed++;
        // Yielding here to waiting faults was tried: they are mostly on this
        // very job's pages (the guest runs into the set being installed), so
        // it installed one run per turn and the set took 5-10x longer.
    }
    return Installed::done;
}

}  // namespace ringpager
