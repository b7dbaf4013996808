#include "pager/read_jobs.hpp"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "common/log.hpp"

namespace ringpager {

ReadJobs::~ReadJobs() {
    // The ring (and with it the buffer table) is gone first: see Reactor::Impl.
    if (small_base_) munmap(small_base_, kSmallSlots * kSmallBytes);
    if (big_base_) munmap(big_base_, kBigSlots * kBigBytes);
    if (zero_) munmap(zero_, kBigBytes);
}

Result<void> ReadJobs::map(io::IoLoop& io) {
    io_ = &io;
    // Reserved, not committed: a page costs memory only once a chunk is pinned.
    const int prot = PROT_READ | PROT_WRITE, flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
    void* small = mmap(nullptr, kSmallSlots * kSmallBytes, prot, flags, -1, 0);
    if (small == MAP_FAILED) return errno_error("mmap");
    small_base_ = static_cast<uint8_t*>(small);
    void* big = mmap(nullptr, kBigSlots * kBigBytes, prot, flags, -1, 0);
    if (big == MAP_FAILED) return errno_error("mmap");
    big_base_ = static_cast<uint8_t*>(big);
    zero_ = mmap(nullptr, kBigBytes, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (zero_ == MAP_FAILED) {
        zero_ = nullptr;
        return errno_error("mmap");
    }
    // Registration pins every buffer page; transparent huge pages make that a
    // few dozen faults instead of thousands (advisory: fine if refused).
    (void)madvise(small_base_, kSmallSlots * kSmallBytes, MADV_HUGEPAGE);
    (void)madvise(big_base_, kBigSlots * kBigBytes, MADV_HUGEPAGE);
    jobs_.resize(kSmallSlots + kBigSlots);
    if (auto r = io.register_buffers_sparse(kChunks); !r) return r;
    while (small_chunks_ < kMinSmallChunks)
        if (!grow(false)) return Error{ENOMEM, "pinning the read buffers"};
    while (big_chunks_ < kMinBigChunks)
        if (!grow(true)) return Error{ENOMEM, "pinning the read buffers"};
    return {};
}

uint8_t* ReadJobs::data(uint32_t slot) const {
    return is_big(slot) ? big_base_ + (slot - kSmallSlots) * kBigBytes : small_base_ + slot * kSmallBytes;
}

bool ReadJobs::pin(unsigned chunk) {
    const bool big = chunk >= kSmallChunks;
    iovec buffer = big ? iovec{big_base_ + (chunk - kSmallChunks) * kBigPerChunk * kBigBytes, kBigPerChunk * kBigBytes}
                       : iovec{small_base_ + chunk * kSmallPerChunk * kSmallBytes, kSmallPerChunk * kSmallBytes};
    if (auto r = io_->update_buffer(chunk, buffer); !r) {
        // The jobs wait for a slot as they do when every pinned one is busy.
        RP_DEBUG("cannot pin another read buffer chunk: %s", r.error().message().c_str());
        return false;
    }
    return true;
}

void ReadJobs::unpin(unsigned chunk) {
    const bool big = chunk >= kSmallChunks;
    // Reads still using the entry keep their reference to it; none does here
    // (only a free chunk is given back).
    if (auto r = io_->update_buffer(chunk, iovec{nullptr, 0}); !r) {
        RP_DEBUG("cannot unpin a read buffer chunk: %s", r.error().message().c_str());
        return;
    }
    void* base = big ? static_cast<void*>(big_base_ + (chunk - kSmallChunks) * kBigPerChunk * kBigBytes)
                     : static_cast<void*>(small_base_ + chunk * kSmallPerChunk * kSmallBytes);
    (void)madvise(base, big ? kBigPerChunk * kBigBytes : kSmallPerChunk * kSmallBytes, MADV_DONTNEED);
}

bool ReadJobs::grow(bool big) {
    if (big) {
        if (big_chunks_ == kBigChunks || !pin(kSmallChunks + big_chunks_)) return false;
        big_free_ |= ((uint32_t{1} << kBigPerChunk) - 1) << (big_chunks_ * kBigPerChunk);
        big_chunks_++;
    } else {
        if (small_chunks_ == kSmallChunks || !pin(small_chunks_)) return false;
        small_free_ |= ((uint64_t{1} << kSmallPerChunk) - 1) << (small_chunks_ * kSmallPerChunk);
        small_chunks_++;
    }
    return true;
}

bool ReadJobs::take(bool big, bool prefetch, uint32_t& slot) {
    if (big) {
        const unsigned reserve = prefetch ? kBigReservedForFaults : 0;
        while (free_big() <= reserve)
            if (!grow(true)) return false;
        const unsigned bit = static_cast<unsigned>(__builtin_ctz(big_free_));
        big_free_ &= ~(uint32_t{1} << bit);
        slot = kSmallSlots + bit;
        big_peak_ = std::max(big_peak_, ++big_busy_);
    } else {
        if (small_free_ == 0 && !grow(false)) return false;
        const unsigned bit = static_cast<unsigned>(__builtin_ctzll(small_free_));
        small_free_ &= ~(uint64_t{1} << bit);
        slot = bit;
        small_peak_ = std::max(small_peak_, ++small_busy_);
    }
    ReadJob& job = jobs_[slot];
    std::vector<uint8_t> poison_pages = std::move(job.poison_pages);
    poison_pages.clear();  // keeps its capacity: no allocation per job
    std::vector<ScatterRun> scatter = std::move(job.scatter);
    scatter.clear();
    job = ReadJob{};
    job.poison_pages = std::move(poison_pages);
    job.scatter = std::move(scatter);
    job.busy = true;
    job.prefetch = prefetch;
    job.sequence = next_sequence_++;
    if (prefetch) prefetch_in_flight_++;
    busy_++;
    return true;
}

void ReadJobs::release(uint32_t slot) {
    ReadJob& job = jobs_[slot];
    if (job.prefetch) prefetch_in_flight_--;
    job.busy = false;
    busy_--;
    if (is_big(slot)) {
        big_free_ |= uint32_t{1} << (slot - kSmallSlots);
        big_busy_--;
    } else {
        small_free_ |= uint64_t{1} << slot;
        small_busy_--;
    }
}

bool ReadJobs::shrink() {
    if (small_chunks_ > kMinSmallChunks && small_peak_ < (small_chunks_ - 1) * kSmallPerChunk) {
        const uint64_t top = ((uint64_t{1} << kSmallPerChunk) - 1) << ((small_chunks_ - 1) * kSmallPerChunk);
        if ((small_free_ & top) == top) {
            small_free_ &= ~top;
            small_chunks_--;
            unpin(small_chunks_);
        }
    }
    // Prefetch keeps kBigReservedForFaults free beside its own: the peak
    // must fit with that margin. Strictly below, so a load that just fills
    // the smaller pool does not pin and unpin a chunk every interval.
    if (big_chunks_ > kMinBigChunks &&
        (big_peak_ == 0 || big_peak_ + kBigReservedForFaults < (big_chunks_ - 1) * kBigPerChunk)) {
        const uint32_t top = ((uint32_t{1} << kBigPerChunk) - 1) << ((big_chunks_ - 1) * kBigPerChunk);
        if ((big_free_ & top) == top) {
            big_free_ &= ~top;
            big_chunks_--;
            unpin(kSmallChunks + big_chunks_);
        }
    }
    small_peak_ = small_busy_;
    big_peak_ = big_busy_;
    return above_minimum();
}

}  // namespace ringpager
