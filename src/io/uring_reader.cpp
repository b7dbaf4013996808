// Ordered bulk reads through io_uring. Slot k of the ring's buffers holds task
// i with i % depth == k, so tasks complete into distinct buffers while they are
// consumed strictly in order.
#include "io/uring_reader.hpp"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace ringpager::io {

void UringReader::FreeDeleter::operator()(std::byte* p) const { std::free(p); }

UringReader::UringReader(unsigned reads_in_flight, uint64_t buffer_bytes)
    : depth_(reads_in_flight), buffer_bytes_(buffer_bytes), slots_(reads_in_flight) {}

UringReader::~UringReader() {
    // read_all() drains before returning, so no read targets the buffers here.
    if (ring_ready_) io_uring_queue_exit(&ring_);
}

Result<std::unique_ptr<UringReader>> UringReader::create(unsigned reads_in_flight, uint64_t buffer_bytes) {
    // Reads are issued with a 32-bit length, so a buffer stays below 4 GiB.
    if (reads_in_flight == 0 || reads_in_flight > 1024 || buffer_bytes == 0 || buffer_bytes % 4096 != 0 ||
        buffer_bytes > (uint64_t{1} << 30)) {
        return Error{EINVAL, "UringReader::create"};
    }
    std::unique_ptr<UringReader> reader(new UringReader(reads_in_flight, buffer_bytes));
    int ret = io_uring_queue_init(reads_in_flight * 2, &reader->ring_, 0);
    if (ret < 0) return Error{-ret, "io_uring_queue_init"};
    reader->ring_ready_ = true;
    // Huge-page aligned (so also fine for O_DIRECT): with transparent huge
    // pages a buffer costs a few page faults instead of thousands.
    constexpr uint64_t huge_page_bytes = 2 << 20;
    uint64_t allocation = (buffer_bytes + huge_page_bytes - 1) / huge_page_bytes * huge_page_bytes;
    for (unsigned i = 0; i < reads_in_flight; ++i) {
        auto* p = static_cast<std::byte*>(std::aligned_alloc(huge_page_bytes, allocation));
        if (p == nullptr) return Error{ENOMEM, "aligned_alloc"};
        reader->buffers_.emplace_back(p);
        // Only a hint: when THP is off or refuses, the buffer works with small pages.
        if (::madvise(p, allocation, MADV_HUGEPAGE) != 0 && errno != EINVAL) return errno_error("madvise");
    }
    return reader;
}

void UringReader::prepare(int fd, size_t slot_index, std::span<const ReadTask> tasks) {
    Slot& slot = slots_[slot_index];
    const ReadTask& task = tasks[slot.task];
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    // SAFETY: the ring has 2 * depth entries and at most depth reads are ever
    // prepared or in flight, so a free SQE always exists.
    io_uring_prep_read(sqe, fd, buffers_[slot_index].get() + slot.done_bytes,
                       static_cast<unsigned>(task.length_bytes - slot.done_bytes), task.offset + slot.done_bytes);
    io_uring_sqe_set_data64(sqe, slot_index);
    slot.in_flight = true;
    ++in_flight_;
    ++unsubmitted_;
}

std::string UringReader::submit() {
    for (;;) {
        int ret = io_uring_submit(&ring_);
        if (ret >= 0) {
            // SQEs the kernel did not take stay queued and go with the next submit.
            unsubmitted_ -= std::min<unsigned>(static_cast<unsigned>(ret), unsubmitted_);
            return {};
        }
        if (ret == -EINTR || ret == -EAGAIN || ret == -EBUSY) continue;
        return std::string("io_uring_submit: ") + std::strerror(-ret);
    }
}

// Reaps one completion and advances its slot. A failed read is returned as an
// error; short reads and EINTR/EAGAIN are re-issued for the remainder.
std::string UringReader::wait_one(int fd, const std::string& path, std::span<const ReadTask> tasks) {
    io_uring_cqe* cqe = nullptr;
    int ret;
    do {
        ret = io_uring_wait_cqe(&ring_, &cqe);
    } while (ret == -EINTR);
    if (ret < 0) return std::string("io_uring_wait_cqe: ") + std::strerror(-ret);
    auto slot_index = static_cast<size_t>(io_uring_cqe_get_data64(cqe));
    int res = cqe->res;
    io_uring_cqe_seen(&ring_, cqe);
    Slot& slot = slots_[slot_index];
    slot.in_flight = false;
    --in_flight_;
    const ReadTask& task = tasks[slot.task];
    if (res == -EINTR || res == -EAGAIN) {
        prepare(fd, slot_index, tasks);
        return {};
    }
    if (res < 0) {
        return path + ": read at offset " + std::to_string(task.offset + slot.done_bytes) + ": " + std::strerror(-res);
    }
    if (res == 0) {
        return path + ": unexpected end of file at offset " + std::to_string(task.offset + slot.done_bytes) +
               " (the file shrank while it was read)";
    }
    slot.done_bytes += static_cast<uint64_t>(res);
    if (slot.done_bytes < task.length_bytes) {
        prepare(fd, slot_index, tasks);
    } else {
        slot.complete = true;
    }
    return {};
}

void UringReader::drain() {
    // Every prepared SQE must reach the kernel before its completion can be
    // awaited. Those that cannot be submitted will never complete: stop
    // counting them, but still wait for every read the kernel did take.
    if (!submit().empty()) in_flight_ -= unsubmitted_;
    unsubmitted_ = 0;
    while (in_flight_ > 0) {
        io_uring_cqe* cqe = nullptr;
        int ret = io_uring_wait_cqe(&ring_, &cqe);
        if (ret == -EINTR) continue;
        if (ret < 0) break;
        io_uring_cqe_seen(&ring_, cqe);
        --in_flight_;
    }
    if (in_flight_ > 0) {
        // The ring failed with reads still targeting our buffers: leak them
        // rather than free memory the kernel may still write to.
        for (auto& buffer : buffers_) (void)buffer.release();
        broken_ = true;
    }
    for (Slot& slot : slots_) slot = Slot{};
}

std::string UringReader::read_all(int fd, const std::string& path, std::span<const ReadTask> tasks,
                                  const Consumer& consume) {
    if (broken_) return path + ": the read ring failed earlier";
    for (const ReadTask& task : tasks) {
        if (task.length_bytes == 0 || task.length_bytes > buffer_bytes_) return path + ": invalid read task";
    }
    for (Slot& slot : slots_) slot = Slot{};
    size_t next_submit = 0;
    std::string error;
    for (size_t next_consume = 0; next_consume < tasks.size() && error.empty(); ++next_consume) {
        while (next_submit < tasks.size() && next_submit < next_consume + depth_) {
            size_t slot_index = next_submit % depth_;
            slots_[slot_index] = Slot{next_submit, 0, false, false};
            prepare(fd, slot_index, tasks);
            ++next_submit;
        }
        Slot& slot = slots_[next_consume % depth_];
        while (error.empty() && !slot.complete) {
            error = submit();
            if (error.empty()) error = wait_one(fd, path, tasks);
        }
        if (error.empty()) {
            error = consume(next_consume, std::span(buffers_[next_consume % depth_].get(), tasks[next_consume].length_bytes));
            slot.complete = false;
        }
    }
    drain();
    return error;
}

}  // namespace ringpager::io
