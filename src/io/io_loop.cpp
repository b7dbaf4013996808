#include "io/io_loop.hpp"

#include <cassert>
#include <cerrno>

namespace ringpager::io {

// ---- IoFaults ---------------------------------------------------------------

void IoFaults::inject(OpType type, int32_t result, unsigned times) {
    injections_.push_back({type, result, times});
    armed_ = true;
}

void IoFaults::fail_submit(int error, unsigned times) {
    submit_error_ = error;
    submit_times_ = times;
    armed_ = true;
}

void IoFaults::fail_file_registration(int error, unsigned times) {
    registration_error_ = error;
    registration_times_ = times;
    armed_ = true;
}

void IoFaults::fill_sq(unsigned times) {
    sq_full_times_ = times;
    armed_ = true;
}

bool IoFaults::take_sq_full() {
    if (sq_full_times_ == 0) return false;
    sq_full_times_--;
    return true;
}

bool IoFaults::take(OpType type, int32_t& result) {
    for (auto it = injections_.begin(); it != injections_.end(); ++it) {
        if (it->type != type) continue;
        result = it->result;
        if (--it->times == 0) injections_.erase(it);
        return true;
    }
    return false;
}

bool IoFaults::take_submit_failure(int& error) {
    if (submit_times_ == 0) return false;
    submit_times_--;
    error = submit_error_;
    return true;
}

bool IoFaults::take_registration_failure(int& error) {
    if (registration_times_ == 0) return false;
    registration_times_--;
    error = registration_error_;
    return true;
}

// ---- IoLoop -----------------------------------------------------------------

Result<std::unique_ptr<IoLoop>> IoLoop::create(const Setup& setup) {
    std::unique_ptr<IoLoop> loop(new IoLoop());
    auto ring = Ring::create(setup.sq_entries, setup.cq_entries);
    if (!ring) return ring.error();
    loop->ring_ = std::move(*ring);
    if (auto r = loop->ring_->register_files_sparse(setup.file_slots); !r) return r.error();
    // In-flight operations are capped at the completion queue's size.
    loop->ops_.resize(setup.cq_entries);
    for (size_t i = setup.cq_entries; i-- > 0;) loop->free_.push_back(static_cast<uint32_t>(i));
    for (unsigned i = setup.file_slots; i-- > 0;) loop->free_file_slots_.push_back(i);
    return loop;
}

IoLoop::~IoLoop() = default;

IoLoop::Op* IoLoop::find(Tag tag) {
    const uint64_t index = (tag & 0xffffffffu) - 1;
    if (tag == 0 || index >= ops_.size()) return nullptr;
    Op& op = ops_[index];
    return op.busy && op.gen == (tag >> 32) ? &op : nullptr;
}

const IoLoop::Op* IoLoop::find(Tag tag) const { return const_cast<IoLoop*>(this)->find(tag); }

// Takes a slot for the operation, then prepares it, injects its result, or
// parks it until the SQ has room.
Tag IoLoop::start(OpType type, const OpData& data, Request request) {
    assert(!free_.empty());  // callers keep ops_free() above their margin
    const uint32_t index = free_.back();
    free_.pop_back();
    Op& op = ops_[index];
    op.data = data;
    op.type = type;
    op.busy = true;
    op.gen++;
    request.type = type;
    request.tag = (uint64_t{op.gen} << 32) | (index + 1);
    int32_t injected = 0;
    if (faults_.armed() && faults_.take(type, injected)) {
        synthetic_.push_back({request.tag, injected});
        return request.tag;
    }
    if (!parked_.empty() || !prepare(request)) parked_.push_back(request);
    return request.tag;
}

bool IoLoop::prepare(const Request& r) {
    if (faults_.armed() && faults_.take_sq_full()) return false;
    io_uring_sqe* sqe = ring_->try_sqe();
    if (sqe == nullptr) return false;
    switch (r.type) {
        case OpType::read_fixed:
            io_uring_prep_read_fixed(sqe, r.fd, r.buf, static_cast<unsigned>(r.len), r.offset, r.buf_index);
            sqe->flags |= IOSQE_FIXED_FILE | (r.async ? IOSQE_ASYNC : 0);
            break;
        case OpType::read:
            io_uring_prep_read(sqe, r.fd, r.buf, static_cast<unsigned>(r.len), 0);
            sqe->flags |= IOSQE_FIXED_FILE;
            break;
        case OpType::poll:
        case OpType::poll_until:
            io_uring_prep_poll_add(sqe, r.fd, r.flags);
            break;
        case OpType::accept:
            io_uring_prep_accept(sqe, r.fd, nullptr, nullptr, static_cast<int>(r.flags));
            break;
        case OpType::fadvise:
            io_uring_prep_fadvise(sqe, r.fd, r.offset, static_cast<off_t>(r.len), static_cast<int>(r.flags));
            sqe->flags |= IOSQE_FIXED_FILE;
            break;
        case OpType::timeout:
            io_uring_prep_timeout(sqe, const_cast<__kernel_timespec*>(r.ts), 0, 0);
            break;
        case OpType::cancel:
            io_uring_prep_cancel64(sqe, r.target, 0);
            break;
        case OpType::nop:
            io_uring_prep_nop(sqe);
            break;
    }
    io_uring_sqe_set_data64(sqe, r.tag);
    if (r.type != OpType::poll_until) return true;
    // The linked timeout needs an SQE right behind its poll; its own
    // completion (tag 0) carries nothing.
    sqe->flags |= IOSQE_IO_LINK;
    io_uring_sqe* timeout = ring_->try_sqe();
    if (timeout == nullptr) {
        // The poll is in the SQ but unlinked: turn it into a NOP that
        // completes at once, as if cancelled, rather than wait forever.
        io_uring_prep_nop(sqe);
        io_uring_sqe_set_data64(sqe, 0);
        return false;
    }
    io_uring_prep_link_timeout(timeout, const_cast<__kernel_timespec*>(r.ts), 0);
    io_uring_sqe_set_data64(timeout, 0);
    return true;
}

void IoLoop::flush_parked() {
    while (!parked_.empty() && prepare(parked_.front())) parked_.pop_front();
}

Tag IoLoop::read_fixed(const OpData& data, unsigned file_slot, void* buf, uint32_t len, uint64_t offset,
                       uint16_t buf_index, bool async) {
    Request r;
    r.fd = static_cast<int>(file_slot);
    r.buf = buf;
    r.len = len;
    r.offset = offset;
    r.buf_index = buf_index;
    r.async = async;
    return start(OpType::read_fixed, data, r);
}

Tag IoLoop::read(const OpData& data, unsigned file_slot, void* buf, uint32_t len) {
    Request r;
    r.fd = static_cast<int>(file_slot);
    r.buf = buf;
    r.len = len;
    return start(OpType::read, data, r);
}

Tag IoLoop::poll(const OpData& data, int fd, unsigned events) {
    Request r;
    r.fd = fd;
    r.flags = events;
    return start(OpType::poll, data, r);
}

Tag IoLoop::poll_until(const OpData& data, int fd, unsigned events, const __kernel_timespec* timeout) {
    Request r;
    r.fd = fd;
    r.flags = events;
    r.ts = timeout;
    return start(OpType::poll_until, data, r);
}

Tag IoLoop::accept(const OpData& data, int listen_fd) {
    Request r;
    r.fd = listen_fd;
    r.flags = SOCK_CLOEXEC | SOCK_NONBLOCK;
    return start(OpType::accept, data, r);
}

Tag IoLoop::fadvise(const OpData& data, unsigned file_slot, uint64_t offset, uint64_t len, int advice) {
    Request r;
    r.fd = static_cast<int>(file_slot);
    r.offset = offset;
    r.len = len;
    r.flags = static_cast<unsigned>(advice);
    return start(OpType::fadvise, data, r);
}

Tag IoLoop::timeout(const OpData& data, const __kernel_timespec* after) {
    Request r;
    r.ts = after;
    return start(OpType::timeout, data, r);
}

void IoLoop::cancel(Tag tag) {
    if (find(tag) == nullptr) return;
    // A parked operation never reached the kernel: it completes here.
    for (auto it = parked_.begin(); it != parked_.end(); ++it) {
        if (it->tag != tag) continue;
        synthetic_.push_back({tag, -ECANCELED});
        parked_.erase(it);
        return;
    }
    // An injected result still to be delivered stands: it already completed.
    Request r;
    r.type = OpType::cancel;
    r.target = tag;  // its own completion is ignored (tag 0)
    if (!parked_.empty() || !prepare(r)) parked_.push_back(r);
}

Result<void> IoLoop::submit_and_wait(unsigned wait_nr) {
    flush_parked();
    int injected_error = 0;
    if (faults_.armed() && faults_.take_submit_failure(injected_error)) return Error{injected_error, "io_uring_enter"};
    // Injected results are already complete, and parked operations must be
    // retried after this submit made room: nothing to wait for then.
    return ring_->submit_and_wait(synthetic_.empty() && parked_.empty() ? wait_nr : 0);
}

bool IoLoop::submit_and_poll(std::chrono::nanoseconds max) {
    flush_parked();
    if (!synthetic_.empty() || !parked_.empty()) return true;
    return ring_->submit_and_poll(max);
}

bool IoLoop::can_busy_poll() const { return ring_->can_busy_poll(); }

void IoLoop::flush_completions() { ring_->flush_completions(); }

void IoLoop::submit_prepared() {
    if (ring_->unsubmitted() == 0) return;
    (void)ring_->submit_and_wait(0);
}

bool IoLoop::maybe_completions() const {
    return !synthetic_.empty() || ring_->unsubmitted() != 0 || ring_->maybe_completions();
}

size_t IoLoop::reap(std::vector<Completion>& out) {
    const size_t before = out.size();
    thread_local std::vector<RawCompletion> raw;
    raw.clear();
    for (const Synthetic& s : synthetic_) raw.push_back({s.tag, s.result, 0});
    synthetic_.clear();
    ring_->reap(raw);
    for (const RawCompletion& c : raw) {
        Op* op = find(c.user_data);
        if (op == nullptr) continue;  // tag 0: cancels, linked timeouts
        const bool more = (c.flags & IORING_CQE_F_MORE) != 0;
        out.push_back({op->data, op->type, c.res, classify(op->type, c.res), more});
        if (!more) {
            op->busy = false;
            free_.push_back(static_cast<uint32_t>((c.user_data & 0xffffffffu) - 1));
        }
    }
    return out.size() - before;
}

Result<unsigned> IoLoop::add_file(int fd) {
    int injected = 0;
    if (faults_.armed() && faults_.take_registration_failure(injected)) return Error{injected, "io_uring_register_files_update"};
    if (free_file_slots_.empty()) return Error{ENFILE, "io_uring_register_files_update"};
    const unsigned slot = free_file_slots_.back();
    if (auto r = ring_->update_file(slot, fd); !r) return r.error();
    free_file_slots_.pop_back();
    return slot;
}

void IoLoop::remove_file(unsigned slot) {
    // Clearing a slot only fails for a slot that was never registered.
    (void)ring_->update_file(slot, -1);
    free_file_slots_.push_back(slot);
}

Result<void> IoLoop::register_buffers(std::span<const iovec> buffers) { return ring_->register_buffers(buffers); }
Result<void> IoLoop::register_buffers_sparse(unsigned count) { return ring_->register_buffers_sparse(count); }
Result<void> IoLoop::update_buffer(unsigned index, const iovec& buffer) { return ring_->update_buffer(index, buffer); }

Result<void> IoLoop::limit_workers(unsigned bounded, unsigned unbounded) {
    return ring_->limit_workers(bounded, unbounded);
}

const std::string& IoLoop::setup_mode() const { return ring_->setup_mode(); }

}  // namespace ringpager::io
