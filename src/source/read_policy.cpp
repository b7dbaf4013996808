#include "source/read_policy.hpp"

#include <sys/uio.h>

#include <algorithm>
#include <cerrno>

namespace ringpager {

bool read_cached(const PageSource& source, const ReadPlan& plan, uint8_t* into) {
    const int fd = source.file_fds()[plan.file_index];
    iovec iov{into, plan.length_bytes};
    ssize_t n;
    do {
        n = preadv2(fd, &iov, 1, static_cast<off_t>(plan.file_offset), RWF_NOWAIT);
    } while (n < 0 && errno == EINTR);
    return n == static_cast<ssize_t>(plan.length_bytes);
}

std::optional<ReadaheadWindow::Range> ReadaheadWindow::after_fault_read(uint32_t file_index, uint64_t file_offset,
                                                                        bool can_issue) {
    const bool forward = file_ == file_index && file_offset >= last_offset_ && file_offset - last_offset_ <= window_;
    if (file_ != file_index) end_ = 0;
    file_ = file_index;
    last_offset_ = file_offset;
    if (window_ == 0 || !forward || !can_issue) return std::nullopt;
    if (file_offset + window_ <= end_) return std::nullopt;  // the current window still covers it
    const uint64_t start = std::max(file_offset, end_);
    end_ = file_offset + 2 * window_;
    return Range{file_index, start, end_ - start};
}

}  // namespace ringpager
