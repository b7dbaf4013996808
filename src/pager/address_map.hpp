// AddressMap: which host virtual addresses of the VM process hold which guest
// pages. Built from the handshake regions; UNMAP and REMAP events edit it, so
// a page keeps its identity (and state) when the VM moves it, and a fault
// on an address no longer mapped is recognised rather than mis-served.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <vector>

#include "ringpager/region.hpp"

namespace ringpager {

struct AddressExtent {
    uint64_t addr = 0;         // host virtual address of the first page
    uint64_t len = 0;          // bytes, a multiple of page_size
    uint64_t first_page = 0;   // global page index of the first page
    uint64_t file_offset = 0;  // source offset of the first page
    uint64_t page_size = 0;

    uint64_t end() const { return addr + len; }
    uint64_t pages() const { return len / page_size; }
    uint64_t last_page() const { return first_page + pages(); }  // one past
};

// Where one page is now.
struct PagePlace {
    uint64_t addr;
    uint64_t file_offset;
    uint64_t page_size;
    uint64_t extent_end_page;  // one past the last page of the same extent
};

class AddressMap {
public:
    AddressMap() = default;
    explicit AddressMap(const RegionList& regions) {
        uint64_t page = 0;
        for (const Region& r : regions) {
            extents_.push_back({r.base_host_virt_addr, r.size_bytes, page, r.offset_bytes, r.page_size_bytes});
            page += r.page_count();
        }
        total_pages_ = page;
        sort();
    }

    uint64_t total_pages() const { return total_pages_; }
    const std::vector<AddressExtent>& extents() const { return extents_; }

    const AddressExtent* find_addr(uint64_t addr) const {
        auto it = std::upper_bound(extents_.begin(), extents_.end(), addr,
                                   [](uint64_t a, const AddressExtent& e) { return a < e.addr; });
        if (it == extents_.begin()) return nullptr;
        --it;
        return addr < it->end() ? &*it : nullptr;
    }

    std::optional<PagePlace> place_of(uint64_t page) const {
        for (const AddressExtent& e : extents_) {
            if (page >= e.first_page && page < e.last_page()) {
                const uint64_t i = page - e.first_page;
                return PagePlace{e.addr + i * e.page_size, e.file_offset + i * e.page_size, e.page_size,
                                 e.last_page()};
            }
        }
        return std::nullopt;
    }

    // Removes [start, end) and returns the pieces that were mapped there.
    // Their addresses are remembered as retired (see was_retired).
    std::vector<AddressExtent> unmap(uint64_t start, uint64_t end) {
        std::vector<AddressExtent> kept, removed;
        for (const AddressExtent& e : extents_) {
            const uint64_t lo = std::max(e.addr, start), hi = std::min(e.end(), end);
            if (lo >= hi) {
                kept.push_back(e);
                continue;
            }
            if (e.addr < lo) kept.push_back(slice(e, e.addr, lo));
            removed.push_back(slice(e, lo, hi));
            if (hi < e.end()) kept.push_back(slice(e, hi, e.end()));
        }
        extents_ = std::move(kept);
        for (const AddressExtent& e : removed) retire(e.addr, e.end());
        return removed;
    }

    // True when `addr` was served once and has been unmapped since: a fault
    // there raced with the unmap and is stale, not a fault outside the
    // regions the VM declared.
    bool was_retired(uint64_t addr) const {
        return std::any_of(retired_.begin(), retired_.end(),
                           [&](const AddressRange& r) { return addr >= r.start && addr < r.end; });
    }

    // The VM moved [from, from+len) to `to` (mremap): the pages go with it.
    void remap(uint64_t from, uint64_t to, uint64_t len) {
        std::vector<AddressExtent> moved = unmap(from, from + len);
        unmap(to, to + len);  // whatever was mapped at the destination is gone
        for (AddressExtent& e : moved) {
            e.addr = e.addr - from + to;
            extents_.push_back(e);
        }
        sort();
    }

private:
    struct AddressRange {
        uint64_t start;
        uint64_t end;
    };
    // Bounded: past kMaxRetired ranges the oldest is forgotten (a stale fault
    // there would then fail the VM instead of being ignored).
    static constexpr size_t kMaxRetired = 256;
    void retire(uint64_t start, uint64_t end) {
        for (AddressRange& r : retired_) {
            if (start <= r.end && end >= r.start) {  // touching or overlapping: merge
                r.start = std::min(r.start, start);
                r.end = std::max(r.end, end);
                return;
            }
        }
        if (retired_.size() == kMaxRetired) retired_.erase(retired_.begin());
        retired_.push_back({start, end});
    }

    static AddressExtent slice(const AddressExtent& e, uint64_t lo, uint64_t hi) {
        const uint64_t skip = (lo - e.addr) / e.page_size;
        return {lo, hi - lo, e.first_page + skip, e.file_offset + skip * e.page_size, e.page_size};
    }
    void sort() {
        std::sort(extents_.begin(), extents_.end(),
                  [](const AddressExtent& a, const AddressExtent& b) { return a.addr < b.addr; });
    }

    std::vector<AddressExtent> extents_;
    std::vector<AddressRange> retired_;
    uint64_t total_pages_ = 0;
};

}  // namespace ringpager
