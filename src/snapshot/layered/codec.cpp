#include "snapshot/layered/codec.hpp"

#include <lz4.h>
#include <zstd_errors.h>

#include <algorithm>
#include <cstring>

namespace ringpager::layered {

const char* codec_name(FrameCodec codec) {
    switch (codec) {
        case FrameCodec::none: return "none";
        case FrameCodec::zstd: return "zstd";
        case FrameCodec::lz4: return "lz4";
    }
    return "unknown";
}

bool valid_codec(uint32_t value) { return value <= static_cast<uint32_t>(FrameCodec::lz4); }

uint64_t stored_bound(FrameCodec codec, uint64_t plain_bytes) {
    switch (codec) {
        case FrameCodec::none: return plain_bytes;
        case FrameCodec::zstd: return ZSTD_compressBound(plain_bytes);
        case FrameCodec::lz4:
            return plain_bytes > LZ4_MAX_INPUT_SIZE ? 0 : static_cast<uint64_t>(LZ4_compressBound(static_cast<int>(plain_bytes)));
    }
    return 0;
}

FrameCompressor::FrameCompressor(FrameCodec codec, int zstd_level) : codec_(codec), level_(zstd_level) {
    if (codec_ == FrameCodec::zstd) zstd_.reset(ZSTD_createCCtx());
}

std::string FrameCompressor::compress(std::span<const std::byte> plain, std::vector<std::byte>& out) {
    const uint64_t bound = stored_bound(codec_, plain.size());
    if (bound == 0 && !plain.empty()) return "a frame of " + std::to_string(plain.size()) + " bytes is too large";
    out.resize(bound);
    switch (codec_) {
        case FrameCodec::none:
            if (!plain.empty()) std::memcpy(out.data(), plain.data(), plain.size());
            return {};
        case FrameCodec::zstd: {
            if (!zstd_) return "zstd: out of memory";
            ZSTD_CCtx_setParameter(zstd_.get(), ZSTD_c_compressionLevel, level_);
            const size_t n = ZSTD_compress2(zstd_.get(), out.data(), out.size(), plain.data(), plain.size());
            if (ZSTD_isError(n)) return std::string("zstd: ") + ZSTD_getErrorName(n);
            out.resize(n);
            return {};
        }
        case FrameCodec::lz4: {
            const int n = LZ4_compress_default(reinterpret_cast<const char*>(plain.data()),
                                               reinterpret_cast<char*>(out.data()), static_cast<int>(plain.size()),
                                               static_cast<int>(out.size()));
            if (n <= 0) return "lz4: compression failed";
            out.resize(static_cast<size_t>(n));
            return {};
        }
    }
    return "unknown codec";
}

FrameDecompressor::FrameDecompressor(FrameCodec codec) : codec_(codec) {
    if (codec_ == FrameCodec::zstd) zstd_.reset(ZSTD_createDCtx());
}

std::string FrameDecompressor::decompress(std::span<const std::byte> stored, std::span<std::byte> plain) {
    const std::string want = std::to_string(plain.size());
    auto wrong_size = [&](uint64_t got) {
        return "decompresses to " + std::to_string(got) + " bytes, not its " + want + " plain bytes";
    };
    switch (codec_) {
        case FrameCodec::none:
            if (stored.size() != plain.size()) return wrong_size(stored.size());
            if (!plain.empty()) std::memcpy(plain.data(), stored.data(), plain.size());
            return {};
        case FrameCodec::zstd: {
            if (!zstd_) return "zstd: out of memory";
            // The output buffer is exactly the declared size: zstd stops with
            // dstSize_tooSmall rather than write past it.
            const size_t n = ZSTD_decompressDCtx(zstd_.get(), plain.data(), plain.size(), stored.data(), stored.size());
            if (ZSTD_isError(n)) {
                if (ZSTD_getErrorCode(n) == ZSTD_error_dstSize_tooSmall) {
                    return "decompresses to more than its " + want + " plain bytes";
                }
                return std::string("is not valid zstd data (") + ZSTD_getErrorName(n) + ")";
            }
            if (n != plain.size()) return wrong_size(n);
            return {};
        }
        case FrameCodec::lz4: {
            // LZ4_decompress_safe never writes past dstCapacity; it fails on a
            // block that would (it cannot tell that from malformed input).
            if (stored.size() > LZ4_MAX_INPUT_SIZE || plain.size() > LZ4_MAX_INPUT_SIZE) return "lz4: frame too large";
            const int n = LZ4_decompress_safe(reinterpret_cast<const char*>(stored.data()),
                                              reinterpret_cast<char*>(plain.data()), static_cast<int>(stored.size()),
                                              static_cast<int>(plain.size()));
            if (n < 0) return "is not a valid lz4 block of at most " + want + " bytes";
            if (static_cast<uint64_t>(n) != plain.size()) return wrong_size(static_cast<uint64_t>(n));
            return {};
        }
    }
    return "unknown codec";
}

}  // namespace ringpager::layered
