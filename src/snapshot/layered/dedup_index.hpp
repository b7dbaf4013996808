// DedupIndex: content key (XXH3-128 of a block) -> location of the first stored
// block with that key. Open addressing with linear probing; 24 bytes a slot,
// grown to keep the load at or below one half. A hit only nominates a block:
// the builder confirms it byte for byte before reusing it.
#pragma once

#include <xxhash.h>

#include <cstdint>
#include <optional>
#include <vector>

namespace ringpager::layered {

class DedupIndex {
public:
    explicit DedupIndex(uint64_t expected_entries = 0) { rebuild(capacity_for(expected_entries)); }

    std::optional<uint64_t> find(const XXH128_hash_t& key) const {
        for (uint64_t i = key.low64 & mask_;; i = (i + 1) & mask_) {
            const Entry& e = entries_[i];
            if (e.location == empty) return std::nullopt;
            if (e.low64 == key.low64 && e.high64 == key.high64) return e.location;
        }
    }

    // Records `key` -> `location`; a key already present keeps its first location.
    void insert(const XXH128_hash_t& key, uint64_t location) {
        if ((size_ + 1) * 2 > entries_.size()) rebuild(entries_.size() * 2);
        if (place(Entry{key.low64, key.high64, location})) ++size_;
    }

    uint64_t size() const { return size_; }

private:
    // location can never be all ones: that would be layer 0xffff, the zero marker.
    static constexpr uint64_t empty = ~uint64_t{0};
    struct Entry {
        uint64_t low64 = 0;
        uint64_t high64 = 0;
        uint64_t location = empty;
    };

    static uint64_t capacity_for(uint64_t entries) {
        uint64_t capacity = 1024;
        while (capacity < entries * 2) capacity *= 2;
        return capacity;
    }

    bool place(const Entry& entry) {
        for (uint64_t i = entry.low64 & mask_;; i = (i + 1) & mask_) {
            Entry& e = entries_[i];
            if (e.location == empty) {
                e = entry;
                return true;
            }
            if (e.low64 == entry.low64 && e.high64 == entry.high64) return false;
        }
    }

    void rebuild(uint64_t capacity) {
        std::vector<Entry> old(capacity);
        old.swap(entries_);
        mask_ = capacity - 1;
        for (const Entry& e : old) {
            if (e.location != empty) place(e);
        }
    }

    std::vector<Entry> entries_;
    uint64_t mask_ = 0;
    uint64_t size_ = 0;
};

}  // namespace ringpager::layered
