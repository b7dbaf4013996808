// libFuzzer target: the layered snapshot decoders (src/snapshot/layered/
// format.cpp): decode_manifest on the whole input, decode_layer_header on its
// first 128 bytes. Each runs twice: on the input as it is, and on a copy whose
// checksums were recomputed ("sealed"), so that mutations also reach the
// checks behind the checksums (layer records, extents) instead of stopping at
// a checksum mismatch every time.
#include <xxhash.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "fuzz_check.hpp"
#include "snapshot/layered/codec.hpp"
#include "snapshot/layered/format.hpp"

namespace {

using namespace ringpager::layered;
using ringpager::fuzz::printable_line;

const std::string kPath = "/snapshots/fuzz.rpm";

template <typename T>
T load(const std::vector<std::byte>& bytes, uint64_t offset) {
    T value{};
    std::memcpy(&value, bytes.data() + offset, sizeof value);
    return value;
}

// Recomputes, where the bytes allow it, the hash of each layer's slice of a
// table (the `count` field at `count_at` of its record, the hash at `hash_at`),
// for a table of `record_bytes` records starting at `table_at`.
void seal_slices(std::vector<std::byte>& bytes, uint64_t layers, uint64_t table_at, uint64_t record_bytes,
                 uint64_t count_at, uint64_t hash_at) {
    if (table_at > bytes.size()) return;
    const uint64_t available = (bytes.size() - table_at) / record_bytes;
    uint64_t first = 0;
    for (uint64_t i = 0; i < layers; i++) {
        const uint64_t record = header_bytes + i * layer_record_bytes;
        const uint64_t count = load<uint64_t>(bytes, record + count_at);
        if (count > available - first) break;
        const uint64_t hash = XXH3_64bits(bytes.data() + table_at + first * record_bytes, count * record_bytes);
        std::memcpy(bytes.data() + record + hash_at, &hash, sizeof hash);
        first += count;
    }
}

// Recomputes, where the bytes allow it, each layer record's checksum-slice hash
// (and in version 2 its frame-slice hash), then the table and header
// checksums, as the builder would have.
void seal_manifest(std::vector<std::byte>& bytes) {
    if (bytes.size() < header_bytes) return;
    const uint64_t layers = load<uint32_t>(bytes, 40);
    const uint64_t extents = load<uint64_t>(bytes, 48);
    const uint64_t stored = load<uint64_t>(bytes, 56);
    const uint64_t records_end = header_bytes + layers * layer_record_bytes;
    if (records_end <= bytes.size() && extents <= bytes.size() / extent_record_bytes &&
        records_end + extents * extent_record_bytes <= bytes.size()) {
        const uint64_t checksums_at = records_end + extents * extent_record_bytes;
        seal_slices(bytes, layers, checksums_at, checksum_record_bytes, 24, 40);
        if (load<uint32_t>(bytes, 8) == framed_format_version && stored <= bytes.size() / checksum_record_bytes) {
            seal_slices(bytes, layers, checksums_at + stored * checksum_record_bytes, frame_record_bytes, 48, 56);
        }
    }
    reseal_manifest(bytes);
}

bool same_extents(const Manifest& a, const Manifest& b) {
    if (a.extents.size() != b.extents.size()) return false;
    for (size_t i = 0; i < a.extents.size(); i++)
        if (a.extents[i].first_block != b.extents[i].first_block || a.extents[i].location != b.extents[i].location)
            return false;
    return true;
}

// find_extent (bucket index plus binary search) agrees with a plain binary
// search over all extents.
void check_lookup(const Manifest& m, uint64_t block) {
    if (block >= m.block_count) return;
    const auto it = std::upper_bound(m.extents.begin(), m.extents.end(), block,
                                     [](uint64_t b, const Extent& e) { return b < e.first_block; });
    const size_t expected = static_cast<size_t>(it - m.extents.begin()) - 1;
    FUZZ_REQUIRE(m.find_extent(block) == expected);
    FUZZ_REQUIRE(m.extents[expected].first_block <= block && block < m.extent_end_block(expected));
}

// Version 2: every frame lies inside its layer file, right after the previous
// one, holds its share of the layer's slots and no more than its codec can make
// of them. The frame cache sizes its buffers and reads by these values.
void check_frames(const Manifest& m) {
    FUZZ_REQUIRE(std::has_single_bit(m.frame_blocks) && m.frame_blocks * m.block_size_bytes <= max_frame_bytes);
    FUZZ_REQUIRE(m.frame_base.size() == m.layers.size());
    uint64_t frames = 0;
    for (size_t i = 0; i < m.layers.size(); i++) {
        const LayerRecord& rec = m.layers[i];
        FUZZ_REQUIRE(m.frame_base[i] == frames);
        FUZZ_REQUIRE(rec.frame_count == (rec.block_count + m.frame_blocks - 1) / m.frame_blocks);
        uint64_t at = rec.data_offset_bytes;
        for (uint64_t k = 0; k < rec.frame_count; k++) {
            const FrameRecord& f = m.frames[frames + k];
            const uint64_t blocks = std::min(m.frame_blocks, rec.block_count - k * m.frame_blocks);
            FUZZ_REQUIRE(f.offset == at && f.plain_bytes == blocks * m.block_size_bytes);
            FUZZ_REQUIRE(f.stored_bytes > 0 && f.stored_bytes <= stored_bound(m.codec, f.plain_bytes));
            at += f.stored_bytes;
        }
        FUZZ_REQUIRE(at == rec.file_size_bytes);
        frames += rec.frame_count;
    }
    FUZZ_REQUIRE(frames == m.frames.size());
}

// A packed working-set layer (the last) has every slot referenced by exactly
// one guest block: the replay derives its order from the slots.
void check_packed(const Manifest& m) {
    FUZZ_REQUIRE(m.version == format_version && m.layers.size() >= 2);
    const uint32_t packed = m.packed_layer();
    std::vector<uint32_t> refs(m.layers[packed].block_count, 0);
    FUZZ_REQUIRE(!refs.empty());
    for (size_t i = 0; i < m.extents.size(); i++) {
        const Extent& e = m.extents[i];
        if (is_zero_location(e.location) || location_layer(e.location) != packed) continue;
        for (uint64_t s = location_slot(e.location); s < location_slot(e.location) + m.extent_end_block(i) - e.first_block; s++)
            refs[s]++;
    }
    FUZZ_REQUIRE(std::all_of(refs.begin(), refs.end(), [](uint32_t n) { return n == 1; }));
    // The packed order: inside the guest, each block once, data blocks the
    // packed layer's slots in order, all of them.
    FUZZ_REQUIRE(!m.packed_order.empty());
    std::vector<uint8_t> seen(m.block_count, 0);
    uint64_t next_slot = 0;
    for (const PackedRun& r : m.packed_order) {
        FUZZ_REQUIRE(r.blocks > 0 && r.first_block < m.block_count && r.blocks <= m.block_count - r.first_block);
        for (uint64_t b = r.first_block; b < r.first_block + r.blocks; b++) {
            FUZZ_REQUIRE(seen[b]++ == 0);
            const Extent& e = m.extents[m.find_extent(b)];
            if (is_zero_location(e.location)) continue;
            FUZZ_REQUIRE(location_layer(e.location) == packed);
            FUZZ_REQUIRE(location_slot(e.location) + (b - e.first_block) == next_slot++);
        }
    }
    FUZZ_REQUIRE(next_slot == m.layers[packed].block_count);
}

// Every manifest decode_manifest accepts (docs/snapshot-format.md): a sane
// geometry, extents tiling the guest in order, every data extent inside its
// layer, one checksum per stored block, and layer records that describe their
// files. The engine indexes layers, slots and checksums by these values
// without further checks.
void check_manifest(const Manifest& m) {
    FUZZ_REQUIRE(std::has_single_bit(m.block_size_bytes) && m.block_size_bytes >= min_block_size_bytes &&
                 m.block_size_bytes <= max_block_size_bytes);
    FUZZ_REQUIRE(m.block_count > 0 && m.block_count * m.block_size_bytes == m.guest_size_bytes &&
                 m.guest_size_bytes / m.block_size_bytes == m.block_count);
    FUZZ_REQUIRE(m.path == kPath && m.directory == "/snapshots");
    FUZZ_REQUIRE(m.layers.size() <= max_layer_count && m.checksum_base.size() == m.layers.size());
    uint64_t slots = 0;
    for (size_t i = 0; i < m.layers.size(); i++) {
        const LayerRecord& rec = m.layers[i];
        FUZZ_REQUIRE(!rec.path.empty() && rec.path.size() < layer_path_bytes && rec.path.front() != '/');
        FUZZ_REQUIRE(rec.path.find('\0') == std::string::npos && valid_layer_name(rec.path));
        FUZZ_REQUIRE(rec.data_offset_bytes >= header_bytes && rec.data_offset_bytes % 4096 == 0);
        if (m.compressed()) {
            FUZZ_REQUIRE(rec.file_size_bytes >= rec.data_offset_bytes);
        } else {
            FUZZ_REQUIRE(rec.file_size_bytes - rec.data_offset_bytes == rec.block_count * m.block_size_bytes);
        }
        FUZZ_REQUIRE(m.checksum_base[i] == slots);
        slots += rec.block_count;
    }
    FUZZ_REQUIRE(slots == m.checksums.size());
    if (m.framed()) check_frames(m);
    FUZZ_REQUIRE(!m.extents.empty() && m.extents.front().first_block == 0);
    for (size_t i = 0; i < m.extents.size(); i++) {
        const Extent& e = m.extents[i];
        const uint64_t end = m.extent_end_block(i);
        FUZZ_REQUIRE(e.first_block < end && end <= m.block_count);
        if (is_zero_location(e.location)) {
            FUZZ_REQUIRE(location_slot(e.location) == 0);
            continue;
        }
        const uint32_t layer = location_layer(e.location);
        FUZZ_REQUIRE(layer < m.layers.size());
        const uint64_t last_slot = location_slot(e.location) + (end - e.first_block) - 1;
        FUZZ_REQUIRE(last_slot < m.layers[layer].block_count);
        FUZZ_REQUIRE(m.checksum_base[layer] + last_slot < m.checksums.size());
        check_lookup(m, e.first_block);
        check_lookup(m, end - 1);
    }
    check_lookup(m, m.block_count - 1);
    check_lookup(m, m.block_count / 2);
    FUZZ_REQUIRE((m.flags & ~known_manifest_flags) == 0);
    if (m.packed_ws()) check_packed(m);

    // What was accepted survives a round trip through the encoder.
    Manifest again;
    const std::vector<std::byte> encoded = encode_manifest(m);
    FUZZ_REQUIRE(decode_manifest(encoded, kPath, again).empty());
    FUZZ_REQUIRE(again.block_size_bytes == m.block_size_bytes && again.block_count == m.block_count &&
                 again.snapshot_id == m.snapshot_id && same_extents(again, m) && again.checksums == m.checksums);
    FUZZ_REQUIRE(again.version == m.version && again.flags == m.flags && again.codec == m.codec &&
                 again.frame_blocks == m.frame_blocks && again.frames.size() == m.frames.size() &&
                 again.packed_order.size() == m.packed_order.size() &&
                 (m.packed_order.empty() || std::memcmp(again.packed_order.data(), m.packed_order.data(),
                                                        m.packed_order.size() * packed_run_record_bytes) == 0) &&
                 (m.frames.empty() || std::memcmp(again.frames.data(), m.frames.data(),
                                                  m.frames.size() * frame_record_bytes) == 0));
    for (size_t i = 0; i < m.layers.size(); i++) FUZZ_REQUIRE(again.layers[i].path == m.layers[i].path);
}

void decode_and_check_manifest(const std::vector<std::byte>& bytes) {
    Manifest m;
    const std::string error = decode_manifest(bytes, kPath, m);
    if (error.empty()) {
        check_manifest(m);
        return;
    }
    FUZZ_REQUIRE_ERROR(printable_line(error) && error.rfind(kPath + ": ", 0) == 0, error);
}

void decode_and_check_layer_header(std::span<const std::byte, header_bytes> bytes) {
    LayerHeader h;
    const std::string error = decode_layer_header(bytes, h);
    if (!error.empty()) {
        FUZZ_REQUIRE_ERROR(printable_line(error), error);
        return;
    }
    LayerHeader again;
    FUZZ_REQUIRE(decode_layer_header(encode_layer_header(h), again).empty());
    FUZZ_REQUIRE(again.id == h.id && again.snapshot_id == h.snapshot_id && again.layer_index == h.layer_index &&
                 again.block_size_bytes == h.block_size_bytes && again.block_count == h.block_count &&
                 again.data_offset_bytes == h.data_offset_bytes && again.checksums_xxh3 == h.checksums_xxh3 &&
                 again.version == h.version && again.codec == h.codec && again.frame_count == h.frame_count &&
                 again.frames_xxh3 == h.frames_xxh3);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::vector<std::byte> bytes(reinterpret_cast<const std::byte*>(data), reinterpret_cast<const std::byte*>(data) + size);
    decode_and_check_manifest(bytes);
    std::vector<std::byte> sealed = bytes;
    seal_manifest(sealed);
    decode_and_check_manifest(sealed);

    if (size < header_bytes) return 0;
    std::array<std::byte, header_bytes> header;
    std::memcpy(header.data(), data, header_bytes);
    decode_and_check_layer_header(header);
    const uint64_t hash = XXH3_64bits(header.data(), header_checksum_offset);
    std::memcpy(header.data() + header_checksum_offset, &hash, sizeof hash);
    decode_and_check_layer_header(header);
    return 0;
}
