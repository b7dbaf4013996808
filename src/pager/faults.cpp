// A VmPager's side of a loop turn up to the reads: take the uffd messages,
// apply events before faults, classify faults by page state, issue reads
// (faults first; the page cache fast path and readahead live here), and the
// prefetch runs the prefetcher asks for.
#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "common/log.hpp"
#include "pager/vm_pager.hpp"
#include "reactor/test_hooks.hpp"

namespace ringpager {
namespace {

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

VmPager::VmPager(PagerContext& ctx, PagerEvents& events, PagerIdentity id, const Uffd& uffd, const Source& source,
                 unsigned source_index, const RegionList& regions, PageStates states)
    : ctx_(ctx),
      events_(events),
      id_(std::move(id)),
      uffd_(uffd),
      source_(source),
      source_index_(source_index),
      page_size_(regions.empty() ? 4096 : regions[0].page_size_bytes),
      map_(regions),
      states_(std::move(states)),
      readahead_(ctx.config.readahead_bytes),
      started_(std::chrono::steady_clock::now()) {
    report_.vm_id = id_.vm_id;
    report_.pages_total = map_.total_pages();
}

void VmPager::take_messages(size_t bytes) {
    messages_read_at_ = std::chrono::steady_clock::now();
    const size_t count = bytes / sizeof(uffd_msg);
    turn_msgs_.insert(turn_msgs_.end(), msgs_, msgs_ + count);
    // A full buffer means more may be queued: drain the uffd completely now,
    // so every event of this turn is applied before any fault (DESIGN.md).
    while (count == kUffdMsgsPerRead) {
        const ssize_t n = read(uffd_.fd(), msgs_, sizeof msgs_);
        if (n <= 0) break;  // EAGAIN: drained
        turn_msgs_.insert(turn_msgs_.end(), msgs_, msgs_ + static_cast<size_t>(n) / sizeof(uffd_msg));
        if (static_cast<size_t>(n) < sizeof msgs_) break;
    }
}

void VmPager::apply_events() {
    if (turn_msgs_.empty()) return;
    uint64_t faults = 0;
    // Pass 1: events. They change page states that faults read in pass 2.
    for (const uffd_msg& msg : turn_msgs_) {
        switch (msg.event) {
            case UFFD_EVENT_PAGEFAULT:
                break;
            case UFFD_EVENT_REMOVE:
                for_pages_in_range(map_, msg.arg.remove.start, msg.arg.remove.end, [&](uint64_t first, uint64_t pages) {
                    for (uint64_t p = first; p < first + pages; p++) states_.set(p, PageState::removed);
                    events_.on_removed(pages);
                });
                break;
            case UFFD_EVENT_UNMAP:
                retire_range(map_, states_, msg.arg.remove.start, msg.arg.remove.end);
                events_.on_other_event();
                break;
            case UFFD_EVENT_REMAP:
                map_.remap(msg.arg.remap.from, msg.arg.remap.to, msg.arg.remap.len);
                events_.on_other_event();
                break;
            case UFFD_EVENT_FORK: {
                // The child's uffd was installed in our fd table by the read; we do not serve forks.
                FileDesc child(static_cast<int>(msg.arg.fork.ufd));
                RP_WARN("%s: the VM forked; the child's userfaultfd is closed, not served", name().c_str());
                events_.on_other_event();
                break;
            }
            default:
                RP_WARN("%s: ignored unknown userfaultfd event %u", name().c_str(), unsigned{msg.event});
        }
    }
    // Pass 2: faults, translated through the (possibly just edited) map.
    for (const uffd_msg& msg : turn_msgs_) {
        if (msg.event != UFFD_EVENT_PAGEFAULT) continue;
        faults++;
        const uint64_t addr = msg.arg.pagefault.address;
        const AddressExtent* e = map_.find_addr(addr);
        if (e != nullptr) {
            const uint64_t page = e->first_page + (addr - e->addr) / e->page_size;
            if (!ws_faulted_.empty()) note_fault(page);
            fault_pages_.push_back(page);
        } else if (map_.was_retired(addr)) {
            RP_DEBUG("%s: stale fault at 0x%llx in a range unmapped since", name().c_str(), (unsigned long long)addr);
        } else if (!closing_) {
            // The VM registered memory it did not declare: nothing can serve
            // it, and leaving it would hang that vCPU silently forever.
            char what[96];
            snprintf(what, sizeof what, "fault at 0x%llx outside every region it declared", (unsigned long long)addr);
            ctx_.host.close(*this, what, true);
        }
    }
    turn_msgs_.clear();
    report_.faults += faults;
    if (faults != 0) events_.on_faults(faults);
    test_hooks::at(test_hooks::Point::after_event_drain, id_.vm_id, 0);
}

void VmPager::faults_served_now(uint64_t pages) {
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - messages_read_at_).count();
    fault_service_.observe(seconds, pages);
    events_.on_faults_served(seconds, pages);
}

bool VmPager::install_zero_source_run(uint64_t first_page, uint64_t pages) {
    for (uint64_t p = first_page; p < first_page + pages; p++) states_.set(p, PageState::in_flight);
    if (!install_zero_pages({first_page, pages})) {
        deferred_zero_.push_back({first_page, pages});
        return false;
    }
    return true;
}

void VmPager::serve_faults() {
    auto& pages = fault_pages_;
    if (pages.empty()) return;
    std::sort(pages.begin(), pages.end());
    pages.erase(std::unique(pages.begin(), pages.end()), pages.end());
    std::vector<uint64_t> waiting;  // no buffer free this turn
    // One page size per VM (the handshake refuses mixed sizes), so a run of
    // max_run_pages always fits the slot issue_read_job takes for it.
    const uint64_t max_run_pages =
        std::max<uint64_t>(1, (hugetlb() ? ReadJobs::kBigBytes : ReadJobs::kSmallBytes) / page_size_);
    size_t i = 0;
    while (i < pages.size() && !closing_) {
        const uint64_t page = pages[i];
        const auto place = map_.place_of(page);
        if (!place) {
            i++;
            continue;
        }
        const PageState state = states_.get(page);
        if (state == PageState::in_flight) {  // the pending install wakes this fault
            i++;
            continue;
        }
        if (state == PageState::present) {  // installed after the fault was queued
            if (auto r = uffd_.wake(place->addr, place->page_size); !r)
                RP_DEBUG("%s: wake failed: %s", name().c_str(), r.error().message().c_str());
            i++;
            continue;
        }
        if (state == PageState::removed) {  // removed pages read zeros from now on
            if (!install_zero_pages({page, 1})) deferred_zero_.push_back({page, 1});
            else faults_served_now(1);
            i++;
            continue;
        }
        // Missing: coalesce with the following faulted pages that are adjacent
        // and missing, into one read and (later) one copy.
        size_t j = i + 1;
        while (j < pages.size() && j - i < max_run_pages && pages[j] == page + (j - i) &&
               pages[j] < place->extent_end_page && states_.get(pages[j]) == PageState::missing)
            j++;
        const uint32_t run = static_cast<uint32_t>(j - i);
        const ReadPlan first = source_.plan(place->file_offset, run * place->page_size);
        if (first.kind == ReadPlan::Kind::zero && first.length_bytes == run * place->page_size) {
            if (install_zero_source_run(page, run)) faults_served_now(run);
        } else if (first.kind == ReadPlan::Kind::fetch) {
            start_fetch(page, run, true);
        } else if (!issue_read_job(page, run, false)) {
            waiting.insert(waiting.end(), pages.begin() + static_cast<long>(i), pages.begin() + static_cast<long>(j));
        }
        i = j;
    }
    pages.swap(waiting);
}

bool VmPager::issue_read_job(uint64_t first_page, uint32_t pages, bool prefetch, bool replay_span) {
    const bool big = prefetch || hugetlb();
    if (ctx_.io.ops_free() < 64) return false;  // keep in-flight ops within the CQ
    const auto place = map_.place_of(first_page);
    // Hard bounds, checked before any byte moves: the run fits the slot it
    // will be read into, lies in one address extent and inside the source.
    // A violation fails this VM; it never reads outside its own slot.
    const uint64_t run_bytes = uint64_t{pages} * (place ? place->page_size : 0);
    const uint64_t slot_bytes = big ? ReadJobs::kBigBytes : ReadJobs::kSmallBytes;
    if (!place || pages == 0 || run_bytes > slot_bytes || first_page + pages > place->extent_end_page ||
        place->file_offset + run_bytes > source_.size_bytes()) {
        char what[160];
        snprintf(what, sizeof what, "refusing a read of %u page(s) at page %llu: it does not fit its %llu-byte buffer "
                 "or the source", pages, (unsigned long long)first_page, (unsigned long long)slot_bytes);
        ctx_.host.close(*this, what, true);
        return true;
    }
    uint32_t slot = 0;
    if (!ctx_.jobs.take(big, prefetch, slot)) return false;
    ReadJob& job = ctx_.jobs[slot];
    job.vm_slot = id_.slot;
    job.vm_gen = id_.gen;
    job.first_page = first_page;
    job.pages = pages;
    job.page_size = place->page_size;
    job.file_offset = place->file_offset;
    job.faulted_at = messages_read_at_;
    uint8_t* buffer = ctx_.jobs.data(slot);
    // Short reads are cheaper inline from the page cache than an io-wq round
    // trip (kInlinePrefetchBytes): every fault's, a prefetch batch while
    // faults flow, a replayed set's short spans. While a prefetch read of
    // this VM is with the worker, the next ones queue behind it there rather
    // than overtake it inline: prefetch runs still complete, and so install,
    // in the order they were chosen (a replayed set first).
    const bool inline_cached = !prefetch || (run_bytes <= kInlinePrefetchBytes && worker_jobs_out_ == 0);
    // A replay span's pages are not all its to install: only those marked.
    thread_local std::vector<uint8_t> marked;
    job.replay = replay_span;
    if (replay_span && ws_read_first_ == std::chrono::steady_clock::time_point{})
        ws_read_first_ = std::chrono::steady_clock::now();
    if (replay_span) mark_replay_pages(first_page, pages, marked);
    else
        for (uint64_t p = first_page; p < first_page + pages; p++) states_.set(p, PageState::in_flight);
    for (uint64_t done = 0; done < run_bytes;) {
        const ReadPlan e = source_.plan(job.file_offset + done, run_bytes - done);
        if (e.length_bytes == 0 || e.length_bytes > run_bytes - done || e.length_bytes > UINT32_MAX ||
            (e.kind == ReadPlan::Kind::ready && e.file_index >= source_.file_fds().size())) {
            job.error = EIO;  // fails the job (and so the VM) through the usual check
            job.error_what = "the source answered an extent outside the run";
            break;
        }
        if (e.kind == ReadPlan::Kind::fetch) {
            // The rest of the run is not here yet: this job ends where it
            // begins, the source fetches the rest (its pages stay in flight).
            const uint64_t pages_read = done / place->page_size;
            if (replay_span) {
                // replay_run stopped the span before any fetch; a cache that
                // dropped bytes since hands the rest back to the walk.
                for (uint64_t i = pages_read; i < pages; i++)
                    if (marked[i]) states_.set(first_page + i, PageState::missing);
                prefetch_order_->revisit(first_page + pages_read);
            } else {
                start_fetch(first_page + pages_read, pages - pages_read, !prefetch);
            }
            job.pages = static_cast<uint32_t>(pages_read);
            break;
        }
        if (e.kind == ReadPlan::Kind::zero) {
            std::memset(buffer + done, 0, e.length_bytes);
        } else if (const auto from = replay_span ? std::chrono::steady_clock::now()
                                                 : std::chrono::steady_clock::time_point{};  // no clock read for faults
                   inline_cached && read_from_page_cache(e, buffer + done, !prefetch)) {
            // Served from the page cache without blocking: no ring round trip.
            if (replay_span) {
                replay_read_inline(from);  // first: see on_read_done
                note_replay_read(e.length_bytes);
            }
        } else {
            // Prefetch reads go to io-wq workers: a page cache hit would
            // otherwise be copied inline inside io_uring_enter, holding up this
            // turn's faults, and the worker runs on another core meanwhile.
            ctx_.io.read_fixed(op(PagerOp::page_read, (uint64_t{static_cast<uint32_t>(e.length_bytes)} << 32) | slot),
                               ctx_.host.file_slot(source_index_, e.file_index), buffer + done,
                               static_cast<uint32_t>(e.length_bytes), e.file_offset, ctx_.jobs.buffer_index(slot),
                               prefetch);
            job.pending_reads++;
            if (replay_span) replay_read_issued();
            if (prefetch && !job.with_worker) {
                job.with_worker = true;
                worker_jobs_out_++;
            }
            if (!prefetch) maybe_readahead(e.file_index, e.file_offset);
        }
        done += e.length_bytes;
    }
    ops_outstanding_++;
    if (job.pages == 0) {  // all of it is being fetched
        finish_job(slot);
        return true;
    }
    if (job.pending_reads == 0) {
        // Read already (page cache fast path, or all zeros). A fault is
        // installed at once: this turn's events are applied, and the install
        // re-checks every page's state. A prefetch job goes to the next turn.
        if (!prefetch) {
            if (!check_job(slot) || install_job(slot) == Installed::done) finish_job(slot);
            else deferred_jobs_.push_back(slot);
        } else {
            completed_jobs_.push_back(slot);
            ctx_.host.more_work();
        }
        ctx_.host.schedule(*this);
    }
    return true;
}

// The fault fast path: hundreds of VMs restored from one snapshot keep it in
// the page cache, where a RWF_NOWAIT read completes at once and never blocks
// on disk (it fails with EAGAIN instead). Anything else goes through the ring.
bool VmPager::read_from_page_cache(const ReadPlan& e, uint8_t* into, bool readahead) {
    if (!ctx_.config.page_cache_fast_path || !read_cached(source_, e, into)) return false;
    report_.bytes_read += e.length_bytes;
    events_.on_read(e.length_bytes, true);
    if (readahead) maybe_readahead(e.file_index, e.file_offset);
    return true;
}

// Readahead for faults that walk forward (source/read_policy.hpp).
void VmPager::maybe_readahead(uint32_t file_index, uint64_t file_offset) {
    const auto range = readahead_.after_fault_read(file_index, file_offset, ctx_.io.ops_free() >= 256);
    if (!range) return;
    ctx_.io.fadvise(op(PagerOp::readahead), ctx_.host.file_slot(source_index_, range->file_index), range->offset,
                    range->length, POSIX_FADV_WILLNEED);
    ops_outstanding_++;
}

// The pages of [first_page, first_page + pages) are not here yet: their
// source fetches them; they stay in flight until it reports back.
void VmPager::start_fetch(uint64_t first_page, uint64_t pages, bool fault) {
    const auto place = map_.place_of(first_page);
    if (!place) return;
    for (uint64_t p = first_page; p < first_page + pages; p++) states_.set(p, PageState::in_flight);
    test_hooks::at(test_hooks::Point::before_fetch, id_.vm_id, first_page);
    const uint64_t cookie = next_fetch_cookie_++;
    const bool replay = !fault && replaying();
    fetches_.push_back({cookie, first_page, pages, fault, replay});
    if (!fault) prefetch_fetches_++;
    if (replay) replay_fetches_++;
    source_.fetch(place->file_offset, pages * place->page_size, ctx_.host.fetch_sink(*this), cookie,
                  fault ? FetchFor::fault : FetchFor::prefetch);
}

void VmPager::note_resident() {
    if (report_.seconds_to_resident >= 0 || !resident()) return;
    report_.seconds_to_resident = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    events_.on_resident(*this, report_.seconds_to_resident);
}

void VmPager::start_prefetch() {
    if (prefetching_) return;
    prefetching_ = true;
    if (!prefetch_order_) prefetch_order_ = make_ascending_order();
    ctx_.host.more_work();
}

// One prefetch run: a zero run is installed at once (no read); a data run
// becomes one read of up to `batch_bytes`, stopping where the source turns to
// zeros so those go by ZEROPAGE. A replayed working set reads a span of the
// set instead (replay_run).
VmPager::Step VmPager::prefetch_run(uint64_t batch_bytes) {
    uint64_t first = 0;
    if (closing_) return Step::done;
    // Pages being fetched are in flight, not missing: the VM is done only
    // once its fetches are back too.
    if (!prefetch_order_->next(states_, first)) return prefetch_fetches_ != 0 ? Step::waiting : Step::done;
    // A replayed set's spans still being fetched (compressed or s3://
    // snapshots) are installed before the rest of memory is started: the
    // page next() offered from the rest is left for later.
    if (replay_fetches_ != 0 && !replaying()) return Step::waiting;
    if (replaying() && !ws_member_.empty()) return replay_run(first);
    const auto place = map_.place_of(first);
    const uint64_t max_pages =
        std::min(std::max<uint64_t>(1, batch_bytes / place->page_size), prefetch_order_->run_limit(first));
    uint64_t pages = 1;
    while (pages < max_pages && first + pages < place->extent_end_page && states_.get(first + pages) == PageState::missing)
        pages++;
    pages = std::min<uint64_t>(pages, ReadJobs::kBigBytes / place->page_size);
    if (const auto step = prefetch_head(first, pages)) return *step;
    uint64_t data_bytes = 0;
    while (data_bytes < pages * place->page_size) {
        const ReadPlan e = source_.plan(place->file_offset + data_bytes, pages * place->page_size - data_bytes);
        if ((e.kind == ReadPlan::Kind::zero && e.length_bytes >= place->page_size) || e.kind == ReadPlan::Kind::fetch)
            break;
        data_bytes += e.length_bytes;
    }
    pages = std::max<uint64_t>(1, data_bytes / place->page_size);
    if (!issue_read_job(first, static_cast<uint32_t>(pages), true)) return Step::no_buffer;
    prefetch_order_->consumed(first, pages);
    return Step::read_issued;
}

// A run that starts with source zeros is installed by ZEROPAGE at once; one
// that starts with bytes not here yet starts a fetch. `pages` from `first`
// are all missing. Nothing (the run starts with bytes to read) otherwise.
std::optional<VmPager::Step> VmPager::prefetch_head(uint64_t first, uint64_t pages) {
    const auto place = map_.place_of(first);
    const ReadPlan head = source_.plan(place->file_offset, pages * place->page_size);
    if (head.kind == ReadPlan::Kind::zero && head.length_bytes >= place->page_size) {
        const uint64_t zero_pages = std::min(pages, head.length_bytes / place->page_size);
        install_zero_source_run(first, zero_pages);
        prefetch_order_->consumed(first, zero_pages);
        return Step::zero_run;
    }
    if (head.kind == ReadPlan::Kind::fetch) {
        // A bounded number of fetches per VM; the rest waits its turn.
        if (prefetch_fetches_ >= kMaxPrefetchFetches) return Step::waiting;
        const uint64_t fetch_pages = std::clamp<uint64_t>(head.length_bytes / place->page_size, 1, pages);
        start_fetch(first, fetch_pages, false);
        prefetch_order_->consumed(first, fetch_pages);
        return Step::fetching;
    }
    return std::nullopt;
}

// One span of a replayed working set (RecordedOrder): one read from the
// span's first set page still missing to its last, up to a big buffer. Only
// the set's missing pages are marked in flight and installed (and the
// missing pages of gaps of at most kReplayFillGapPages between them, joining
// their copies); the other pages' bytes are read and dropped, which costs
// less than a read of their own. Source zeros inside the span are not read
// (issue_read_job zero-fills them); a span stops before bytes the source
// must fetch.
VmPager::Step VmPager::replay_run(uint64_t first) {
    const auto place = map_.place_of(first);
    const uint64_t ps = place->page_size;
    const uint64_t limit = std::min({prefetch_order_->run_limit(first), place->extent_end_page - first,
                                     uint64_t{ReadJobs::kBigBytes / ps}});
    uint64_t skip = 0;
    while (skip < limit && !replay_wants(first + skip)) skip++;
    if (skip == limit) {  // the span's set pages are all served already
        prefetch_order_->consumed(first, limit);
        return Step::skipped;
    }
    first += skip;
    uint64_t pages = limit - skip;
    if (const auto step = replay_gather(first, pages)) return *step;
    uint64_t missing = 1;  // pages from `first` all missing, for a zero run or a fetch
    while (missing < pages && states_.get(first + missing) == PageState::missing) missing++;
    if (const auto step = prefetch_head(first, missing)) return *step;
    const uint64_t offset = place->file_offset + skip * ps;
    uint64_t data_bytes = 0;
    while (data_bytes < pages * ps) {
        const ReadPlan e = source_.plan(offset + data_bytes, pages * ps - data_bytes);
        if (e.kind == ReadPlan::Kind::fetch || e.length_bytes == 0) break;
        data_bytes += e.length_bytes;
    }
    pages = std::max<uint64_t>(1, data_bytes / ps);
    while (pages > 1 && !replay_wants(first + pages - 1)) pages--;
    if (!issue_read_job(first, static_cast<uint32_t>(pages), true, true)) return Step::no_buffer;
    prefetch_order_->consumed(first, pages);
    return Step::read_issued;
}

bool VmPager::replay_wants(uint64_t page) const {
    return page < ws_member_.size() && ws_member_[page] && states_.get(page) == PageState::missing;
}

// Marks the pages a replay span installs (see replay_run) in flight; `marked`
// says which, for undoing it.
void VmPager::mark_replay_pages(uint64_t first, uint64_t pages, std::vector<uint8_t>& marked) {
    marked.assign(pages, 0);
    uint64_t last = UINT64_MAX;  // the last page marked
    for (uint64_t i = 0; i < pages; i++) {
        if (!replay_wants(first + i)) continue;
        if (last != UINT64_MAX && i - last - 1 <= kReplayFillGapPages) {
            bool all_missing = true;
            for (uint64_t g = last + 1; g < i; g++) all_missing &= states_.get(first + g) == PageState::missing;
            if (all_missing)
                for (uint64_t g = last + 1; g < i; g++) marked[g] = 1;
        }
        marked[i] = 1;
        last = i;
    }
    for (uint64_t i = 0; i < pages; i++)
        if (marked[i]) states_.set(first + i, PageState::in_flight);
}

}  // namespace ringpager
