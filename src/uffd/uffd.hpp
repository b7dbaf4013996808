// The userfaultfd kernel contract: an owning handle, the three ioctls a pager
// needs (COPY, ZEROPAGE, WAKE) with their partial-result rules, and the
// startup check that explains why userfaultfd is unavailable.
#pragma once

#include <linux/userfaultfd.h>

#include <cstdint>
#include <string>

#include "ringpager/file_desc.hpp"
#include "ringpager/result.hpp"

namespace ringpager {

// What an install ioctl achieved. The kernel may stop part way: `bytes_done`
// counts the bytes installed (or already present, see `existing_pages`) from
// the start of the range; `error` is 0 when the whole range was handled.
struct InstallOutcome {
    uint64_t bytes_done = 0;
    uint64_t existing_pages = 0;  // pages skipped because EEXIST said they were installed
    int error = 0;                // EAGAIN: events pending, retry later; ESRCH/ENOENT/EFAULT: VM gone
};

class Uffd {
public:
    Uffd() = default;
    // Creates a userfaultfd (syscall, then /dev/userfaultfd) and negotiates `features`.
    static Result<Uffd> create(uint64_t features, bool nonblocking = true);
    // Takes ownership of a received descriptor after checking it is a userfaultfd.
    static Result<Uffd> adopt(FileDesc fd);
    // True when `fd` refers to a userfaultfd (anon inode "[userfaultfd]").
    static bool is_userfaultfd(int fd);

    int fd() const { return fd_.get(); }
    bool valid() const { return fd_.valid(); }

    Result<void> register_missing(uint64_t addr, uint64_t len) const;

    // UFFDIO_COPY of [src, src+len) to [dst, dst+len), retried across partial
    // copies; pages that already exist (EEXIST) are skipped and woken.
    InstallOutcome copy(uint64_t dst, const void* src, uint64_t len, uint64_t page_size) const;
    // UFFDIO_ZEROPAGE over [dst, dst+len) with the same retry rules (not for hugetlb).
    InstallOutcome zeropage(uint64_t dst, uint64_t len, uint64_t page_size) const;
    Result<void> wake(uint64_t addr, uint64_t len) const;
    // UFFDIO_POISON over [dst, dst+len) (Linux 6.6+): a later access gets a
    // memory error (SIGBUS, or a machine check inside a KVM guest) instead of
    // a fault that nobody can serve. EINVAL or ENOTTY: this kernel cannot.
    InstallOutcome poison(uint64_t dst, uint64_t len, uint64_t page_size) const;

private:
    explicit Uffd(FileDesc fd) : fd_(std::move(fd)) {}
    FileDesc fd_;
};

// Checks at startup that this process may use userfaultfd; on failure returns
// a message that says what to change.
std::string userfaultfd_unavailable_reason();

const char* uffd_event_name(uint8_t event);

}  // namespace ringpager
