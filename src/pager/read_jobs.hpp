// ReadJobs: a reactor's registered read buffers and the read jobs that use
// them, shared by all of its VMs' pagers. One job = contiguous guest pages
// read into one buffer slot (job index == slot index), then installed.
// Small slots (64 KiB) serve 4 KiB-page faults; big slots (2 MiB) serve
// prefetch batches and huge-page faults, a few of them kept for faults.
#pragma once

#include <sys/uio.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "ringpager/result.hpp"

namespace ringpager {

struct ReadJob {
    bool busy = false;
    bool prefetch = false;
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
};

class ReadJobs {
public:
    static constexpr size_t kSmallBytes = 64 * 1024;
    static constexpr size_t kBigBytes = 2 * 1024 * 1024;
    // Pinned for the reactor's life: 4 MiB of fault slots and 24 MiB of big
    // slots.
    static constexpr unsigned kSmallSlots = 64;
    static constexpr unsigned kBigSlots = 12;
    static constexpr unsigned kBigReservedForFaults = 4;

    ReadJobs() = default;
    ~ReadJobs();
    ReadJobs(const ReadJobs&) = delete;
    ReadJobs& operator=(const ReadJobs&) = delete;

    // Maps the buffers (and a read-only 2 MiB zero page for hugetlb zero
    // fills); `iovecs()` is then what the ring registers.
    Result<void> map();
    std::array<iovec, 2> iovecs() const;

    // A free slot of the size a job needs, or false. Prefetch jobs leave
    // kBigReservedForFaults big slots to huge-page faults.
    bool take(bool big, bool prefetch, uint32_t& slot);
    void release(uint32_t slot);

    ReadJob& operator[](uint32_t slot) { return jobs_[slot]; }
    const ReadJob& operator[](uint32_t slot) const { return jobs_[slot]; }
    uint8_t* data(uint32_t slot) const;
    uint64_t capacity(uint32_t slot) const { return is_big(slot) ? kBigBytes : kSmallBytes; }
    uint16_t buffer_index(uint32_t slot) const { return is_big(slot) ? 1 : 0; }
    const void* zero_buffer() const { return zero_; }
    unsigned prefetch_in_flight() const { return prefetch_in_flight_; }
    size_t busy() const { return busy_; }

private:
    bool is_big(uint32_t slot) const { return slot >= kSmallSlots; }

    uint8_t* small_base_ = nullptr;
    uint8_t* big_base_ = nullptr;
    void* zero_ = nullptr;
    std::vector<uint32_t> small_free_, big_free_;
    std::vector<ReadJob> jobs_;
    unsigned prefetch_in_flight_ = 0;
    uint64_t next_sequence_ = 0;
    size_t busy_ = 0;
};

}  // namespace ringpager
