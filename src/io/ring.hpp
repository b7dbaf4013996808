// Ring: one io_uring owned by one thread, private to src/io (IoLoop is the
// interface the rest of the engine uses): get an SQE (null when the queue is
// full), submit once per turn, reap every completion into a local batch, and
// the registrations (sparse fixed files, buffers).
#pragma once

#include <liburing.h>
#include <sys/uio.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "ringpager/result.hpp"

namespace ringpager::io {

struct RawCompletion {
    uint64_t user_data;
    int32_t res;
    uint32_t flags;
};

class Ring {
public:
    // Creates a ring for the calling thread, trying SINGLE_ISSUER|DEFER_TASKRUN,
    // then COOP_TASKRUN, then plain setup. `cq_entries` bounds in-flight work.
    static Result<std::unique_ptr<Ring>> create(unsigned sq_entries, unsigned cq_entries);
    ~Ring();
    Ring(const Ring&) = delete;
    Ring& operator=(const Ring&) = delete;

    // An SQE to fill. When the SQ is full it is flushed to the kernel once
    // (its result checked); nullptr when that made no room (the CQ is
    // overcommitted): the caller parks the operation.
    io_uring_sqe* try_sqe();
    // Submits everything prepared and waits for at least `wait_nr` completions.
    Result<void> submit_and_wait(unsigned wait_nr);
    // Flushes deferred task work so completions become visible without waiting.
    void flush_completions();
    // Submits everything prepared, then polls for a completion for up to
    // `max` without sleeping, running task work as soon as the kernel flags
    // some. True: a completion is ready to reap. False: none came (or busy
    // polling is unavailable); the caller sleeps with submit_and_wait(1).
    bool submit_and_poll(std::chrono::nanoseconds max);
    bool can_busy_poll() const { return taskrun_flag_; }
    // Without a syscall: false only when no completion can be waiting (no
    // task work flagged by the kernel, nothing in the CQ). True when it
    // cannot tell (no IORING_SETUP_TASKRUN_FLAG).
    bool maybe_completions() const {
        if (!taskrun_flag_) return true;
        return (IO_URING_READ_ONCE(*ring_.sq.kflags) & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW)) != 0 ||
               io_uring_cq_ready(&ring_) > 0;
    }
    // Operations prepared and not yet submitted.
    unsigned unsubmitted() const { return io_uring_sq_ready(&ring_); }
    // Moves every available completion into `out` (appended); returns how many.
    size_t reap(std::vector<RawCompletion>& out);
    // True when some completion already in the CQ satisfies `match(user_data)`;
    // consumes nothing.
    template <typename Match>
    bool any_completion(Match match) {
        io_uring_cqe* cqe = nullptr;
        unsigned head = 0;
        io_uring_for_each_cqe(&ring_, head, cqe) {
            if (match(cqe->user_data)) return true;
        }
        return false;
    }

    Result<void> register_files_sparse(unsigned count);
    Result<void> update_file(unsigned slot, int fd);
    Result<void> register_buffers(std::span<const iovec> buffers);
    // A table of `count` empty buffer entries, filled (or emptied: a null
    // iovec) one by one at run time with update_buffer.
    Result<void> register_buffers_sparse(unsigned count);
    Result<void> update_buffer(unsigned index, const iovec& buffer);
    // Caps the io-wq workers that run this ring's punted file reads.
    Result<void> limit_workers(unsigned bounded, unsigned unbounded);

    unsigned cq_entries() const { return cq_entries_; }
    const std::string& setup_mode() const { return setup_mode_; }

private:
    Ring() = default;
    io_uring ring_{};
    unsigned cq_entries_ = 0;
    bool taskrun_flag_ = false;
    static constexpr std::chrono::microseconds kPollYieldEvery{5};
    std::string setup_mode_;
};

}  // namespace ringpager::io
