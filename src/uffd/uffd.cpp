#include "uffd/uffd.hpp"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>

#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif

// UFFDIO_POISON arrived in Linux 6.6; the build machine's headers are older.
// The layout is the kernel's uapi (include/uapi/linux/userfaultfd.h).
#ifndef UFFDIO_POISON
struct uffdio_poison {
    struct uffdio_range range;
    __u64 mode;
    __s64 updated;
};
#define _UFFDIO_POISON (0x08)
#define UFFDIO_POISON _IOWR(UFFDIO, _UFFDIO_POISON, struct uffdio_poison)
#endif

namespace ringpager {

Result<Uffd> Uffd::create(uint64_t features, bool nonblocking) {
    const int flags = O_CLOEXEC | (nonblocking ? O_NONBLOCK : 0);
    int raw = static_cast<int>(syscall(SYS_userfaultfd, flags));
    if (raw < 0) {
        // Kernels with vm.unprivileged_userfaultfd=0 still allow /dev/userfaultfd.
        const int syscall_errno = errno;
        auto dev = FileDesc::open("/dev/userfaultfd", O_RDWR);
        if (!dev) return Error{syscall_errno, "userfaultfd"};
        raw = ioctl(dev->get(), USERFAULTFD_IOC_NEW, flags);
        if (raw < 0) return errno_error("ioctl(USERFAULTFD_IOC_NEW)");
    }
    FileDesc fd(raw);
    uffdio_api api{};
    api.api = UFFD_API;
    api.features = features;
    if (ioctl(fd.get(), UFFDIO_API, &api) < 0) return errno_error("ioctl(UFFDIO_API)");
    return Uffd(std::move(fd));
}

bool Uffd::is_userfaultfd(int fd) {
    char link_path[64];
    snprintf(link_path, sizeof link_path, "/proc/self/fd/%d", fd);
    char target[128] = {};
    const ssize_t n = readlink(link_path, target, sizeof target - 1);
    return n > 0 && std::strcmp(target, "anon_inode:[userfaultfd]") == 0;
}

Result<Uffd> Uffd::adopt(FileDesc fd) {
    if (!is_userfaultfd(fd.get())) return Error{EBADF, "not a userfaultfd"};
    return Uffd(std::move(fd));
}

Result<void> Uffd::register_missing(uint64_t addr, uint64_t len) const {
    uffdio_register reg{};
    reg.range.start = addr;
    reg.range.len = len;
    reg.mode = UFFDIO_REGISTER_MODE_MISSING;
    if (ioctl(fd_.get(), UFFDIO_REGISTER, &reg) < 0) return errno_error("ioctl(UFFDIO_REGISTER)");
    return {};
}

namespace {

// The kernel reports a partial install by storing the bytes done in the
// result field and failing with EAGAIN; a failure before the first byte
// stores -errno. Both ioctls share that rule, so one loop serves both.
template <typename Issue>
InstallOutcome install_loop(int fd, uint64_t dst, uint64_t len, uint64_t page_size, Issue issue) {
    InstallOutcome out;
    while (out.bytes_done < len) {
        int64_t result = 0;
        const int rc = issue(out.bytes_done, len - out.bytes_done, result);
        if (rc == 0) {
            out.bytes_done = len;
            break;
        }
        const int err = errno;
        if (result > 0) {
            out.bytes_done += static_cast<uint64_t>(result);
            continue;
        }
        const int code = result < 0 ? static_cast<int>(-result) : err;
        if (code == EEXIST) {
            // Someone else installed this page; its waiters still need a wake.
            uffdio_range range{dst + out.bytes_done, page_size};
            (void)ioctl(fd, UFFDIO_WAKE, &range);
            out.bytes_done += page_size;
            out.existing_pages++;
            continue;
        }
        if (code == EINTR) continue;
        out.error = code;
        break;
    }
    return out;
}

}  // namespace

InstallOutcome Uffd::copy(uint64_t dst, const void* src, uint64_t len, uint64_t page_size) const {
    const uint64_t src_addr = reinterpret_cast<uint64_t>(src);
    return install_loop(fd_.get(), dst, len, page_size,
                        [&](uint64_t done, uint64_t left, int64_t& result) {
                            uffdio_copy req{};
                            req.dst = dst + done;
                            req.src = src_addr + done;
                            req.len = left;
                            req.mode = 0;
                            const int rc = ioctl(fd_.get(), UFFDIO_COPY, &req);
                            result = req.copy;
                            return rc;
                        });
}

InstallOutcome Uffd::zeropage(uint64_t dst, uint64_t len, uint64_t page_size) const {
    return install_loop(fd_.get(), dst, len, page_size,
                        [&](uint64_t done, uint64_t left, int64_t& result) {
                            uffdio_zeropage req{};
                            req.range.start = dst + done;
                            req.range.len = left;
                            req.mode = 0;
                            const int rc = ioctl(fd_.get(), UFFDIO_ZEROPAGE, &req);
                            result = req.zeropage;
                            return rc;
                        });
}

InstallOutcome Uffd::poison(uint64_t dst, uint64_t len, uint64_t page_size) const {
    return install_loop(fd_.get(), dst, len, page_size,
                        [&](uint64_t done, uint64_t left, int64_t& result) {
                            uffdio_poison req{};
                            req.range.start = dst + done;
                            req.range.len = left;
                            req.mode = 0;
                            const int rc = ioctl(fd_.get(), UFFDIO_POISON, &req);
                            result = req.updated;
                            return rc;
                        });
}

Result<void> Uffd::wake(uint64_t addr, uint64_t len) const {
    uffdio_range range{addr, len};
    if (ioctl(fd_.get(), UFFDIO_WAKE, &range) < 0) return errno_error("ioctl(UFFDIO_WAKE)");
    return {};
}

std::string userfaultfd_unavailable_reason() {
    auto probe = Uffd::create(0);
    if (probe) return {};
    const int err = probe.error().code;
    std::string sysctl = "?";
    std::ifstream in("/proc/sys/vm/unprivileged_userfaultfd");
    if (in) std::getline(in, sysctl);
    if (err == ENOSYS)
        return "userfaultfd is not available: this kernel was built without CONFIG_USERFAULTFD";
    return std::string("userfaultfd is not permitted (") + std::strerror(err) +
           "): run as root, give this user read/write access to /dev/userfaultfd, or set "
           "vm.unprivileged_userfaultfd=1 (now " + sysctl + ")";
}

const char* uffd_event_name(uint8_t event) {
    switch (event) {
        case UFFD_EVENT_PAGEFAULT: return "PAGEFAULT";
        case UFFD_EVENT_FORK: return "FORK";
        case UFFD_EVENT_REMAP: return "REMAP";
        case UFFD_EVENT_REMOVE: return "REMOVE";
        case UFFD_EVENT_UNMAP: return "UNMAP";
        default: return "UNKNOWN";
    }
}

}  // namespace ringpager
