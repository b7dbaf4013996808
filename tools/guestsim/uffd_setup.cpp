// userfaultfd creation with Firecracker's flags and features.
#include "guestsim/uffd_setup.hpp"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace ringpager::sim {
namespace {

constexpr int kUffdFlags = O_CLOEXEC | O_NONBLOCK;

Result<FileDesc> open_via_device() {
    auto device = FileDesc::open("/dev/userfaultfd", O_RDWR);
    if (!device) {
        return Error{device.error().code,
                     "userfaultfd not permitted: run as root, set vm.unprivileged_userfaultfd=1, "
                     "or grant access to /dev/userfaultfd"};
    }
    int fd = ::ioctl(device->get(), USERFAULTFD_IOC_NEW, kUffdFlags);
    if (fd < 0) return errno_error("ioctl(USERFAULTFD_IOC_NEW)");
    return FileDesc(fd);
}

}  // namespace

Result<FileDesc> create_firecracker_uffd(bool force_dev_userfaultfd) {
    FileDesc uffd;
    if (!force_dev_userfaultfd) {
        long fd = ::syscall(SYS_userfaultfd, kUffdFlags);
        if (fd >= 0) {
            uffd = FileDesc(static_cast<int>(fd));
        } else if (errno != EPERM && errno != ENOSYS) {
            return errno_error("userfaultfd");
        }
    }
    if (!uffd.valid()) {
        auto opened = open_via_device();
        if (!opened) return opened.error();
        uffd = std::move(*opened);
    }
    uffdio_api api{};
    api.api = UFFD_API;
    api.features = UFFD_FEATURE_EVENT_REMOVE;
    if (::ioctl(uffd.get(), UFFDIO_API, &api) != 0) return errno_error("ioctl(UFFDIO_API)");
    if ((api.features & UFFD_FEATURE_EVENT_REMOVE) == 0) {
        return Error{EOPNOTSUPP, "ioctl(UFFDIO_API): kernel lacks UFFD_FEATURE_EVENT_REMOVE"};
    }
    return uffd;
}

Result<void> register_missing(int uffd, uint64_t addr, uint64_t length_bytes) {
    uffdio_register reg{};
    reg.range.start = addr;
    reg.range.len = length_bytes;
    reg.mode = UFFDIO_REGISTER_MODE_MISSING;
    if (::ioctl(uffd, UFFDIO_REGISTER, &reg) != 0) return errno_error("ioctl(UFFDIO_REGISTER)");
    if ((reg.ioctls & (uint64_t{1} << _UFFDIO_COPY)) == 0) {
        return Error{EOPNOTSUPP, "ioctl(UFFDIO_REGISTER): UFFDIO_COPY not offered for the region"};
    }
    return {};
}

}  // namespace ringpager::sim
