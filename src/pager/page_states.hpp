// PageStates: 2 bits per guest page (DESIGN.md "Page state"), touched only by
// the VM's owning reactor thread.
//
//   missing ──fault/prefetch──▶ in_flight ──copy──▶ present
//      │                           │                  │
//      └──────── REMOVE ───────────┴──── REMOVE ──────┴──▶ removed
//
// `removed` is sticky: a removed page is only ever filled with zeros (an
// EEXIST on a repeated zero fill is harmless), so a copy decided before the
// REMOVE can never install snapshot bytes after it, and a zero fill that the
// kernel's zap (which runs after we read the REMOVE) throws away is simply
// repeated on the next fault.
#pragma once

#include <cassert>
#include <cstdint>
#include <vector>

namespace ringpager {

enum class PageState : uint8_t { missing = 0, in_flight = 1, present = 2, removed = 3 };

class PageStates {
public:
    explicit PageStates(uint64_t pages = 0) : words_((pages + 31) / 32, 0), pages_(pages), missing_(pages) {}

    // Heap bytes the states of `pages` pages take (what the memory bound counts).
    static constexpr uint64_t bytes_for(uint64_t pages) { return (pages + 31) / 32 * sizeof(uint64_t); }

    uint64_t size() const { return pages_; }
    uint64_t missing_count() const { return missing_; }
    // Pages in `state`, counted by a scan (for control queries, not the fault path).
    uint64_t count(PageState state) const {
        uint64_t n = 0;
        for (uint64_t p = 0; p < pages_; p++) n += get(p) == state;
        return n;
    }
    uint64_t in_flight_count() const { return in_flight_; }

    PageState get(uint64_t page) const {
        assert(page < pages_);
        return static_cast<PageState>((words_[page / 32] >> ((page % 32) * 2)) & 3u);
    }

    void set(uint64_t page, PageState state) {
        assert(page < pages_);
        uint64_t& word = words_[page / 32];
        const unsigned shift = (page % 32) * 2;
        const auto old = static_cast<PageState>((word >> shift) & 3u);
        missing_ += (state == PageState::missing) - (old == PageState::missing);
        in_flight_ += (state == PageState::in_flight) - (old == PageState::in_flight);
        word = (word & ~(uint64_t{3} << shift)) | (uint64_t{static_cast<uint8_t>(state)} << shift);
    }

    // First page >= `from` that is missing, or size() when there is none.
    // Skips whole words that hold no missing page (a missing page is 00).
    uint64_t next_missing(uint64_t from) const {
        for (uint64_t page = from; page < pages_;) {
            if (page % 32 == 0) {
                const uint64_t word = words_[page / 32];
                // Bit pair i is 00 iff both bits are clear: look for any such pair.
                const uint64_t low = word & 0x5555555555555555ull;
                const uint64_t high = (word >> 1) & 0x5555555555555555ull;
                if ((low | high) == 0x5555555555555555ull) {
                    page += 32;
                    continue;
                }
            }
            if (get(page) == PageState::missing) return page;
            page++;
        }
        return pages_;
    }

private:
    std::vector<uint64_t> words_;
    uint64_t pages_;
    uint64_t missing_;
    uint64_t in_flight_ = 0;
};

}  // namespace ringpager
