#include "io/ring.hpp"

#include <cerrno>

namespace ringpager {

Result<std::unique_ptr<Ring>> Ring::create(unsigned sq_entries, unsigned cq_entries) {
    std::unique_ptr<Ring> ring(new Ring());
    struct Attempt {
        unsigned flags;
        const char* name;
    };
    const Attempt attempts[] = {
        {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN, "single-issuer+defer-taskrun"},
        {IORING_SETUP_COOP_TASKRUN, "coop-taskrun"},
        {0, "plain"},
    };
    int last = 0;
    for (const Attempt& attempt : attempts) {
        io_uring_params params{};
        params.flags = attempt.flags | IORING_SETUP_CQSIZE;
        params.cq_entries = cq_entries;
        last = io_uring_queue_init_params(sq_entries, &ring->ring_, &params);
        if (last == 0) {
            ring->cq_entries_ = params.cq_entries;
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

io_uring_sqe* Ring::sqe() {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    while (sqe == nullptr) {
        // The SQ is full: hand it to the kernel now. This is the only place a
        // turn may submit more than once, and only under a burst.
        io_uring_submit(&ring_);
        sqe = io_uring_get_sqe(&ring_);
    }
    return sqe;
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

size_t Ring::reap(std::vector<Completion>& out) {
    io_uring_cqe* cqe = nullptr;
    unsigned head = 0;
    size_t count = 0;
    io_uring_for_each_cqe(&ring_, head, cqe) {
        out.push_back(Completion{cqe->user_data, cqe->res, cqe->flags});
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

}  // namespace ringpager
