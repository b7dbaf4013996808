// Creating and registering a userfaultfd exactly as Firecracker does.
#pragma once

#include <cstdint>

#include "ringpager/file_desc.hpp"
#include "ringpager/result.hpp"

namespace ringpager::sim {

// syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK) (kernel faults included),
// falling back to /dev/userfaultfd + USERFAULTFD_IOC_NEW when the syscall is
// refused; then UFFDIO_API requiring UFFD_FEATURE_EVENT_REMOVE.
Result<FileDesc> create_firecracker_uffd(bool force_dev_userfaultfd);

// UFFDIO_REGISTER [addr, addr + len) in MISSING mode; fails unless UFFDIO_COPY is offered.
Result<void> register_missing(int uffd, uint64_t addr, uint64_t length_bytes);

}  // namespace ringpager::sim
