// How a ready plan is read (DESIGN.md "Sources"): the page cache fast path
// and the readahead policy for faults. Hundreds of VMs restored from one
// snapshot keep it in the page cache, where a RWF_NOWAIT read completes at
// once and never blocks on disk; anything else goes through the ring.
#pragma once

#include <cstdint>
#include <optional>

#include "ringpager/source.hpp"

namespace ringpager {

// Reads a ready plan's bytes into `into` at once if they are all in the
// page cache. False: not all cached (EAGAIN), short, or an error — the ring
// reads it and reports what really happened.
bool read_cached(const PageSource& source, const ReadPlan& plan, uint8_t* into);

// Page cache readahead for faults that walk forward through a file: a fault
// landing just past the previous one (within one window) asks for the next
// window, asynchronously. Random faults get none: on a cold file that would
// waste disk bandwidth, and on a hot one it is pure overhead.
class ReadaheadWindow {
public:
    struct Range {
        uint32_t file_index;
        uint64_t offset;
        uint64_t length;
    };
    explicit ReadaheadWindow(uint64_t window_bytes) : window_(window_bytes) {}
    // A fault read `file_offset` of file `file_index`: what to read ahead, if
    // anything (never when the caller `can_issue` nothing right now).
    std::optional<Range> after_fault_read(uint32_t file_index, uint64_t file_offset, bool can_issue);

private:
    uint64_t window_;
    uint32_t file_ = UINT32_MAX;
    uint64_t last_offset_ = 0;
    uint64_t end_ = 0;  // readahead already requested up to here
};

}  // namespace ringpager
