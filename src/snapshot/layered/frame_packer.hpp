// Packing a layer's stored blocks into frames (format version 2): the builder
// first writes every layer with its blocks as they are (version 1's layout,
// which it needs to read blocks back for dedup and partial diffs), then packs
// each finished layer into frames, compressing several frames at once.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "snapshot/layered/format.hpp"

namespace ringpager::layered {

struct FramePacking {
    FrameCodec codec = FrameCodec::zstd;
    int zstd_level = 1;
    uint64_t frame_blocks = 0;
    uint64_t block_size_bytes = 0;
    unsigned threads = 1;
};

struct FileRef {
    int fd = -1;
    const std::string& path;   // names the file in errors
};

// Reads `block_count` blocks stored back to back from `plain_offset` of
// `plain` and stores them as frames back to back from `out_offset` of `out`,
// appending one record per frame to `frames`. With FrameCodec::none the frames
// are the plain bytes themselves: `out` must be `plain` at the same offset,
// and nothing is written (the frames are only hashed). "" or an error naming
// the file.
std::string pack_frames(const FramePacking& packing, FileRef plain, uint64_t plain_offset, uint64_t block_count,
                        FileRef out, uint64_t out_offset, std::vector<FrameRecord>& frames);

}  // namespace ringpager::layered
