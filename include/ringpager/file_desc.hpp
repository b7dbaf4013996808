// FileDesc: the single owner of one file descriptor.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <utility>

#include "ringpager/result.hpp"

namespace ringpager {

class FileDesc {
public:
    FileDesc() = default;
    // Takes ownership of `fd` (which may be -1).
    explicit FileDesc(int fd) : fd_(fd) {}
    FileDesc(const FileDesc&) = delete;
    FileDesc& operator=(const FileDesc&) = delete;
    FileDesc(FileDesc&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    FileDesc& operator=(FileDesc&& other) noexcept {
        if (this != &other) {
            reset();
            fd_ = std::exchange(other.fd_, -1);
        }
        return *this;
    }
    ~FileDesc() { reset(); }

    static Result<FileDesc> open(const char* path, int flags, mode_t mode = 0) {
        int fd = ::open(path, flags | O_CLOEXEC, mode);
        if (fd < 0) return errno_error("open");
        return FileDesc(fd);
    }

    int get() const { return fd_; }
    bool valid() const { return fd_ >= 0; }
    int release() { return std::exchange(fd_, -1); }
    void reset() {
        // close() errors are not actionable for the fds we own (no buffered writes on them).
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }

private:
    int fd_ = -1;
};

}  // namespace ringpager
