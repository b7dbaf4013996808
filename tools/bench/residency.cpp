// mincore()-based residency of guest memory.
#include "residency.hpp"

#include <sys/mman.h>

#include <algorithm>

namespace ringpager::bench {
namespace {

// One mincore() call looks at up to this many bytes (512 pages of 4 KiB).
constexpr uint64_t kWindowBytes = 2 << 20;

}  // namespace

ResidencyCursor::ResidencyCursor(const RegionList& regions) : regions_(regions) {
    for (const Region& r : regions_) total_pages_ += r.page_count();
    vec_.resize(kWindowBytes / 4096);
}

bool ResidencyCursor::advance() {
    while (region_ < regions_.size()) {
        const Region& r = regions_[region_];
        const uint64_t page = r.page_size_bytes;
        const uint64_t len = std::min(kWindowBytes, r.size_bytes - offset_bytes_);
        const uint64_t pages = len / page;
        void* frontier = reinterpret_cast<void*>(r.base_host_virt_addr + offset_bytes_);
        // SAFETY: [base + offset, base + offset + len) lies inside a region
        // the guest keeps mapped for as long as this cursor is used.
        // Most samples find the frontier page still missing: a one-page call
        // answers that for a fraction of a window's cost.
        if (::mincore(frontier, 4096, vec_.data()) != 0 || (vec_[0] & 1) == 0) return false;
        if (::mincore(frontier, len, vec_.data()) != 0) return false;
        // mincore reports one entry per 4 KiB base page, also on hugetlb.
        const uint64_t entries_per_page = page / 4096;
        uint64_t resident = 0;
        while (resident < pages && (vec_[resident * entries_per_page] & 1) != 0) ++resident;
        offset_bytes_ += resident * page;
        prefix_pages_ += resident;
        if (resident < pages) return false;
        if (offset_bytes_ == r.size_bytes) {
            ++region_;
            offset_bytes_ = 0;
        }
    }
    return true;
}

uint64_t count_resident_pages(const RegionList& regions) {
    std::vector<unsigned char> vec(kWindowBytes / 4096);
    uint64_t resident = 0;
    for (const Region& r : regions) {
        const uint64_t entries_per_page = r.page_size_bytes / 4096;
        for (uint64_t offset = 0; offset < r.size_bytes; offset += kWindowBytes) {
            const uint64_t len = std::min(kWindowBytes, r.size_bytes - offset);
            // SAFETY: inside a mapped guest region, as above.
            if (::mincore(reinterpret_cast<void*>(r.base_host_virt_addr + offset), len, vec.data()) != 0) continue;
            for (uint64_t p = 0; p < len / r.page_size_bytes; ++p) resident += vec[p * entries_per_page] & 1;
        }
    }
    return resident;
}

}  // namespace ringpager::bench
