// Residency: how much of each guest's memory is installed, seen from the
// guest side with mincore(), so every handler is measured the same way.
#pragma once

#include <cstdint>
#include <vector>

#include "ringpager/region.hpp"

namespace ringpager::bench {

// Follows one guest's memory from low to high addresses. Nothing in a
// benchmark run ever evicts an installed page (no swap use, no REMOVE), so
// the resident prefix only grows and each sample only has to look past the
// last one's frontier: a sample costs O(pages installed since the last one)
// plus one small mincore() call, however large the guest is.
class ResidencyCursor {
public:
    explicit ResidencyCursor(const RegionList& regions);

    // Advances over resident pages; returns true once every page is resident.
    bool advance();
    bool complete() const { return region_ == regions_.size(); }
    // Pages in the resident prefix (a lower bound of the resident pages).
    uint64_t prefix_pages() const { return prefix_pages_; }
    uint64_t total_pages() const { return total_pages_; }

private:
    RegionList regions_;
    size_t region_ = 0;          // region holding the frontier
    uint64_t offset_bytes_ = 0;  // frontier inside that region
    uint64_t prefix_pages_ = 0;
    uint64_t total_pages_ = 0;
    std::vector<unsigned char> vec_;
};

// Exact count of resident pages in every region (a full mincore() scan).
uint64_t count_resident_pages(const RegionList& regions);

}  // namespace ringpager::bench
