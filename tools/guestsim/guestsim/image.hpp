// Synthetic memory files: full snapshots, Firecracker-style sparse diff files,
// and flattening a base plus diffs into one full file.
//
// Every non-zero page that is not a duplicate is "stamped": the first 8 bytes
// of each of its 4 KiB blocks hold that block's own file offset (little endian),
// and the rest is seeded pseudo-random. A page served at the wrong offset
// therefore never matches. Duplicate pages are byte-exact copies of an earlier
// stamped page, so dedup has something to find.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "ringpager/result.hpp"

namespace ringpager::sim {

struct GenerateOptions {
    double zero_fraction = 0.0;       // ~share of pages that are all zero
    double duplicate_fraction = 0.0;  // ~share of pages that copy an earlier stamped page
    uint64_t seed = 1;
    uint64_t page_size_bytes = 4096;  // granularity of the zero/duplicate decisions
    bool sparse_zeros = false;        // zero pages left as holes instead of written zeros
    // Zero pages come in aligned runs of this many pages. 1: each page is
    // drawn on its own (zeros scattered at random, the worst case for a
    // pager); real guest memory keeps unused memory contiguous, so larger
    // runs model it better.
    uint64_t zero_run_pages = 1;
};

enum class PageKind : uint8_t { zero, duplicate, distinct };

struct ImageStats {
    uint64_t pages = 0;
    uint64_t zero_pages = 0;
    uint64_t duplicate_pages = 0;
    uint64_t distinct_pages = 0;
};

// Writes `size_bytes` (a multiple of page_size_bytes) of synthetic memory to
// `path`, replacing it. Deterministic: the same options give the same bytes.
Result<ImageStats> generate_image(const std::string& path, uint64_t size_bytes, const GenerateOptions& options);

// What generate_image puts at page `page_index`, without writing anything.
// For a duplicate, `source_page_index` receives the page it copies.
PageKind classify_page(const GenerateOptions& options, uint64_t page_index, uint64_t* source_page_index = nullptr);

struct DiffOptions {
    double changed_fraction = 0.05;           // ~share of pages rewritten in the diff
    double zero_fraction_of_changed = 0.1;    // changed pages that become zeros (written, not holes)
    uint64_t seed = 1;
    uint64_t page_size_bytes = 4096;
};

struct DiffResult {
    std::vector<uint64_t> changed_offsets_bytes;  // sorted; every page written to the diff
    uint64_t zeroed_pages = 0;                     // of those, how many were written as zeros
};

// Writes a Firecracker-style diff memory file the size of `base_path`: a
// sparse file in which only changed pages are written and unchanged pages are
// holes. Needs a filesystem whose block size is at most the page size, so a
// hole is never reported inside a written page.
Result<DiffResult> generate_diff(const std::string& base_path, const std::string& out_path, const DiffOptions& options);

// Writes `out_path` = `base_path` with every written extent of each diff (in
// order, found with SEEK_DATA/SEEK_HOLE) laid over it. Holes of the base stay
// holes in the output. Every diff must be the size of the base.
Result<void> flatten(const std::string& base_path, const std::vector<std::string>& diff_paths, const std::string& out_path);

// Fills `page` (a multiple of 4 KiB) with the stamped pseudo-random content
// of the page at `file_offset_bytes` for `content_seed`.
void fill_stamped_page(std::span<std::byte> page, uint64_t file_offset_bytes, uint64_t content_seed);

// The stamp of the 4 KiB block starting at `block`: the offset it was written for.
uint64_t read_stamp(const std::byte* block);

}  // namespace ringpager::sim
