#include "pager/read_jobs.hpp"

#include <sys/mman.h>

#include <cerrno>
#include <utility>

namespace ringpager {

ReadJobs::~ReadJobs() {
    if (small_base_) munmap(small_base_, kSmallSlots * kSmallBytes);
    if (big_base_) munmap(big_base_, kBigSlots * kBigBytes);
    if (zero_) munmap(zero_, kBigBytes);
}

Result<void> ReadJobs::map() {
    const int prot = PROT_READ | PROT_WRITE, flags = MAP_PRIVATE | MAP_ANONYMOUS;
    void* small = mmap(nullptr, kSmallSlots * kSmallBytes, prot, flags, -1, 0);
    if (small == MAP_FAILED) return errno_error("mmap");
    small_base_ = static_cast<uint8_t*>(small);
    void* big = mmap(nullptr, kBigSlots * kBigBytes, prot, flags, -1, 0);
    if (big == MAP_FAILED) return errno_error("mmap");
    big_base_ = static_cast<uint8_t*>(big);
    zero_ = mmap(nullptr, kBigBytes, PROT_READ, flags, -1, 0);
    if (zero_ == MAP_FAILED) {
        zero_ = nullptr;
        return errno_error("mmap");
    }
    // Registration pins every buffer page; transparent huge pages make that a
    // few dozen faults instead of thousands (advisory: fine if refused).
    (void)madvise(small_base_, kSmallSlots * kSmallBytes, MADV_HUGEPAGE);
    (void)madvise(big_base_, kBigSlots * kBigBytes, MADV_HUGEPAGE);
    for (uint32_t i = kSmallSlots; i-- > 0;) small_free_.push_back(i);
    for (uint32_t i = kSmallSlots + kBigSlots; i-- > kSmallSlots;) big_free_.push_back(i);
    jobs_.resize(kSmallSlots + kBigSlots);
    return {};
}

std::array<iovec, 2> ReadJobs::iovecs() const {
    return {iovec{small_base_, kSmallSlots * kSmallBytes}, iovec{big_base_, kBigSlots * kBigBytes}};
}

uint8_t* ReadJobs::data(uint32_t slot) const {
    return is_big(slot) ? big_base_ + (slot - kSmallSlots) * kBigBytes : small_base_ + slot * kSmallBytes;
}

bool ReadJobs::take(bool big, bool prefetch, uint32_t& slot) {
    auto& free_list = big ? big_free_ : small_free_;
    if (free_list.empty() || (prefetch && big_free_.size() <= kBigReservedForFaults)) return false;
    slot = free_list.back();
    free_list.pop_back();
    ReadJob& job = jobs_[slot];
    std::vector<uint8_t> poison_pages = std::move(job.poison_pages);
    poison_pages.clear();  // keeps its capacity: no allocation per job
    job = ReadJob{};
    job.poison_pages = std::move(poison_pages);
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
    (is_big(slot) ? big_free_ : small_free_).push_back(slot);
}

}  // namespace ringpager
