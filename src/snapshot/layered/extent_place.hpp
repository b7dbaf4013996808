// Where a guest byte lives in a layered snapshot: the extent holding it, as
// the sources that serve a manifest (compressed frames, an object store)
// look it up before they answer plan() or lookup().
#pragma once

#include <algorithm>
#include <cstdint>

#include "snapshot/layered/format.hpp"

namespace ringpager::layered {

struct ExtentPlace {
    bool zero = true;
    uint32_t layer = 0;
    uint64_t slot = 0;        // of offset's block
    uint64_t slot_end = 0;    // the extent's last slot + 1
    uint64_t length_bytes = 0;
};

// The extent holding `offset`, from `offset` on, clipped to `max` bytes.
// `offset` lies inside the guest (callers check).
inline ExtentPlace place_in(const Manifest& m, uint64_t offset, uint64_t max) {
    const uint64_t bs = m.block_size_bytes;
    const size_t index = m.find_extent(offset / bs);
    const Extent& e = m.extents[index];
    const uint64_t end_block = m.extent_end_block(index);
    ExtentPlace p;
    p.length_bytes = std::min(end_block * bs - offset, max);
    if (is_zero_location(e.location)) return p;
    p.zero = false;
    p.layer = location_layer(e.location);
    p.slot = location_slot(e.location) + (offset / bs - e.first_block);
    p.slot_end = location_slot(e.location) + (end_block - e.first_block);
    return p;
}

}  // namespace ringpager::layered
