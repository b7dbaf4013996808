// Version 2's frame table (docs/snapshot-format.md, "Frame record"): every
// check a reader makes before it trusts where a frame is and how large it is.
// After these, a frame's stored bytes lie inside its layer file, a worker's
// buffers can be sized from the records, and every stored slot belongs to
// exactly one frame.
#include <xxhash.h>

#include <algorithm>

#include "snapshot/layered/codec.hpp"
#include "snapshot/layered/format.hpp"

namespace ringpager::layered {

uint64_t hash_frames(std::span<const FrameRecord> frames) {
    return XXH3_64bits(frames.data(), frames.size() * frame_record_bytes);
}

std::string describe_frame(const Manifest& m, uint32_t layer, uint64_t k) {
    const FrameRecord& f = m.frames[m.frame_base[layer] + k];
    return "layer " + std::to_string(layer) + " (" + m.layer_path(layer) + ") frame " + std::to_string(k) +
           " at file offset " + hex64(f.offset) + " (" + std::to_string(f.stored_bytes) + " bytes)";
}

namespace {

// Checks the frames of layer `index`, which start at m.frames[base]; "" or the cause.
std::string check_layer_frames(const Manifest& m, uint32_t index, uint64_t base) {
    const LayerRecord& rec = m.layers[index];
    const std::string layer = "layer " + std::to_string(index);
    const uint64_t expected_count = (rec.block_count + m.frame_blocks - 1) / m.frame_blocks;
    if (rec.frame_count != expected_count) {
        return layer + " record: " + std::to_string(rec.frame_count) + " frames for " +
               std::to_string(rec.block_count) + " blocks of " + std::to_string(m.frame_blocks) +
               " per frame (expected " + std::to_string(expected_count) + ")";
    }
    uint64_t at = rec.data_offset_bytes;
    for (uint64_t k = 0; k < rec.frame_count; ++k) {
        const FrameRecord& f = m.frames[base + k];
        const std::string where = layer + " frame " + std::to_string(k) + ": ";
        const uint64_t blocks = std::min(m.frame_blocks, rec.block_count - k * m.frame_blocks);
        const uint64_t plain = blocks * m.block_size_bytes;
        if (f.offset != at) {
            return where + "offset " + std::to_string(f.offset) + ", expected " + std::to_string(at) +
                   " (frames are stored back to back from the data offset)";
        }
        if (f.plain_bytes != plain) {
            return where + "plain size " + std::to_string(f.plain_bytes) + ", expected " + std::to_string(plain) +
                   " (" + std::to_string(blocks) + " blocks)";
        }
        const uint64_t bound = stored_bound(m.codec, plain);
        if (m.codec == FrameCodec::none ? f.stored_bytes != plain : f.stored_bytes == 0 || f.stored_bytes > bound) {
            return where + "stored size " + std::to_string(f.stored_bytes) + " is not " +
                   (m.codec == FrameCodec::none ? "its plain size " + std::to_string(plain)
                                                : "between 1 and " + std::to_string(bound) + " (the most " +
                                                      codec_name(m.codec) + " makes of " + std::to_string(plain) +
                                                      " bytes)");
        }
        if (f.stored_bytes > rec.file_size_bytes - at) {
            return where + "runs past the end of the file (" + std::to_string(rec.file_size_bytes) + " bytes)";
        }
        at += f.stored_bytes;
    }
    if (at != rec.file_size_bytes) {
        return layer + " record: its frames end at " + std::to_string(at) + ", the file size is " +
               std::to_string(rec.file_size_bytes);
    }
    return {};
}

}  // namespace

std::string check_frame_table(Manifest& m) {
    m.frame_base.resize(m.layers.size());
    uint64_t base = 0;
    for (uint32_t i = 0; i < m.layers.size(); ++i) {
        m.frame_base[i] = base;
        const LayerRecord& rec = m.layers[i];
        // The slice is hashed in place: it must lie inside the table first.
        if (rec.frame_count > m.frames.size() - base) {
            return "layer " + std::to_string(i) + " record: " + std::to_string(rec.frame_count) +
                   " frames, but the frame table has " + std::to_string(m.frames.size() - base) + " left";
        }
        const uint64_t hash = hash_frames(std::span(m.frames).subspan(base, rec.frame_count));
        if (hash != rec.frames_xxh3) {
            return "layer " + std::to_string(i) + " record: its frame list hashes to " + hex64(hash) +
                   ", the record says " + hex64(rec.frames_xxh3);
        }
        if (auto e = check_layer_frames(m, i, base); !e.empty()) return e;
        base += rec.frame_count;
    }
    if (base != m.frames.size()) return "layer frame counts do not add up to the frame table";
    return {};
}

}  // namespace ringpager::layered
