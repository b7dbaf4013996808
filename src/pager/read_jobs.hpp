// ReadJobs: a reactor's registered read buffers and the read jobs that use
// them, shared by all of its VMs' pagers. One job = contiguous guest pages
// read into one buffer slot (job index == slot index), then installed.
// Small slots (64 KiB) serve 4 KiB-page faults; big slots (2 MiB) serve
// prefetch batches and huge-page faults, a few of them kept for faults.
#pragma once

#include <sys/uio.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "io/io_loop.hpp"
#include "ringpager/result.hpp"

namespace ringpager {

// A run of guest pages of a gather job (ReadJob::scatter).
struct ScatterRun {
    uint64_t first_page = 0;
    uint32_t pages = 0;
};

struct ReadJob {
    bool busy = false;
    bool prefetch = false;
    bool replay = false;        // a span of a replayed working set (VmReport::ws_read_*)
    bool with_worker = false;   // a prefetch job with a read at an io-wq worker (VmPager::worker_jobs_out_)
    uint64_t sequence = 0;      // issue order (prefetch runs install in the order they were chosen)
    std::chrono::steady_clock::time_point faulted_at{};  // a fault job: when its faults were read
    uint32_t vm_slot = 0;       // the owning VM, as its reactor names it
    uint32_t vm_gen = 0;
    uint64_t first_page = 0;
    uint32_t pages = 0;
    uint64_t page_size = 0;
    uint64_t file_offset = 0;   // source offset of the first page
    uint32_t pending_reads = 0;
    int error = 0;              // first failed read's errno (EIO for a short read)
    const char* error_what = "";
    // Pages whose bytes must not be served (read failed, checksum failed):
    // 1 = poison that page instead. Empty for every healthy job.
    std::vector<uint8_t> poison_pages;
    // A gather job (a replayed set whose bytes lie back to back in one file,
    // such as a packed working-set layer): one read fills the buffer with
    // these guest runs, back to back in this order; `pages` is their sum and
    // `first_page`/`file_offset` are the first run's. Empty: the job is the
    // contiguous pages [first_page, first_page + pages).
    std::vector<ScatterRun> scatter;
    size_t scatter_installed = 0;  // runs of `scatter` installed (a gather job retried after EAGAIN resumes there)
};

// The buffers are reserved (virtual memory only) at their bound and pinned
// chunk by chunk as the load asks (io_uring's sparse buffer table): a chunk
// is registered when a job finds no free slot, and given back (unregistered,
// its pages returned) when a whole interval's peak would have fit without
// it. An idle reactor keeps one chunk of fault slots: 1 MiB instead of 28.
class ReadJobs {
public:
    static constexpr size_t kSmallBytes = 64 * 1024;
    static constexpr size_t kBigBytes = 2 * 1024 * 1024;
    // The bound: 4 MiB of fault slots and 24 MiB of big slots.
    static constexpr unsigned kSmallSlots = 64;
    static constexpr unsigned kBigSlots = 12;
    static constexpr unsigned kBigReservedForFaults = 4;
    // Chunks: the unit of registration (one buffer-table entry each).
    static constexpr unsigned kSmallPerChunk = 16;  // 1 MiB
    static constexpr unsigned kBigPerChunk = 4;     // 8 MiB
    static constexpr unsigned kSmallChunks = kSmallSlots / kSmallPerChunk;
    static constexpr unsigned kBigChunks = kBigSlots / kBigPerChunk;
    static constexpr unsigned kChunks = kSmallChunks + kBigChunks;
    static constexpr unsigned kMinSmallChunks = 1, kMinBigChunks = 0;

    ReadJobs() = default;
    ~ReadJobs();
    ReadJobs(const ReadJobs&) = delete;
    ReadJobs& operator=(const ReadJobs&) = delete;

    // Reserves the buffers (and a read-only 2 MiB zero page for hugetlb
    // zero fills), registers a sparse table of kChunks entries with `io`
    // and pins the minimum. `io` outlives the jobs' use of it.
    Result<void> map(io::IoLoop& io);

    // A free slot of the size a job needs, or false (every chunk of that size
    // busy and pinned, or pinning one more failed). Prefetch jobs leave
    // kBigReservedForFaults big slots to huge-page faults.
    bool take(bool big, bool prefetch, uint32_t& slot);
    void release(uint32_t slot);
    // Gives back the top chunk of each size if it is free and the peak of
    // busy slots since the last call fits without it. True while more than
    // the minimum stays pinned (call again after an interval).
    bool shrink();

    ReadJob& operator[](uint32_t slot) { return jobs_[slot]; }
    const ReadJob& operator[](uint32_t slot) const { return jobs_[slot]; }
    uint8_t* data(uint32_t slot) const;
    uint64_t capacity(uint32_t slot) const { return is_big(slot) ? kBigBytes : kSmallBytes; }
    uint16_t buffer_index(uint32_t slot) const {
        return static_cast<uint16_t>(is_big(slot) ? kSmallChunks + (slot - kSmallSlots) / kBigPerChunk
                                                  : slot / kSmallPerChunk);
    }
    const void* zero_buffer() const { return zero_; }
    unsigned prefetch_in_flight() const { return prefetch_in_flight_; }
    size_t busy() const { return busy_; }
    uint64_t pinned_bytes() const {
        return small_chunks_ * kSmallPerChunk * kSmallBytes + big_chunks_ * kBigPerChunk * kBigBytes;
    }
    bool above_minimum() const { return small_chunks_ > kMinSmallChunks || big_chunks_ > kMinBigChunks; }

private:
    bool is_big(uint32_t slot) const { return slot >= kSmallSlots; }
    bool grow(bool big);
    bool pin(unsigned chunk);
    void unpin(unsigned chunk);
    unsigned free_big() const { return static_cast<unsigned>(__builtin_popcount(big_free_)); }

    io::IoLoop* io_ = nullptr;
    uint8_t* small_base_ = nullptr;
    uint8_t* big_base_ = nullptr;
    void* zero_ = nullptr;
    // Free slots of pinned chunks, one bit each (big: slot - kSmallSlots);
    // the lowest is taken first, so the top chunk empties when load falls.
    uint64_t small_free_ = 0;
    uint32_t big_free_ = 0;
    unsigned small_chunks_ = 0, big_chunks_ = 0;       // pinned, from the bottom
    unsigned small_busy_ = 0, big_busy_ = 0;
    unsigned small_peak_ = 0, big_peak_ = 0;           // since the last shrink()
    std::vector<ReadJob> jobs_;
    unsigned prefetch_in_flight_ = 0;
    uint64_t next_sequence_ = 0;
    size_t busy_ = 0;
};

}  // namespace ringpager
