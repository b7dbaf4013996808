// VmPager: one VM's memory as the pager serves it (DESIGN.md "The shape of
// the house"): its page states and address map, the faults it is waiting
// on, its read jobs done or deferred, its zero runs deferred, its prefetch
// cursor and readahead window. Everything here runs on the VM's reactor
// thread. The pager never knows how the reactor loops or how the VM
// arrived: what it needs of its reactor comes through PagerContext.
#pragma once

#include <linux/userfaultfd.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/histogram.hpp"
#include "io/io_loop.hpp"
#include "pager/address_map.hpp"
#include "pager/install.hpp"
#include "pager/page_states.hpp"
#include "pager/prefetch_order.hpp"
#include "pager/read_jobs.hpp"
#include "ringpager/engine.hpp"
#include "ringpager/source.hpp"
#include "source/read_policy.hpp"
#include "uffd/uffd.hpp"

namespace ringpager {

class VmPager;

// The io operations a pager starts carry these kinds (io::OpData::kind);
// the reactor hands their completions back to the pager.
enum class PagerOp : uint16_t { page_read = 0x100, readahead = 0x101 };
inline bool is_pager_op(const io::OpData& data) { return data.kind >= 0x100; }

// What the pagers of one reactor report as they work; the reactor turns it
// into its counters (metrics and working-set recording hang here too).
// Called on the reactor's thread: no lock, no syscall.
class PagerEvents {
public:
    virtual ~PagerEvents() = default;
    virtual void on_faults(uint64_t count) = 0;
    virtual void on_removed(uint64_t pages) = 0;
    virtual void on_other_event() = 0;  // UNMAP, REMAP, FORK
    virtual void on_read(uint64_t bytes, bool page_cache_hit) = 0;
    virtual void on_installed(const InstallResult& result, bool prefetch) = 0;
    // `pages` faulted pages were installed `seconds` after their fault
    // messages were read.
    virtual void on_faults_served(double seconds, uint64_t pages) = 0;
    // Once per VM, so it may log its lifecycle line.
    virtual void on_resident(const VmPager& pager, double seconds) = 0;
};

// What a pager asks of its reactor.
class PagerHost {
public:
    virtual ~PagerHost() = default;
    // The VM cannot (or need not) be served any more: release it.
    virtual void close(VmPager& vm, const std::string& reason, bool failure) = 0;
    // The VM has work for the next turn.
    virtual void schedule(VmPager& vm) = 0;
    // Run the next turn without waiting for a completion.
    virtual void more_work() = 0;
    // True when fault work (a uffd read, a fault's page read) completed and
    // waits in the queue: prefetch installs yield to it. No syscall when
    // nothing completed, so it can be asked between two prefetch runs.
    virtual bool fault_work_pending() = 0;
    // The fixed-file slot of file `file_index` of source `source_index`.
    virtual unsigned file_slot(unsigned source_index, uint32_t file_index) const = 0;
    // Where the VM's source reports its fetches (VmPager::on_fetched).
    virtual std::shared_ptr<FetchSink> fetch_sink(VmPager& vm) = 0;
};

struct PagerConfig {
    uint64_t readahead_bytes = 256 * 1024;
    bool page_cache_fast_path = true;
    bool kill_on_failure = false;
};

// The reactor's services every pager of it shares.
struct PagerContext {
    io::IoLoop& io;
    ReadJobs& jobs;
    PagerHost& host;
    PagerConfig config;
};

// A run of pages waiting to be installed again after EAGAIN (events pending).
struct DeferredZero {
    uint64_t first_page;
    uint64_t pages;
};

inline constexpr size_t kUffdMsgsPerRead = 64;

// Who the VM is, for logs and for the io operations started for it.
struct PagerIdentity {
    uint64_t vm_id = 0;
    uint32_t slot = 0;  // the reactor's names for it, carried by its io operations
    uint32_t gen = 0;
    std::string name;   // "vm 3 (pid 812)"
};

class VmPager {
public:
    // `events` is where this VM's figures go (its listener's, on this reactor).
    VmPager(PagerContext& ctx, PagerEvents& events, PagerIdentity id, const Uffd& uffd, const Source& source,
            unsigned source_index, const RegionList& regions, PageStates states);

    // ---- a loop turn (faults.cpp, completions.cpp) ------------------------
    // The ring read `bytes` into msg_buffer(); drains the rest of the uffd.
    void take_messages(size_t bytes);
    void apply_events();      // events first (REMOVE/UNMAP/REMAP/FORK), then faults
    void retry_deferred();    // installs that met EAGAIN
    void serve_faults();      // faults: wake, zero fill, or read
    void install_completed(); // reads done: faults first, then prefetch
    void note_resident();
    // A read of job `slot` completed with `res` of `expected` bytes.
    void on_read_done(uint32_t slot, int32_t res, uint64_t expected);
    // The source finished fetch `cookie` ("" or why it failed).
    void on_fetched(uint64_t cookie, const std::string& error);
    void on_readahead_done() { ops_outstanding_--; }
    // Work left for the next turn; whether it waits on a timer (EAGAIN).
    bool has_carry() const;
    bool waits_on_events() const { return !deferred_jobs_.empty() || !deferred_zero_.empty(); }
    bool has_completed() const { return !completed_jobs_.empty(); }

    // ---- prefetch (prefetcher.cpp drives it) --------------------------------
    // done: nothing left to prefetch; waiting: nothing to start until a fetch
    // ends; no_buffer: out of read buffers for this turn.
    // skipped: a replay span whose set pages were all served already.
    enum class Step : uint8_t { done, zero_run, skipped, read_issued, fetching, waiting, no_buffer };
    // Prefetch fetches (object store range reads) in flight per VM, at most.
    static constexpr unsigned kMaxPrefetchFetches = 4;
    // Prefetch reads (and replay spans) up to this size are copied inline
    // from the page cache (RWF_NOWAIT), like faults' reads, instead of by an
    // io-wq worker: that is the size the prefetcher reads while faults flow
    // (Prefetcher::kBusyBatchBytes), when the worker's hop costs more CPU
    // than the copy and the worker competes with the vCPUs for their cores
    // (prefetch's CPU 0.73x on the real guest, docs/benchmarks.md). Bigger
    // reads, while the VM is quiet, still go to the worker so a turn stays
    // short.
    static constexpr uint64_t kInlinePrefetchBytes = 64 * 1024;
    // Missing pages between two set pages of a replay span, at most this
    // many, are installed with them: one copy instead of two (with 4 KiB
    // pages, every gap a span joins: see kReplayGapBytes).
    static constexpr uint64_t kReplayFillGapPages = 4;
    void start_prefetch();
    // The order the prefetcher walks this VM in (default: ascending).
    void use_prefetch_order(std::unique_ptr<PrefetchOrder> order) { prefetch_order_ = std::move(order); }
    Step prefetch_run(uint64_t batch_bytes);
    bool prefetching() const { return prefetching_; }
    // Walking a recorded working set: its runs are short (stopped at each
    // recorded run's end), and the guest is about to fault on them.
    bool replaying() const { return prefetch_order_ && prefetch_order_->replaying(); }
    void stop_prefetch() { prefetching_ = false; }

    // ---- working sets (working_set.cpp, issue 11) ---------------------------
    // Record the pages of this VM's first on-demand faults, in fault order:
    // only pages that were missing at the fault (never one the prefetcher
    // had started or installed, nor a removed one).
    void record_working_set();
    // `runs` are replayed first (use_prefetch_order): count the faults the
    // replay saved and those it missed, into report() at release.
    void track_working_set(const std::vector<PageRun>& runs);
    bool recording_working_set() const { return ws_recording_; }
    // What recording and replaying add to a VM of `pages` pages at most,
    // charged against --memory-limit at the handshake: one bit per page
    // (seen); when replaying one more (in the set), the replay order's copy
    // of the set's runs and its window of spans (at most 1024); when
    // recording 8 bytes per recorded page (at most one entry per page: each
    // page's first fault only; the vector never grows past that, see
    // note_fault).
    static uint64_t working_set_bytes(uint64_t pages, bool recording, size_t replay_runs) {
        if (!recording && replay_runs == 0) return 0;
        const uint64_t bitmap = (pages + 63) / 64 * 8;
        uint64_t bytes = bitmap;
        if (replay_runs != 0) bytes += bitmap + (replay_runs + 1024) * sizeof(PageRun);
        if (recording) bytes += pages * sizeof(uint64_t);
        return bytes;
    }
    const std::vector<uint64_t>& recorded_pages() const { return ws_recorded_; }
    // Fills report().ws_* from the page states now (at release).
    void finish_working_set_report();

    // ---- lifecycle ----------------------------------------------------------
    void mark_closing() { closing_ = true; }
    bool closing() const { return closing_; }
    // Gives back the jobs it holds (at close, once the turn is over).
    void release_jobs();
    // Jobs and operations in flight that still name this VM.
    uint32_t outstanding() const { return ops_outstanding_; }
    bool resident() const { return states_.missing_count() == 0 && states_.in_flight_count() == 0; }

    uffd_msg* msg_buffer() { return msgs_; }
    static constexpr size_t msg_buffer_bytes() { return sizeof(uffd_msg) * kUffdMsgsPerRead; }
    const PagerIdentity& id() const { return id_; }
    const std::string& name() const { return id_.name; }
    VmReport& report() { return report_; }
    const VmReport& report() const { return report_; }
    const Histogram& fault_service() const { return fault_service_; }
    bool waiting_on_fetch() const { return !fetches_.empty(); }
    uint64_t ranges_unmapped() const { return ranges_unmapped_; }
    const PageStates& states() const { return states_; }
    bool hugetlb() const { return page_size_ > 4096; }

private:
    bool issue_read_job(uint64_t first_page, uint32_t pages, bool prefetch, bool replay_span = false);
    std::optional<Step> prefetch_head(uint64_t first, uint64_t pages);
    Step replay_run(uint64_t first);
    // replay_gather.cpp: a replay span whose bytes run on in the source file
    // into the next spans' (a packed working-set layer) is read with them
    // in one read; nullopt when the span is not one whole file range.
    std::optional<Step> replay_gather(uint64_t first, uint64_t pages);
    bool gather_next(uint32_t file_index, uint64_t file_offset, uint64_t max_pages, ScatterRun& run);
    void issue_gather_job(uint32_t slot, const ReadPlan& read);
    // How install_job ended: every page installed, or EAGAIN (retry the job
    // after the pending events are read).
    enum class Installed : uint8_t { done, retry_after_events };
    Installed install_gather_job(uint32_t slot);
    std::string verify_gather_job(uint32_t slot);
    bool replay_wants(uint64_t page) const;
    void mark_replay_pages(uint64_t first, uint64_t pages, std::vector<uint8_t>& marked);
    void start_fetch(uint64_t first_page, uint64_t pages, bool fault);
    bool install_zero_source_run(uint64_t first_page, uint64_t pages);
    void faults_served_now(uint64_t pages);
    void note_fault(uint64_t page);
    bool read_from_page_cache(const ReadPlan& plan, uint8_t* into, bool readahead);
    void maybe_readahead(uint32_t file_index, uint64_t file_offset);
    bool check_job(uint32_t slot);
    Installed install_job(uint32_t slot);
    bool install_zero_pages(DeferredZero run);
    bool apply_install(const InstallResult& r, bool prefetch);
    void finish_job(uint32_t slot);
    io::OpData op(PagerOp kind, uint64_t arg = 0) const {
        return io::OpData{static_cast<uint16_t>(kind), id_.slot, id_.gen, arg};
    }
    InstallTarget target() { return {uffd_, map_, states_, ctx_.jobs.zero_buffer()}; }

    PagerContext& ctx_;
    PagerEvents& events_;
    PagerIdentity id_;
    const Uffd& uffd_;
    const Source& source_;
    unsigned source_index_;
    uint64_t page_size_;
    AddressMap map_;
    PageStates states_;
    std::unique_ptr<PrefetchOrder> prefetch_order_;
    bool prefetching_ = false;
    bool closing_ = false;

    // The ring reads uffd messages straight into this buffer.
    alignas(64) uffd_msg msgs_[kUffdMsgsPerRead];
    std::vector<uffd_msg> turn_msgs_;       // read this turn, not yet applied
    std::vector<uint64_t> fault_pages_;     // faults to serve (this turn + waiting for buffers)
    std::vector<uint32_t> completed_jobs_;  // reads done, not yet installed
    std::vector<uint32_t> deferred_jobs_;   // installs that met EAGAIN
    std::vector<DeferredZero> deferred_zero_;
    uint32_t ops_outstanding_ = 0;          // jobs and readaheads in flight

    ReadaheadWindow readahead_;

    // Ranges a source is fetching; their pages are in flight meanwhile.
    struct PendingFetch {
        uint64_t cookie;
        uint64_t first_page;
        uint64_t pages;
        bool fault;   // a fault waits on it (else the prefetcher asked)
        bool replay;  // the prefetcher asked for a replayed working set's span
    };
    std::vector<PendingFetch> fetches_;
    uint64_t next_fetch_cookie_ = 1;
    unsigned prefetch_fetches_ = 0;
    unsigned replay_fetches_ = 0;   // of prefetch_fetches_: the rest of memory waits for them

    unsigned worker_jobs_out_ = 0;          // prefetch jobs with a read at the io-wq worker, not finished
    uint64_t ranges_unmapped_ = 0;          // installs that met ENOENT

    // Working sets: sized (one bit per page) only when recording or replaying.
    std::vector<bool> ws_faulted_;          // the page has faulted once
    std::vector<bool> ws_member_;           // the page is in the replayed set
    std::vector<uint64_t> ws_recorded_;     // first on-demand faults, in order
    // The replay's read phase: its first read issued, its last read done.
    std::chrono::steady_clock::time_point ws_read_first_{}, ws_read_last_{};
    unsigned replay_reads_out_ = 0;  // replay ring reads issued, not completed
    std::chrono::steady_clock::time_point replay_busy_from_{};
    void replay_read_issued();
    void replay_read_done();
    void replay_read_inline(std::chrono::steady_clock::time_point from);
    void note_replay_read(uint64_t bytes);
    bool ws_recording_ = false;
    // When this turn's fault messages were read: a fault job carries it to
    // its install, which reports the fault's service time.
    std::chrono::steady_clock::time_point messages_read_at_{};
    std::chrono::steady_clock::time_point started_;
    VmReport report_;
    Histogram fault_service_;  // this VM's own (control API), beside its listener's (metrics)
};

}  // namespace ringpager
