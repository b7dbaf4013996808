// The install rules of one VM (DESIGN.md "The fault path", steps 4 and 5):
// what each page of a completed read gets, decided from its state *now*, and
// the kernel's answers to the install ioctls, in one place:
//   EEXIST   someone installed the page meanwhile: it is woken, not an error
//            (handled inside Uffd's install loop);
//   EAGAIN   events are pending: stop, keep the job, retry the whole of it
//            after the events are read (installed pages are skipped then);
//   ESRCH    the VM's address space is gone: release it, not a failure;
//   ENOENT   the range is no longer registered (unmapped): drop that range;
//   other    the VM fails, with the ioctl and address in one line.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "pager/address_map.hpp"
#include "pager/page_states.hpp"
#include "uffd/uffd.hpp"

namespace ringpager {

enum class Action : uint8_t { skip, copy, zero, poison };

// Zero runs in read bytes shorter than this are copied with their
// neighbours (one ioctl beats three), unless they are the whole job.
inline constexpr uint64_t kMinZeroRunPages = 16;

// Decides each page's action: removed pages get zeros (never the bytes
// read), in-flight pages their bytes (or poison where `poison[i]` is set, or
// zeros when there are no bytes), present pages nothing. Read bytes that are
// all zero go by UFFDIO_ZEROPAGE in runs of kMinZeroRunPages or the whole job
// (4 KiB pages only; hugetlb has no zero page).
void decide_actions(const PageStates& states, uint64_t first, uint64_t pages, const uint8_t* data,
                    uint64_t page_size, const std::vector<uint8_t>& poison, std::vector<Action>& actions);

// What one install_pages call did, for the caller's counters and decision.
struct InstallResult {
    enum class End : uint8_t { done, retry_later, gone, failed };
    End end = End::done;
    std::string failure;            // End::failed: one line naming the ioctl and address
    uint64_t pages_copied = 0;      // in-flight pages that received their bytes
    uint64_t pages_zeroed = 0;      // pages given zeros (ZEROPAGE or copied zeros)
    uint64_t pages_poisoned = 0;
    uint64_t copy_ioctls = 0;
    uint64_t ranges_unmapped = 0;   // ranges dropped after ENOENT (see first_unmapped)
    uint64_t first_unmapped_start = 0, first_unmapped_end = 0;
};

// Where a VM's pages are installed: its uffd, address map and page states.
struct InstallTarget {
    const Uffd& uffd;
    AddressMap& map;
    PageStates& states;
    const void* zero_buffer;  // 2 MiB of zeros, for hugetlb zero fills
};

// Installs [first, first+pages) in maximal runs of one action within one
// address extent. `data` (may be null) holds the pages' bytes, `data_bytes`
// of them: a copy never reads past them. Pages installed become present;
// a range that met ENOENT is retired from the map.
InstallResult install_pages(const InstallTarget& target, uint64_t first, uint64_t pages, const uint8_t* data,
                            uint64_t data_bytes, const std::vector<uint8_t>& poison);

// Retires [start, end) from the map: its pages can neither fault nor be
// installed any more, so none of them is missing or in flight.
void retire_range(AddressMap& map, PageStates& states, uint64_t start, uint64_t end);

}  // namespace ringpager
