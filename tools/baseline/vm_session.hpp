// One VM served by the baseline: a poll() loop over its uffd, its
// connection and the server's stop event.
#pragma once

#include <linux/userfaultfd.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <vector>

#include "counters.hpp"
#include "ringpager/file_desc.hpp"
#include "ringpager/region.hpp"

namespace ringpager::baseline {

class VmSession {
public:
    VmSession(RegionList regions, FileDesc uffd, int conn, int stop_fd, const std::byte* file_bytes,
              bool copy_all_on_first_fault, bool ignore_remove, Counters& counters);

    // Serves until the VM hangs up, the uffd reports an error, the VM's
    // memory is gone (ESRCH/ENOENT) or the server stops.
    void run();

private:
    enum class Install { done, retry, gone };

    bool handle_message(const uffd_msg& msg);
    bool handle_fault(uint64_t addr);
    void handle_remove(uint64_t start, uint64_t end);
    // Reads every pending message: REMOVEs are applied, faults queued.
    bool drain_events();
    bool drain_connection();
    bool serve_page(size_t region_index, uint64_t page_addr);
    bool copy_everything();
    // One UFFDIO_COPY/ZEROPAGE of [page_addr, page_addr + len); `advanced` gets the bytes it settled.
    Install install(size_t region_index, uint64_t page_addr, uint64_t length_bytes, bool zeros, uint64_t& advanced);
    bool is_removed(size_t region_index, uint64_t page_addr) const;
    int region_of(uint64_t addr) const;

    RegionList regions_;
    std::vector<std::vector<bool>> removed_;  // per region, per page: removed (reads zeros)
    FileDesc uffd_;
    int conn_;
    int stop_fd_;
    const std::byte* file_bytes_;
    bool copy_all_;
    bool copied_all_ = false;
    bool ignore_remove_;  // Options::ignore_remove: count REMOVEs, change nothing
    Counters& counters_;
    std::deque<uint64_t> pending_faults_;  // faults read while draining events for an EAGAIN
    std::vector<std::byte> zero_huge_page_;  // copy source for zeros on hugetlb (no zeropage there)
};

}  // namespace ringpager::baseline
