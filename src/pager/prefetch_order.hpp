// PrefetchOrder: which missing pages the prefetcher installs next. The
// default walks regions in ascending order; a recorded working set can be
// plugged in by implementing the same two calls.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "pager/page_states.hpp"
#include "ringpager/engine.hpp"

namespace ringpager {

class PrefetchOrder {
public:
    virtual ~PrefetchOrder() = default;
    // The next missing page to start a run at, or false when nothing is left.
    virtual bool next(const PageStates& states, uint64_t& first_page) = 0;
    // The prefetcher handled [first_page, first_page + pages).
    virtual void consumed(uint64_t first_page, uint64_t pages) = 0;
    // Pages from `first_page` on are missing again (a fetch completed for
    // them): walk over them again.
    virtual void revisit(uint64_t first_page) = 0;
    // At most this many pages from `first_page` (what next() returned) belong
    // in one run: a recorded working set stops at the end of its recorded run
    // instead of reading neighbours the guest did not touch.
    // True while the order walks recorded runs (a working set being replayed).
    virtual bool replaying() const { return false; }
    virtual uint64_t run_limit(uint64_t first_page) const {
        (void)first_page;
        return UINT64_MAX;
    }
};

// Ascending global page order: regions in handshake order, low to high.
std::unique_ptr<PrefetchOrder> make_ascending_order();

// How a recorded order is coalesced into reads, in pages of the VM's size.
struct ReplayShape {
    uint64_t window_pages = 1;  // set pages sorted together (1: strictly recorded order)
    uint64_t gap_pages = 0;     // pages between two recorded runs read (not installed) to join them
    uint64_t span_pages = 1;    // at most this many pages in one span
};

inline constexpr uint64_t kReplayWindowBytes = 4 * 1024 * 1024;
inline constexpr uint64_t kReplayGapBytes = 16 * 1024;
inline constexpr uint64_t kReplaySpanBytes = 2 * 1024 * 1024;

// The shape for pages of `page_size_bytes`: windows of 4 MiB of set pages,
// gaps up to 16 KiB, spans up to a big read buffer (2 MiB). The gap was
// measured (docs/benchmarks.md): from the page cache, 64 KiB gaps read twice
// the bytes of 16 KiB ones and finished no sooner.
ReplayShape replay_shape_for(uint64_t page_size_bytes);

// Where the bytes of a run starting at a page are: (file index, file
// offset), or a key after every file's for a run the source has no bytes for
// (zeros). Replay windows are sorted by it, so their reads go through each
// file in offset order: a packed working-set layer front to back.
using ReplayFileKey = std::function<std::pair<uint64_t, uint64_t>(uint64_t first_page)>;

// A recorded order: runs of global pages, visited window by window in the
// given order (each window sorted by `file_key`, or by page without one, and
// coalesced by `shape`), then the runs of `zeros_after` in order (the
// source's zero extents: installed without a read, so a guest touching
// zero pages outside the set, or left out of a packed set, finds them
// present soon), then everything else ascending.
using PageRange = PageRun;
std::unique_ptr<PrefetchOrder> make_recorded_order(std::vector<PageRange> ranges, ReplayShape shape = {},
                                                   ReplayFileKey file_key = {},
                                                   std::vector<PageRange> zeros_after = {});

}  // namespace ringpager
