#include "io/ring.hpp"

#include <sched.h>

#include <cerrno>

namespace ringpager::io {
namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield" ::: "memory");
#endif
}

}  // namespace

Result<std::unique_ptr<Ring>> Ring::create(unsigned sq_entries, unsigned cq_entries) {
    std::unique_ptr<Ring> ring(new Ring());
    struct Attempt {
        unsigned flags;
        const char* name;
    };
    // TASKRUN_FLAG makes the kernel flag pending task work in the SQ ring,
    // which lets submit_and_poll() notice a completion without a syscall.
    const Attempt attempts[] = {
        {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
         "single-issuer+defer-taskrun"},
        {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN, "single-issuer+defer-taskrun (no busy poll)"},
        {IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG, "coop-taskrun"},
        {IORING_SETUP_COOP_TASKRUN, "coop-taskrun (no busy poll)"},
        {0, "plain (no busy poll)"},
    };
    int last = 0;
    for (const Attempt& attempt : attempts) {
        io_uring_params params{};
        params.flags = attempt.flags | IORING_SETUP_CQSIZE;
        params.cq_entries = cq_entries;
        last = io_uring_queue_init_params(sq_entries, &ring->ring_, &params);
        if (last == 0) {
            ring->cq_entries_ = params.cq_entries;
            ring->taskrun_flag_ = (attempt.flags & IORING_SETUP_TASKRUN_FLAG) != 0;
            ring->setup_mode_ = attempt.name;
            return ring;
        }
        // EINVAL: this kernel does not know the flag; try the next set.
        if (last != -EINVAL) break;
    }
    return Error{-last, "io_uring_queue_init_params"};
}

Ring::~Ring() {
    if (cq_entries_ != 0) io_uring_queue_exit(&ring_);
}

io_uring_sqe* Ring::try_sqe() {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe != nullptr) return sqe;
    // The SQ is full: hand it to the kernel now. This is the only place a
    // turn may submit more than once, and only under a burst. EBUSY/EAGAIN:
    // the CQ is overcommitted and nothing was taken; no SQE this time.
    const int rc = io_uring_submit(&ring_);
    if (rc < 0 && rc != -EINTR) return nullptr;
    return io_uring_get_sqe(&ring_);
}

Result<void> Ring::submit_and_wait(unsigned wait_nr) {
    for (;;) {
        const int rc = io_uring_submit_and_wait(&ring_, wait_nr);
        if (rc >= 0) return {};
        if (rc == -EINTR) continue;
        // EBUSY/EAGAIN: the CQ is over-committed; completions are waiting to be reaped.
        if (rc == -EBUSY || rc == -EAGAIN) return {};
        return Error{-rc, "io_uring_submit_and_wait"};
    }
}

void Ring::flush_completions() { (void)io_uring_get_events(&ring_); }

bool Ring::submit_and_poll(std::chrono::nanoseconds max) {
    using clock = std::chrono::steady_clock;
    if (!taskrun_flag_) return false;
    if (io_uring_sq_ready(&ring_) > 0) {
        const int rc = io_uring_submit(&ring_);
        // A real submit error resurfaces from the submit_and_wait the caller
        // falls back to, which reports it.
        if (rc < 0 && rc != -EINTR) return false;
    }
    const auto start = clock::now();
    auto next_yield = start + kPollYieldEvery;
    for (unsigned spin = 0;; spin++) {
        if (io_uring_cq_ready(&ring_) > 0) return true;
        // Task work (a poll that fired, a read to finish) or an overflowed CQ
        // needs one trip into the kernel to become a completion.
        if (IO_URING_READ_ONCE(*ring_.sq.kflags) & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW)) {
            (void)io_uring_get_events(&ring_);
            continue;
        }
        cpu_relax();
        if (spin % 32 != 0) continue;
        const auto now = clock::now();
        if (now - start >= max) return false;
        // Never hold a core from a thread that is ready to run on it (a vCPU
        // we just woke, say): offer it the CPU every few microseconds.
        if (now >= next_yield) {
            (void)sched_yield();  // cannot fail on Linux
            next_yield = clock::now() + kPollYieldEvery;
        }
    }
}

size_t Ring::reap(std::vector<RawCompletion>& out) {
    io_uring_cqe* cqe = nullptr;
    unsigned head = 0;
    size_t count = 0;
    io_uring_for_each_cqe(&ring_, head, cqe) {
        out.push_back(RawCompletion{cqe->user_data, cqe->res, cqe->flags});
        count++;
    }
    io_uring_cq_advance(&ring_, static_cast<unsigned>(count));
    return count;
}

Result<void> Ring::register_files_sparse(unsigned count) {
    const int rc = io_uring_register_files_sparse(&ring_, count);
    if (rc < 0) return Error{-rc, "io_uring_register_files_sparse"};
    return {};
}

Result<void> Ring::update_file(unsigned slot, int fd) {
    const int rc = io_uring_register_files_update(&ring_, slot, &fd, 1);
    if (rc < 0) return Error{-rc, "io_uring_register_files_update"};
    return {};
}

Result<void> Ring::limit_workers(unsigned bounded, unsigned unbounded) {
    unsigned values[2] = {bounded, unbounded};
    const int rc = io_uring_register_iowq_max_workers(&ring_, values);
    if (rc < 0) return Error{-rc, "io_uring_register_iowq_max_workers"};
    return {};
}

Result<void> Ring::register_buffers(std::span<const iovec> buffers) {
    const int rc = io_uring_register_buffers(&ring_, buffers.data(), static_cast<unsigned>(buffers.size()));
    if (rc < 0) return Error{-rc, "io_uring_register_buffers"};
    return {};
}

Result<void> Ring::register_buffers_sparse(unsigned count) {
    const int rc = io_uring_register_buffers_sparse(&ring_, count);
    if (rc < 0) return Error{-rc, "io_uring_register_buffers_sparse"};
    return {};
}

Result<void> Ring::update_buffer(unsigned index, const iovec& buffer) {
    const __u64 no_tag = 0;
    const int rc = io_uring_register_buffers_update_tag(&ring_, index, &buffer, &no_tag, 1);
    if (rc < 0) return Error{-rc, "io_uring_register_buffers_update_tag"};
    return {};
}

}  // namespace ringpager::io
