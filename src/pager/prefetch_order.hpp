// PrefetchOrder: which missing pages the prefetcher installs next. The
// default walks regions in ascending order; a recorded working set can be
// plugged in by implementing the same two calls.
#pragma once

#include <cstdint>
#include <memory>
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

// A recorded order: runs of global pages, visited in the given order, then
// everything else ascending.
using PageRange = PageRun;
std::unique_ptr<PrefetchOrder> make_recorded_order(std::vector<PageRange> ranges);

}  // namespace ringpager
