// What the builder reads from each input memory file. Firecracker diff files
// are sparse: their data regions (SEEK_DATA/SEEK_HOLE) are the pages that
// changed, holes are pages that did not. A block touched by data is rebuilt
// for that layer; a block a later diff replaces entirely is skipped.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "ringpager/file_desc.hpp"
#include "io/uring_reader.hpp"

namespace ringpager::layered {

struct ByteRange {
    uint64_t begin = 0;
    uint64_t end = 0;   // exclusive
};

struct BuildInput {
    std::string path;
    std::string role;                // "base" or "diff 2": how errors name it
    FileDesc file;
    uint64_t size_bytes = 0;
    dev_t device = 0;
    ino_t inode = 0;
    std::vector<ByteRange> data;     // sorted, disjoint, maximal data regions
};

// Opens `path` read-only (open_regular_file: a FIFO, device or directory is
// refused without blocking) and finds its data regions. Returns "" or one line
// naming the file ("diff 1 /x/d1: open: No such file or directory").
std::string open_input(const std::string& path, const std::string& role, BuildInput& out);

// For every guest block: 1 + the index of the last input whose data covers
// the block entirely, or 0. Only needed when there are diffs.
std::vector<uint16_t> last_full_writers(std::span<const BuildInput> inputs, uint64_t block_size_bytes,
                                        uint64_t block_count);

// True when a later input than `index` replaces block `block` entirely.
inline bool shadowed(const std::vector<uint16_t>& last_full, uint64_t block, uint32_t index) {
    return !last_full.empty() && last_full[block] > index + 1;
}

struct InputPlan {
    std::vector<ReadTask> tasks;     // block aligned, each at most the buffer size
    uint64_t touched_blocks = 0;     // blocks the input's data touches
    uint64_t read_bytes = 0;
};

// The reads for input `index`: every block its data touches that no later
// input replaces entirely, coalesced across gaps shorter than `gap_bytes`.
// Tasks may therefore include blocks that no data region touches or that a
// later input replaces: the builder skips those.
InputPlan plan_reads(const BuildInput& input, uint32_t index, const std::vector<uint16_t>& last_full,
                     uint64_t block_size_bytes, uint64_t buffer_bytes, uint64_t gap_bytes);

}  // namespace ringpager::layered
