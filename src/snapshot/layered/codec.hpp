// Frame codecs of snapshot format version 2 (docs/snapshot-format.md, "Frames"):
// zstd and lz4 compress each frame's plain bytes on their own (no dictionary,
// no state carried from one frame to the next), so any frame decompresses
// alone; `none` stores the plain bytes as they are.
//
// Decompression is bounded by the frame's declared plain size: the output
// buffer is exactly that size, and a frame that decodes to more or to fewer
// bytes is an error, never a short or overlong result.
#pragma once

#include <zstd.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "ringpager/snapshot.hpp"

namespace ringpager::layered {

// "none", "zstd", "lz4"; "unknown" for anything else.
const char* codec_name(FrameCodec codec);
bool valid_codec(uint32_t value);

// The most stored bytes a frame of `plain_bytes` may take with `codec`: what
// the codec can produce at worst. A frame record claiming more is refused.
uint64_t stored_bound(FrameCodec codec, uint64_t plain_bytes);

// Levels the builder accepts for zstd (lz4 and none have none).
inline constexpr int min_zstd_level = 1;
inline constexpr int max_zstd_level = 19;

// Compresses frames; keeps the codec's context between frames. One per thread.
class FrameCompressor {
public:
    FrameCompressor(FrameCodec codec, int zstd_level);
    // Compresses `plain` into `out` (resized to the stored size). "" or the cause.
    std::string compress(std::span<const std::byte> plain, std::vector<std::byte>& out);

private:
    struct CctxFree {
        void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
    };
    FrameCodec codec_;
    int level_;
    std::unique_ptr<ZSTD_CCtx, CctxFree> zstd_;
};

// Decompresses frames; keeps the codec's context between frames. One per thread.
class FrameDecompressor {
public:
    explicit FrameDecompressor(FrameCodec codec);
    // Decompresses `stored` into all of `plain`, whose size is the frame's
    // declared plain size. "" when it decoded to exactly that many bytes, else
    // the cause ("decompresses to more than its 2097152 plain bytes").
    std::string decompress(std::span<const std::byte> stored, std::span<std::byte> plain);

private:
    struct DctxFree {
        void operator()(ZSTD_DCtx* d) const { ZSTD_freeDCtx(d); }
    };
    FrameCodec codec_;
    std::unique_ptr<ZSTD_DCtx, DctxFree> zstd_;
};

}  // namespace ringpager::layered
