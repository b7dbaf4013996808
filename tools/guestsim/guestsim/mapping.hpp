// Mapping: the single owner of one mmap'ed range.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <utility>

#include "ringpager/result.hpp"

namespace ringpager::sim {

class Mapping {
public:
    Mapping() = default;
    // Takes ownership of [addr, addr + size_bytes), which must be mapped.
    Mapping(void* addr, size_t size_bytes) : addr_(addr), size_bytes_(size_bytes) {}
    Mapping(const Mapping&) = delete;
    Mapping& operator=(const Mapping&) = delete;
    Mapping(Mapping&& other) noexcept
        : addr_(std::exchange(other.addr_, nullptr)), size_bytes_(std::exchange(other.size_bytes_, 0)) {}
    Mapping& operator=(Mapping&& other) noexcept {
        if (this != &other) {
            reset();
            addr_ = std::exchange(other.addr_, nullptr);
            size_bytes_ = std::exchange(other.size_bytes_, 0);
        }
        return *this;
    }
    ~Mapping() { reset(); }

    static Result<Mapping> map(void* hint, size_t size_bytes, int prot, int flags, int fd, off_t offset) {
        void* addr = ::mmap(hint, size_bytes, prot, flags, fd, offset);
        if (addr == MAP_FAILED) return errno_error("mmap");
        return Mapping(addr, size_bytes);
    }

    std::byte* data() const { return static_cast<std::byte*>(addr_); }
    size_t size_bytes() const { return size_bytes_; }
    bool valid() const { return addr_ != nullptr; }
    // Gives up ownership without unmapping (the caller now owns the range).
    void* release() {
        size_bytes_ = 0;
        return std::exchange(addr_, nullptr);
    }
    void reset() {
        // munmap of a range we own only fails on invalid arguments, which the
        // constructor's contract rules out.
        if (addr_ != nullptr) ::munmap(addr_, size_bytes_);
        addr_ = nullptr;
        size_bytes_ = 0;
    }

private:
    void* addr_ = nullptr;
    size_t size_bytes_ = 0;
};

}  // namespace ringpager::sim
