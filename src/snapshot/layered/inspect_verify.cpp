// inspect_layered_snapshot and verify_layered_snapshot: the read-only tools
// behind `ringpager snapshot inspect` and `ringpager snapshot verify`.
#include <sys/stat.h>
#include <xxhash.h>

#include <algorithm>
#include <chrono>

#include "ringpager/snapshot.hpp"
#include "snapshot/layered/codec.hpp"
#include "snapshot/layered/describe.hpp"
#include "snapshot/layered/file_io.hpp"
#include "snapshot/layered/format.hpp"
#include "snapshot/layered/layer_files.hpp"
#include "io/uring_reader.hpp"

namespace ringpager {
namespace layered {
namespace {

constexpr unsigned verify_reads_in_flight = 8;
constexpr uint64_t verify_buffer_bytes = 8 << 20;
constexpr size_t max_bad_recorded = 4096;   // enough to name the first; the rest are only counted

struct BadBlock {
    uint32_t layer = 0;
    uint64_t slot = 0;
    uint64_t stored = 0;
    uint64_t read = 0;
};

// Counts a block's verdict, keeping the first few bad ones.
void check_block(const Manifest& m, uint32_t layer, uint64_t slot, const std::byte* bytes, SnapshotVerifyReport& report,
                 std::vector<BadBlock>& bad) {
    uint64_t read = XXH3_64bits(bytes, m.block_size_bytes);
    uint64_t stored = m.block_checksum(layer, slot);
    ++report.blocks_checked;
    if (read == stored) return;
    ++report.bad_blocks;
    if (bad.size() < max_bad_recorded) bad.push_back({layer, slot, stored, read});
}

// Re-hashes every slot of layer `index`, appending mismatches to `bad`.
std::string verify_layer(const Manifest& m, uint32_t index, int fd, UringReader& reader, SnapshotVerifyReport& report,
                         std::vector<BadBlock>& bad, uint64_t& done_bytes, uint64_t total_bytes,
                         const std::function<void(uint64_t, uint64_t)>& progress) {
    const LayerRecord& rec = m.layers[index];
    const uint64_t bs = m.block_size_bytes;
    uint64_t per_task = reader.buffer_bytes() / bs;
    std::vector<ReadTask> tasks;
    for (uint64_t slot = 0; slot < rec.block_count; slot += per_task) {
        uint64_t count = std::min(per_task, rec.block_count - slot);
        tasks.push_back({rec.data_offset_bytes + slot * bs, count * bs});
    }
    auto consume = [&](size_t task, std::span<std::byte> bytes) {
        uint64_t first_slot = (tasks[task].offset - rec.data_offset_bytes) / bs;
        for (uint64_t at = 0; at < bytes.size(); at += bs) {
            check_block(m, index, first_slot + at / bs, bytes.data() + at, report, bad);
        }
        report.bytes_read += bytes.size();
        done_bytes += bytes.size();
        if (progress) progress(done_bytes, total_bytes);
        return std::string{};
    };
    return reader.read_all(fd, "layer " + std::to_string(index) + " file " + m.layer_path(index), tasks, consume);
}

// Version 2: checks every frame of layer `index` (its stored bytes against
// the frame checksum, then that it decompresses to exactly its plain size),
// then every block in it, appending the first bad frame's description to
// `bad_frame` (if none yet) and bad blocks to `bad`.
std::string verify_layer_frames(const Manifest& m, uint32_t index, int fd, UringReader& reader,
                                SnapshotVerifyReport& report, std::vector<BadBlock>& bad, std::string& bad_frame,
                                uint64_t& done_bytes, uint64_t total_bytes,
                                const std::function<void(uint64_t, uint64_t)>& progress) {
    const LayerRecord& rec = m.layers[index];
    const uint64_t base = m.frame_base[index];
    std::vector<ReadTask> tasks;
    for (uint64_t k = 0; k < rec.frame_count; ++k) {
        tasks.push_back({m.frames[base + k].offset, m.frames[base + k].stored_bytes});
    }
    std::vector<std::byte> plain(m.frame_blocks * m.block_size_bytes);
    FrameDecompressor decompressor(m.codec);
    auto consume = [&](size_t k, std::span<std::byte> stored) {
        const FrameRecord& f = m.frames[base + k];
        ++report.frames_checked;
        std::string cause;
        const uint64_t read = XXH3_64bits(stored.data(), stored.size());
        if (read != f.checksum) {
            cause = "checksum mismatch (stored " + hex64(f.checksum) + ", read " + hex64(read) + ")";
        } else {
            cause = decompressor.decompress(stored, std::span(plain).first(f.plain_bytes));
        }
        if (!cause.empty()) {
            ++report.bad_frames;
            if (bad_frame.empty()) bad_frame = describe_frame(m, index, k) + ": " + cause;
        } else {
            for (uint64_t at = 0; at < f.plain_bytes; at += m.block_size_bytes) {
                check_block(m, index, k * m.frame_blocks + at / m.block_size_bytes, plain.data() + at, report, bad);
            }
        }
        report.bytes_read += stored.size();
        done_bytes += stored.size();
        if (progress) progress(done_bytes, total_bytes);
        return std::string{};
    };
    return reader.read_all(fd, "layer " + std::to_string(index) + " file " + m.layer_path(index), tasks, consume);
}

// Names the bad block a reader would meet first: the lowest guest offset that
// maps to any bad slot (or a bad slot no guest block uses, if none does).
std::string describe_first_bad(const Manifest& m, const std::vector<BadBlock>& bad, uint64_t bad_count) {
    const uint64_t bs = m.block_size_bytes;
    const BadBlock* first = &bad.front();
    uint64_t first_block = UINT64_MAX;
    for (size_t i = 0; i < m.extents.size() && first_block == UINT64_MAX; ++i) {
        const Extent& e = m.extents[i];
        if (is_zero_location(e.location)) continue;
        uint64_t slot_begin = location_slot(e.location);
        uint64_t slot_end = slot_begin + (m.extent_end_block(i) - e.first_block);
        for (const BadBlock& b : bad) {
            if (b.layer != location_layer(e.location) || b.slot < slot_begin || b.slot >= slot_end) continue;
            uint64_t block = e.first_block + (b.slot - slot_begin);
            if (block < first_block) {
                first_block = block;
                first = &b;
            }
        }
    }
    std::string where = first_block == UINT64_MAX ? "slot " + std::to_string(first->slot) + " (used by no guest block)"
                                                  : "block at guest offset " + hex64(first_block * bs);
    // A compressed block has no place of its own in the file: name its frame.
    const std::string place = m.compressed()
                                  ? "frame " + std::to_string(first->slot / m.frame_blocks) + ", decompressed"
                                  : "file offset " + hex64(m.layers[first->layer].data_offset_bytes + first->slot * bs);
    return "layer " + m.layer_path(first->layer) + " " + where + " (" + place + "): checksum mismatch (stored " +
           hex64(first->stored) + ", read " + hex64(first->read) + "); " + std::to_string(bad_count) +
           " bad block(s) in total";
}

}  // namespace

void describe_manifest(const Manifest& m, SnapshotInfo& info) {
    info.manifest_path = m.path;
    info.version = m.version;
    info.snapshot_id_hex = hex_id(m.snapshot_id);
    info.block_size_bytes = m.block_size_bytes;
    info.guest_size_bytes = m.guest_size_bytes;
    info.block_count = m.block_count;
    info.extent_count = m.extents.size();
    info.stored_plain_bytes = m.checksums.size() * m.block_size_bytes;
    if (m.framed()) {
        info.codec = codec_name(m.codec);
        info.codec_level = m.codec_level;
        info.frame_bytes = m.frame_blocks * m.block_size_bytes;
        info.frame_count = m.frames.size();
    }
    for (uint32_t i = 0; i < m.layers.size(); ++i) {
        const LayerRecord& rec = m.layers[i];
        SnapshotLayerInfo layer{i, rec.path, m.layer_path(i), hex_id(rec.id), rec.file_size_bytes,
                                rec.data_offset_bytes, rec.block_count, 0, "ok"};
        layer.frames = rec.frame_count;
        layer.stored_file_bytes = rec.file_size_bytes - rec.data_offset_bytes;
        info.stored_file_bytes += layer.stored_file_bytes;
        layer.packed_ws = m.packed_ws() && i == m.packed_layer();
        if (layer.packed_ws) info.packed_ws_blocks = rec.block_count;
        if (layer.packed_ws)
            for (const PackedRun& r : m.packed_order) info.packed_ws_pages += r.blocks;
        info.layers.push_back(std::move(layer));
    }
    for (size_t i = 0; i < m.extents.size(); ++i) {
        uint64_t blocks = m.extent_end_block(i) - m.extents[i].first_block;
        if (is_zero_location(m.extents[i].location)) {
            info.zero_blocks += blocks;
            ++info.zero_extents;
        } else {
            info.data_blocks += blocks;
            ++info.data_extents;
            info.layers[location_layer(m.extents[i].location)].referenced_blocks += blocks;
        }
    }
}

}  // namespace layered

bool inspect_layered_snapshot(const std::string& manifest_path, SnapshotInfo& info, std::string& error) {
    using namespace layered;
    info = SnapshotInfo{};
    Manifest m;
    error = load_manifest(manifest_path, m);
    if (!error.empty()) return false;
    describe_manifest(m, info);
    struct stat st {};
    if (::stat(manifest_path.c_str(), &st) == 0) info.manifest_size_bytes = static_cast<uint64_t>(st.st_size);
    for (uint32_t i = 0; i < m.layers.size(); ++i) {
        FileDesc file;
        if (auto e = open_layer(m, i, file); !e.empty()) info.layers[i].status = e;
    }
    return true;
}

bool verify_layered_snapshot(const std::string& manifest_path, SnapshotVerifyReport& report, std::string& error,
                             const std::function<void(uint64_t, uint64_t)>& progress) {
    using namespace layered;
    auto start = std::chrono::steady_clock::now();
    report = SnapshotVerifyReport{};
    Manifest m;
    std::vector<FileDesc> files;
    error = open_snapshot(manifest_path, m, files);
    if (!error.empty()) return false;
    uint64_t buffer = std::max(m.block_size_bytes, verify_buffer_bytes / m.block_size_bytes * m.block_size_bytes);
    uint64_t total_bytes = 0, done_bytes = 0;
    for (const LayerRecord& rec : m.layers) total_bytes += rec.file_size_bytes - rec.data_offset_bytes;
    if (m.framed()) {
        // One read per frame: the buffers hold the largest (validated at open).
        uint64_t most = 0;
        for (const FrameRecord& f : m.frames) most = std::max<uint64_t>(most, f.stored_bytes);
        buffer = std::max<uint64_t>(4096, (most + 4095) / 4096 * 4096);
    }
    auto reader = UringReader::create(verify_reads_in_flight, buffer);
    if (!reader) {
        error = "cannot set up io_uring for reading: " + reader.error().message();
        return false;
    }
    std::vector<BadBlock> bad;
    std::string bad_frame;
    for (uint32_t i = 0; i < m.layers.size(); ++i) {
        const int fd = files[i].get();
        error = m.framed()
                    ? verify_layer_frames(m, i, fd, **reader, report, bad, bad_frame, done_bytes, total_bytes, progress)
                    : verify_layer(m, i, fd, **reader, report, bad, done_bytes, total_bytes, progress);
        if (!error.empty()) return false;
    }
    report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (report.bad_blocks == 0 && report.bad_frames == 0) return true;
    if (report.bad_frames != 0) {
        error = bad_frame + "; " + std::to_string(report.bad_frames) + " bad frame(s) and " +
                std::to_string(report.bad_blocks) + " bad block(s) in total";
        return false;
    }
    error = describe_first_bad(m, bad, report.bad_blocks);
    return false;
}

}  // namespace ringpager
