// The baseline's per-VM loop: one message, one page, one ioctl at a time.
#include "vm_session.hpp"

#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "common/unix_socket.hpp"

namespace ringpager::baseline {
namespace {

constexpr uint64_t kSmallPage = 4096;
constexpr uint64_t kCopyAllChunkBytes = 16 << 20;

void log_line(const char* what, int err) {
    std::fprintf(stderr, "rp-baseline: %s: %s\n", what, std::strerror(err));
}

}  // namespace

VmSession::VmSession(RegionList regions, FileDesc uffd, int conn, int stop_fd, const std::byte* file_bytes,
                     bool copy_all_on_first_fault, bool ignore_remove, Counters& counters)
    : regions_(std::move(regions)),
      uffd_(std::move(uffd)),
      conn_(conn),
      stop_fd_(stop_fd),
      file_bytes_(file_bytes),
      copy_all_(copy_all_on_first_fault),
      ignore_remove_(ignore_remove),
      counters_(counters) {
    for (const Region& r : regions_) {
        removed_.emplace_back(r.page_count(), false);
        if (r.page_size_bytes != kSmallPage && zero_huge_page_.size() < r.page_size_bytes) {
            zero_huge_page_.assign(r.page_size_bytes, std::byte{0});
        }
    }
}

void VmSession::run() {
    for (;;) {
        while (!pending_faults_.empty()) {
            const uint64_t addr = pending_faults_.front();
            pending_faults_.pop_front();
            if (!handle_fault(addr)) return;
        }
        pollfd fds[3] = {{uffd_.get(), POLLIN, 0}, {conn_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
        int ready = ::poll(fds, 3, -1);
        if (ready < 0 && errno == EINTR) continue;
        if (ready < 0) return log_line("poll", errno);
        if (fds[2].revents != 0) return;
        if (fds[1].revents != 0 && !drain_connection()) return;
        if (fds[0].revents & (POLLERR | POLLHUP | POLLNVAL)) return;
        if (fds[0].revents & POLLIN) {
            uffd_msg msg;
            ssize_t n = ::read(uffd_.get(), &msg, sizeof msg);
            if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (n != static_cast<ssize_t>(sizeof msg)) return log_line("read(uffd)", n < 0 ? errno : EIO);
            if (!handle_message(msg)) return;
        }
    }
}

bool VmSession::handle_message(const uffd_msg& msg) {
    switch (msg.event) {
        case UFFD_EVENT_PAGEFAULT:
            return handle_fault(msg.arg.pagefault.address);
        case UFFD_EVENT_REMOVE:
            handle_remove(msg.arg.remove.start, msg.arg.remove.end);
            return true;
        default:
            // UNMAP/REMAP/FORK were not requested by the VM; nothing to do.
            return true;
    }
}

bool VmSession::drain_events() {
    for (bool read_any = false;; read_any = true) {
        uffd_msg msg;
        ssize_t n = ::read(uffd_.get(), &msg, sizeof msg);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) {
            // Nothing new: the REMOVE we already read is still being applied
            // by the thread that called madvise. Let it run before we retry.
            if (!read_any) ::sched_yield();
            return true;
        }
        if (n != static_cast<ssize_t>(sizeof msg)) {
            log_line("read(uffd)", n < 0 ? errno : EIO);
            return false;
        }
        if (msg.event == UFFD_EVENT_PAGEFAULT) {
            pending_faults_.push_back(msg.arg.pagefault.address);
        } else if (msg.event == UFFD_EVENT_REMOVE) {
            handle_remove(msg.arg.remove.start, msg.arg.remove.end);
        }
    }
}

// Firecracker >= 1.12 keeps the connection open until it exits, so a hangup
// means the VM is gone. Later messages (and any fds) are read and dropped.
bool VmSession::drain_connection() {
    char data[4096];
    std::vector<FileDesc> unexpected;  // closed right here: the baseline has no use for extra fds
    const Received r = receive_with_fds(conn_, data, sizeof data, unexpected);
    if (r.bytes < 0 && (r.error == EAGAIN || r.error == EINTR)) return true;
    return r.bytes > 0;
}

int VmSession::region_of(uint64_t addr) const {
    for (size_t i = 0; i < regions_.size(); ++i) {
        if (regions_[i].contains(addr)) return static_cast<int>(i);
    }
    return -1;
}

bool VmSession::is_removed(size_t region_index, uint64_t page_addr) const {
    const Region& r = regions_[region_index];
    return removed_[region_index][(page_addr - r.base_host_virt_addr) / r.page_size_bytes];
}

void VmSession::handle_remove(uint64_t start, uint64_t end) {
    counters_.remove_events.fetch_add(1, std::memory_order_relaxed);
    if (ignore_remove_) return;  // the deliberate bug: the pages keep their "served" state
    for (size_t i = 0; i < regions_.size(); ++i) {
        const Region& r = regions_[i];
        const uint64_t lo = std::max(start, r.base_host_virt_addr);
        const uint64_t hi = std::min(end, r.end_addr());
        if (lo >= hi) continue;
        // Every page the range touches now reads zeros until it is served again.
        const uint64_t first = (lo - r.base_host_virt_addr) / r.page_size_bytes;
        const uint64_t last = (hi - r.base_host_virt_addr + r.page_size_bytes - 1) / r.page_size_bytes;
        for (uint64_t p = first; p < last; ++p) removed_[i][p] = true;
    }
}

bool VmSession::handle_fault(uint64_t addr) {
    counters_.faults.fetch_add(1, std::memory_order_relaxed);
    const int r = region_of(addr);
    if (r < 0) {
        std::fprintf(stderr, "rp-baseline: fault at 0x%llx outside every region; ignored\n",
                     static_cast<unsigned long long>(addr));
        return true;
    }
    if (copy_all_ && !copied_all_) {
        copied_all_ = true;
        return copy_everything();
    }
    const uint64_t page = addr & ~(regions_[static_cast<size_t>(r)].page_size_bytes - 1);
    return serve_page(static_cast<size_t>(r), page);
}

bool VmSession::serve_page(size_t region_index, uint64_t page_addr) {
    const uint64_t page_size = regions_[region_index].page_size_bytes;
    for (;;) {
        // Re-checked on every attempt: a REMOVE read while draining for an
        // EAGAIN turns a pending copy into zeros.
        uint64_t advanced = 0;
        const bool zeros = is_removed(region_index, page_addr);
        switch (install(region_index, page_addr, page_size, zeros, advanced)) {
            case Install::done: return true;
            case Install::gone: return false;
            case Install::retry:
                if (!drain_events()) return false;
                break;
        }
    }
}

bool VmSession::copy_everything() {
    for (size_t i = 0; i < regions_.size(); ++i) {
        const Region& r = regions_[i];
        uint64_t page = r.base_host_virt_addr;
        while (page < r.end_addr()) {
            if (is_removed(i, page)) {
                page += r.page_size_bytes;
                continue;
            }
            uint64_t run_end = page;
            while (run_end < r.end_addr() && run_end - page < kCopyAllChunkBytes && !is_removed(i, run_end)) {
                run_end += r.page_size_bytes;
            }
            uint64_t advanced = 0;
            Install result = install(i, page, run_end - page, false, advanced);
            if (result == Install::gone) return false;
            if (result == Install::retry && !drain_events()) return false;
            page += advanced;
        }
    }
    return true;
}

VmSession::Install VmSession::install(size_t region_index, uint64_t page_addr, uint64_t length_bytes, bool zeros,
                                      uint64_t& advanced) {
    const Region& r = regions_[region_index];
    int err = 0;
    int64_t settled = 0;
    if (zeros && r.page_size_bytes == kSmallPage) {
        uffdio_zeropage zp{};
        zp.range.start = page_addr;
        zp.range.len = length_bytes;
        if (::ioctl(uffd_.get(), UFFDIO_ZEROPAGE, &zp) != 0) err = errno;
        settled = zp.zeropage;
    } else {
        // SAFETY: the source lies inside the file mapping: the handshake
        // check guaranteed offset + size <= file size for every region.
        const std::byte* src = zeros ? zero_huge_page_.data()
                                     : file_bytes_ + r.offset_bytes + (page_addr - r.base_host_virt_addr);
        uffdio_copy copy{};
        copy.dst = page_addr;
        copy.src = reinterpret_cast<uint64_t>(src);
        copy.len = length_bytes;
        if (::ioctl(uffd_.get(), UFFDIO_COPY, &copy) != 0) err = errno;
        settled = copy.copy;
    }
    advanced = settled > 0 ? static_cast<uint64_t>(settled) : 0;
    (zeros ? counters_.pages_zeroed : counters_.pages_copied)
        .fetch_add(advanced / r.page_size_bytes, std::memory_order_relaxed);
    if (err == 0) return Install::done;
    if (err == EAGAIN) {
        // Events (a REMOVE) are pending; the kernel refuses copies until we read them.
        counters_.eagain.fetch_add(1, std::memory_order_relaxed);
        return Install::retry;
    }
    if (err == EEXIST) {
        // Already present: wake whoever faulted on it, and move past that page.
        counters_.eexist.fetch_add(1, std::memory_order_relaxed);
        const uint64_t existing = page_addr + advanced;
        uffdio_range wake{existing, r.page_size_bytes};
        if (::ioctl(uffd_.get(), UFFDIO_WAKE, &wake) != 0) log_line("ioctl(UFFDIO_WAKE)", errno);
        advanced += r.page_size_bytes;
        return Install::done;
    }
    // ESRCH/ENOENT: the VM's memory is gone. Anything else is fatal for this VM
    // (its vCPUs will hang, as with any handler that gives up on a VM).
    if (err == ENOMEM && r.page_size_bytes != kSmallPage) {
        log_line("ioctl(UFFDIO_COPY) into hugetlb (pool exhausted? raise vm.nr_hugepages); dropping the VM", err);
    } else if (err != ESRCH && err != ENOENT) {
        log_line(zeros ? "ioctl(UFFDIO_ZEROPAGE/COPY zeros); dropping the VM" : "ioctl(UFFDIO_COPY); dropping the VM", err);
    }
    return Install::gone;
}

}  // namespace ringpager::baseline
