#include "snapshot/layered/frame_packer.hpp"

#include <xxhash.h>

#include <algorithm>
#include <system_error>
#include <thread>

#include "snapshot/layered/codec.hpp"
#include "snapshot/layered/file_io.hpp"

namespace ringpager::layered {
namespace {

// One frame in the works: its plain bytes, their stored form, and why not.
struct Slot {
    explicit Slot(const FramePacking& p) : compressor(p.codec, p.zstd_level) {}
    FrameCompressor compressor;
    std::vector<std::byte> plain;
    std::vector<std::byte> stored;
    std::string error;
};

}  // namespace

std::string pack_frames(const FramePacking& p, FileRef plain, uint64_t plain_offset, uint64_t block_count, FileRef out,
                        uint64_t out_offset, std::vector<FrameRecord>& frames) {
    const uint64_t frame_count = (block_count + p.frame_blocks - 1) / p.frame_blocks;
    const unsigned width = std::max(1u, p.threads);
    std::vector<Slot> slots;
    for (unsigned i = 0; i < width; ++i) slots.emplace_back(p);
    const bool in_place = p.codec == FrameCodec::none;
    uint64_t at = out_offset;
    // Rounds of `width` frames: each read and compressed by its own thread,
    // then written in order by this one.
    for (uint64_t first = 0; first < frame_count; first += width) {
        const uint64_t round = std::min<uint64_t>(width, frame_count - first);
        auto work = [&](uint64_t i) {
            Slot& s = slots[i];
            const uint64_t k = first + i;
            const uint64_t blocks = std::min(p.frame_blocks, block_count - k * p.frame_blocks);
            s.plain.resize(blocks * p.block_size_bytes);
            const uint64_t from = plain_offset + k * p.frame_blocks * p.block_size_bytes;
            s.error = pread_exact(plain.fd, s.plain, from, plain.path);
            if (s.error.empty() && !in_place) {
                if (auto e = s.compressor.compress(s.plain, s.stored); !e.empty()) {
                    s.error = out.path + ": frame " + std::to_string(k) + ": " + e;
                }
            }
        };
        std::vector<std::thread> helpers;
        for (uint64_t i = 1; i < round; ++i) {
            try {
                helpers.emplace_back(work, i);
            } catch (const std::system_error&) {
                work(i);   // no thread to be had: do it here
            }
        }
        work(0);
        for (std::thread& t : helpers) t.join();
        for (uint64_t i = 0; i < round; ++i) {
            Slot& s = slots[i];
            if (!s.error.empty()) return s.error;
            const std::vector<std::byte>& stored = in_place ? s.plain : s.stored;
            frames.push_back({at, static_cast<uint32_t>(stored.size()), static_cast<uint32_t>(s.plain.size()),
                              XXH3_64bits(stored.data(), stored.size())});
            if (!in_place) {
                if (auto e = pwrite_all(out.fd, stored, at, out.path); !e.empty()) return e;
            }
            at += stored.size();
        }
    }
    return {};
}

}  // namespace ringpager::layered
