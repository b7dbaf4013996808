// Encoding, decoding and validation of manifests and layer headers. Every
// check a reader makes before trusting a manifest is in load_manifest, in the
// order the format document lists them.
#include "snapshot/layered/format.hpp"

#include <sys/stat.h>
#include <xxhash.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>

#include "common/log.hpp"
#include "common/regular_file.hpp"
#include "ringpager/file_desc.hpp"
#include "snapshot/layered/codec.hpp"
#include "snapshot/layered/file_io.hpp"

namespace ringpager::layered {
namespace {

template <typename T>
void put(std::span<std::byte> out, uint64_t offset, T value) {
    std::memcpy(out.data() + offset, &value, sizeof value);
}

template <typename T>
T get(std::span<const std::byte> in, uint64_t offset) {
    T value;
    std::memcpy(&value, in.data() + offset, sizeof value);
    return value;
}

LayerId get_id(std::span<const std::byte> in, uint64_t offset) {
    LayerId id;
    std::memcpy(id.data(), in.data() + offset, id.size());
    return id;
}

void put_id(std::span<std::byte> out, uint64_t offset, const LayerId& id) {
    std::memcpy(out.data() + offset, id.data(), id.size());
}

uint64_t hash64(std::span<const std::byte> bytes) { return XXH3_64bits(bytes.data(), bytes.size()); }

// A layer path is file bytes: escaped before it enters an error line of ours.
// Other code names layer files in its messages as they are, which is safe
// because the decoder refuses control characters in them (valid_layer_name).
std::string quote_path(const std::string& path) { return escape_for_log(path, layer_path_bytes); }

bool valid_block_size(uint64_t bytes) {
    return std::has_single_bit(bytes) && bytes >= min_block_size_bytes && bytes <= max_block_size_bytes;
}

// Manifest header fields (docs/snapshot-format.md, "Manifest header").
struct ManifestHeader {
    uint32_t version = 0;
    uint32_t header_size = 0;
    uint64_t block_size_bytes = 0;
    uint64_t guest_size_bytes = 0;
    uint64_t block_count = 0;
    uint32_t layer_count = 0;
    uint32_t flags = 0;
    uint64_t extent_count = 0;
    uint64_t stored_block_count = 0;
    uint64_t table_bytes = 0;
    uint64_t table_checksum = 0;
    LayerId snapshot_id{};
    uint32_t codec = 0;           // version 2 from here on
    uint32_t frame_blocks = 0;
    uint64_t frame_count = 0;
    uint32_t codec_level = 0;
    uint32_t reserved = 0;
    uint64_t packed_runs = 0;     // version 1 with manifest_flag_packed_ws
    bool reserved_v1_zero = true; // version 1: bytes 96..119 (104..119 when packed) are zero
    uint64_t header_checksum = 0;
};

ManifestHeader decode_manifest_header(std::span<const std::byte> b) {
    ManifestHeader h;
    h.version = get<uint32_t>(b, 8);
    h.header_size = get<uint32_t>(b, 12);
    h.block_size_bytes = get<uint64_t>(b, 16);
    h.guest_size_bytes = get<uint64_t>(b, 24);
    h.block_count = get<uint64_t>(b, 32);
    h.layer_count = get<uint32_t>(b, 40);
    h.flags = get<uint32_t>(b, 44);
    h.extent_count = get<uint64_t>(b, 48);
    h.stored_block_count = get<uint64_t>(b, 56);
    h.table_bytes = get<uint64_t>(b, 64);
    h.table_checksum = get<uint64_t>(b, 72);
    h.snapshot_id = get_id(b, 80);
    if (h.version == framed_format_version) {   // reserved in version 1: never read as frame fields there
        h.codec = get<uint32_t>(b, 96);
        h.frame_blocks = get<uint32_t>(b, 100);
        h.frame_count = get<uint64_t>(b, 104);
        h.codec_level = get<uint32_t>(b, 112);
        h.reserved = get<uint32_t>(b, 116);
    }
    if (h.version == format_version) {
        const bool packed = (h.flags & manifest_flag_packed_ws) != 0;
        if (packed) h.packed_runs = get<uint64_t>(b, 96);
        for (uint64_t at = packed ? 104 : 96; at < header_checksum_offset; ++at)
            h.reserved_v1_zero &= b[at] == std::byte{0};
    }
    h.header_checksum = get<uint64_t>(b, header_checksum_offset);
    return h;
}

// Version 2's header fields; "" when sane.
std::string check_frame_fields(const ManifestHeader& h) {
    if (!valid_codec(h.codec)) return "unknown frame codec " + std::to_string(h.codec);
    const auto codec = static_cast<FrameCodec>(h.codec);
    if (codec == FrameCodec::zstd ? h.codec_level > static_cast<uint32_t>(ZSTD_maxCLevel()) : h.codec_level != 0) {
        return "codec level " + std::to_string(h.codec_level) + " is not one " + codec_name(codec) + " has";
    }
    if (!std::has_single_bit(h.frame_blocks) || h.frame_blocks > max_frame_bytes / h.block_size_bytes) {
        return "frame size of " + std::to_string(h.frame_blocks) +
               " blocks is not a power of two of at most 64 MiB";
    }
    if (h.frame_count > h.stored_block_count) {
        return "frame count " + std::to_string(h.frame_count) + " exceeds the stored block count " +
               std::to_string(h.stored_block_count);
    }
    if (h.reserved != 0) return "reserved field is not zero";
    return {};
}

// Field checks a sealed header must still pass; "" when sane.
std::string check_header_fields(const ManifestHeader& h) {
    if (h.header_size != header_bytes) return "header size " + std::to_string(h.header_size) + " is not 128";
    if (!valid_block_size(h.block_size_bytes)) {
        return "block size " + std::to_string(h.block_size_bytes) +
               " is not a power of two between 4 KiB and 1 GiB";
    }
    if (h.block_count == 0 || h.block_count > UINT64_MAX / h.block_size_bytes ||
        h.block_count * h.block_size_bytes != h.guest_size_bytes) {
        return "guest size " + std::to_string(h.guest_size_bytes) + " is not " +
               std::to_string(h.block_count) + " blocks of " + std::to_string(h.block_size_bytes) + " bytes";
    }
    if (h.layer_count > max_layer_count) return "layer count " + std::to_string(h.layer_count) + " exceeds 65534";
    if ((h.flags & ~known_manifest_flags) != 0) return "unknown flags " + hex64(h.flags & ~known_manifest_flags);
    if ((h.flags & manifest_flag_packed_ws) != 0) {
        // Packing keeps slots in place; frames would group them otherwise (docs/snapshot-format.md).
        if (h.version != format_version) return "a packed working-set layer needs format version 1";
        if (h.layer_count < 2) return "a packed working-set layer needs a layer before it";
        if (h.packed_runs == 0 || h.packed_runs > h.block_count) {
            return "packed order of " + std::to_string(h.packed_runs) + " runs is not between 1 and the block count";
        }
    }
    if (!h.reserved_v1_zero) return "reserved field is not zero";
    if (h.extent_count == 0 || h.extent_count > h.block_count) {
        return "extent count " + std::to_string(h.extent_count) + " is not between 1 and the block count";
    }
    if (h.stored_block_count > slot_mask) return "stored block count is too large";
    if (h.version == framed_format_version) {
        if (auto e = check_frame_fields(h); !e.empty()) return e;
    }
    // Every count is bounded above (blocks < 2^52, stored blocks < 2^48, frames
    // at most stored blocks), so the sum cannot wrap.
    uint64_t expected = h.layer_count * layer_record_bytes + h.extent_count * extent_record_bytes +
                        h.stored_block_count * checksum_record_bytes + h.frame_count * frame_record_bytes +
                        h.packed_runs * packed_run_record_bytes;
    if (h.table_bytes != expected) {
        return "table size " + std::to_string(h.table_bytes) + " does not match its counts (" +
               std::to_string(expected) + ")";
    }
    return {};
}

std::string decode_layer_records(std::span<const std::byte> table, uint64_t block_size, Manifest& m) {
    // Unless blocks are compressed, slot s is at data_offset + s * block_size.
    const bool slots_in_place = !m.compressed();
    uint64_t slots = 0;
    for (uint32_t i = 0; i < m.layers.size(); ++i) {
        auto r = table.subspan(i * layer_record_bytes, layer_record_bytes);
        LayerRecord& rec = m.layers[i];
        rec.id = get_id(r, 0);
        rec.file_size_bytes = get<uint64_t>(r, 16);
        rec.block_count = get<uint64_t>(r, 24);
        rec.data_offset_bytes = get<uint64_t>(r, 32);
        rec.checksums_xxh3 = get<uint64_t>(r, 40);
        if (m.framed()) {
            rec.frame_count = get<uint64_t>(r, 48);
            rec.frames_xxh3 = get<uint64_t>(r, 56);
        }
        const char* text = reinterpret_cast<const char*>(r.data() + 64);
        size_t length = strnlen(text, layer_path_bytes);
        std::string where = "layer " + std::to_string(i) + " record: ";
        if (length == 0 || length == layer_path_bytes) return where + "path is empty or not NUL-terminated";
        rec.path.assign(text, length);
        if (rec.path.front() == '/') return where + "path '" + quote_path(rec.path) + "' is not relative";
        if (!valid_layer_name(rec.path)) {
            return where + "path '" + quote_path(rec.path) + "' holds a control character";
        }
        if (rec.block_count > slot_mask - slots) return where + "block count is too large";
        slots += rec.block_count;
        if (!slots_in_place) {
            // Compressed frames: where they end is checked against the frame table.
            if (rec.data_offset_bytes < header_bytes || rec.data_offset_bytes % 4096 != 0 ||
                rec.file_size_bytes < rec.data_offset_bytes) {
                return where + "file size " + std::to_string(rec.file_size_bytes) + " is below its data offset " +
                       std::to_string(rec.data_offset_bytes) + ", or that offset is not a multiple of 4096";
            }
            continue;
        }
        if (rec.data_offset_bytes < header_bytes || rec.data_offset_bytes % 4096 != 0 ||
            rec.block_count > (UINT64_MAX - rec.data_offset_bytes) / block_size ||
            rec.file_size_bytes != rec.data_offset_bytes + rec.block_count * block_size) {
            return where + "file size " + std::to_string(rec.file_size_bytes) + " does not match data offset " +
                   std::to_string(rec.data_offset_bytes) + " plus " + std::to_string(rec.block_count) +
                   " blocks";
        }
    }
    return {};
}

std::string check_checksum_slices(Manifest& m) {
    m.checksum_base.resize(m.layers.size());
    uint64_t base = 0;
    for (uint32_t i = 0; i < m.layers.size(); ++i) {
        m.checksum_base[i] = base;
        const LayerRecord& rec = m.layers[i];
        // The slice is hashed in place: it must lie inside the table first.
        if (rec.block_count > m.checksums.size() - base) {
            return "layer " + std::to_string(i) + " record: " + std::to_string(rec.block_count) +
                   " blocks, but the checksum table has " + std::to_string(m.checksums.size() - base) + " left";
        }
        uint64_t hash = XXH3_64bits(m.checksums.data() + base, rec.block_count * checksum_record_bytes);
        if (hash != rec.checksums_xxh3) {
            return "layer " + std::to_string(i) + " record: its checksum list hashes to " + hex64(hash) +
                   ", the record says " + hex64(rec.checksums_xxh3);
        }
        base += rec.block_count;
    }
    if (base != m.checksums.size()) return "layer block counts do not add up to the checksum table";
    return {};
}

std::string check_extents(const Manifest& m) {
    if (m.extents.front().first_block != 0) return "the first extent does not start at guest offset 0";
    // Messages are only built on failure: this loop runs over every extent at load.
    auto where = [&](size_t i) {
        return "extent " + std::to_string(i) + " (guest offset " + hex64(m.extents[i].first_block * m.block_size_bytes) +
               ")";
    };
    for (size_t i = 0; i < m.extents.size(); ++i) {
        const Extent& e = m.extents[i];
        uint64_t end = m.extent_end_block(i);
        if (end <= e.first_block || end > m.block_count) return where(i) + " is empty, out of order or past the guest size";
        if (is_zero_location(e.location)) {
            if (location_slot(e.location) != 0) return where(i) + " is a zero extent with a slot";
            continue;
        }
        uint32_t layer = location_layer(e.location);
        if (layer >= m.layers.size()) {
            return where(i) + " names layer " + std::to_string(layer) + ", which does not exist";
        }
        uint64_t first = location_slot(e.location);
        uint64_t count = end - e.first_block;
        const LayerRecord& rec = m.layers[layer];
        if (first > rec.block_count || count > rec.block_count - first) {
            return where(i) + " points past the end of layer " + std::to_string(layer) + " (" + quote_path(rec.path) +
                   "): slots " + std::to_string(first) + ".." + std::to_string(first + count - 1) +
                   ", the layer holds " + std::to_string(rec.block_count) + " blocks";
        }
    }
    return {};
}

// A packed working-set layer (the last) holds blocks in touch order, so its
// slot order is what a reader replays: every slot must be referenced by
// exactly one guest block, or the order would have holes or repeats.
std::string check_packed_layer(const Manifest& m) {
    const uint32_t packed = m.packed_layer();
    const uint64_t slots = m.layers[packed].block_count;
    std::string where = "layer " + std::to_string(packed) + " (" + quote_path(m.layers[packed].path) +
                        ") is marked a packed working set, but ";
    if (slots == 0) return where + "it holds no blocks";
    std::vector<uint8_t> seen(slots, 0);   // check_extents bounded every slot by the layer's count
    for (size_t i = 0; i < m.extents.size(); ++i) {
        const Extent& e = m.extents[i];
        if (is_zero_location(e.location) || location_layer(e.location) != packed) continue;
        const uint64_t first = location_slot(e.location), count = m.extent_end_block(i) - e.first_block;
        for (uint64_t s = first; s < first + count; ++s) {
            if (seen[s]++ != 0) return where + "its slot " + std::to_string(s) + " is referenced twice";
        }
    }
    const auto unused = std::find(seen.begin(), seen.end(), 0);
    if (unused != seen.end()) {
        return where + "its slot " + std::to_string(unused - seen.begin()) + " is not referenced";
    }
    return {};
}

// The packed order table lists the set in touch order: runs inside the
// guest, no block twice, each block zero or in the packed layer, and the
// packed layer's blocks in slot order, every one of them: touch order is
// file order (what the replay's gather reads rely on).
std::string check_packed_order(const Manifest& m) {
    const uint32_t packed = m.packed_layer();
    std::vector<uint8_t> seen(m.block_count, 0);
    uint64_t next_slot = 0;
    for (size_t i = 0; i < m.packed_order.size(); ++i) {
        const PackedRun& r = m.packed_order[i];
        const std::string where = "packed order run " + std::to_string(i) + " ";
        if (r.blocks == 0 || r.first_block >= m.block_count || r.blocks > m.block_count - r.first_block) {
            return where + "is empty or runs past the guest size";
        }
        for (uint64_t b = r.first_block; b < r.first_block + r.blocks; ++b) {
            if (seen[b]++ != 0) return where + "names guest block " + std::to_string(b) + " twice";
            const Extent& e = m.extents[m.find_extent(b)];
            if (is_zero_location(e.location)) continue;
            if (location_layer(e.location) != packed) {
                return where + "names guest block " + std::to_string(b) + ", which is not in the packed layer";
            }
            const uint64_t slot = location_slot(e.location) + (b - e.first_block);
            if (slot != next_slot) {
                return where + "names guest block " + std::to_string(b) + " at slot " + std::to_string(slot) +
                       ", expected slot " + std::to_string(next_slot) + " (the packed layer is in touch order)";
            }
            ++next_slot;
        }
    }
    if (next_slot != m.layers[packed].block_count) {
        return "packed order names " + std::to_string(next_slot) + " of the packed layer's " +
               std::to_string(m.layers[packed].block_count) + " blocks";
    }
    return {};
}

std::string truncated_header(uint64_t size_bytes) {
    return "truncated manifest (" + std::to_string(size_bytes) + " bytes; the header alone is 128)";
}

// Everything a reader checks on the 128 header bytes of a manifest of
// `file_size` bytes, in the format document's order; "" or the cause.
std::string check_header(std::span<const std::byte> header, uint64_t file_size, ManifestHeader& h) {
    if (std::memcmp(header.data(), manifest_magic.data(), manifest_magic.size()) != 0) {
        return "not a ringpager snapshot manifest (wrong magic)";
    }
    h = decode_manifest_header(header);
    if (h.version != format_version && h.version != framed_format_version) {
        return "unsupported manifest version " + std::to_string(h.version) + " (this ringpager reads versions " +
               std::to_string(format_version) + " and " + std::to_string(framed_format_version) + ")";
    }
    uint64_t header_hash = hash64(header.first(header_checksum_offset));
    if (header_hash != h.header_checksum) {
        return "header checksum mismatch (stored " + hex64(h.header_checksum) + ", computed " + hex64(header_hash) +
               "): the manifest is corrupt";
    }
    if (auto e = check_header_fields(h); !e.empty()) return "invalid header: " + e;
    if (file_size < header_bytes + h.table_bytes) {
        return "truncated manifest (" + std::to_string(file_size) + " bytes, the header says " +
               std::to_string(header_bytes + h.table_bytes) + ")";
    }
    if (file_size > header_bytes + h.table_bytes) {
        return "manifest has " + std::to_string(file_size - header_bytes - h.table_bytes) +
               " trailing bytes after its tables";
    }
    return {};
}

// The checks after the tables are read (m.extents and m.checksums filled,
// `records` the raw layer records, `table_hash` the hash of all three tables):
// "" or the cause, and on success `m` is complete.
std::string finish_manifest(const ManifestHeader& h, std::span<const std::byte> records, uint64_t table_hash,
                            const std::string& path, Manifest& m) {
    if (table_hash != h.table_checksum) {
        return "block table checksum mismatch (stored " + hex64(h.table_checksum) + ", computed " +
               hex64(table_hash) + "): the manifest is corrupt";
    }
    m.path = path;
    m.directory = parent_directory(path);
    m.version = h.version;
    m.flags = h.flags;
    m.block_size_bytes = h.block_size_bytes;
    m.guest_size_bytes = h.guest_size_bytes;
    m.block_count = h.block_count;
    m.snapshot_id = h.snapshot_id;
    m.codec = static_cast<FrameCodec>(h.codec);   // all zero in version 1
    m.codec_level = h.codec_level;
    m.frame_blocks = h.frame_blocks;
    m.layers.assign(h.layer_count, LayerRecord{});
    if (auto e = decode_layer_records(records, h.block_size_bytes, m); !e.empty()) return e;
    if (auto e = check_checksum_slices(m); !e.empty()) return e;
    if (m.framed()) {
        if (auto e = check_frame_table(m); !e.empty()) return e;
    }
    if (auto e = check_extents(m); !e.empty()) return e;
    m.build_bucket_index();
    if (m.packed_ws()) {
        if (auto e = check_packed_layer(m); !e.empty()) return e;
        if (auto e = check_packed_order(m); !e.empty()) return e;
    }
    return {};
}

}  // namespace

size_t Manifest::find_extent(uint64_t block) const {
    auto first = extents.begin();
    auto last = extents.end();
    if (!bucket_first_extent.empty()) {
        // The answer lies between the extents holding this bucket's first block
        // and the next bucket's first block, both included.
        uint64_t bucket = block >> bucket_shift;
        first += bucket_first_extent[bucket];
        if (bucket + 1 < bucket_first_extent.size()) last = extents.begin() + bucket_first_extent[bucket + 1] + 1;
    }
    auto it = std::upper_bound(first, last, block, [](uint64_t b, const Extent& e) { return b < e.first_block; });
    return static_cast<size_t>(it - extents.begin()) - 1;
}

void Manifest::build_bucket_index() {
    bucket_first_extent.clear();
    if (extents.size() > UINT32_MAX) return;   // plain binary search then
    bucket_shift = 0;
    while ((block_count >> bucket_shift) > extents.size()) ++bucket_shift;
    uint64_t buckets = ((block_count - 1) >> bucket_shift) + 1;
    bucket_first_extent.resize(buckets);
    size_t e = 0;
    for (uint64_t k = 0; k < buckets; ++k) {
        uint64_t block = k << bucket_shift;
        while (extent_end_block(e) <= block) ++e;
        bucket_first_extent[k] = static_cast<uint32_t>(e);
    }
}

std::string Manifest::layer_path(uint32_t index) const { return directory + "/" + layers[index].path; }

std::vector<std::byte> encode_manifest(const Manifest& m) {
    uint64_t table_bytes = m.layers.size() * layer_record_bytes + m.extents.size() * extent_record_bytes +
                           m.checksums.size() * checksum_record_bytes;
    table_bytes += m.frames.size() * frame_record_bytes + m.packed_order.size() * packed_run_record_bytes;
    std::vector<std::byte> out(header_bytes + table_bytes);
    std::span<std::byte> b(out);
    std::memcpy(b.data(), manifest_magic.data(), manifest_magic.size());
    put<uint32_t>(b, 8, m.version);
    put<uint32_t>(b, 12, header_bytes);
    put<uint64_t>(b, 16, m.block_size_bytes);
    put<uint64_t>(b, 24, m.guest_size_bytes);
    put<uint64_t>(b, 32, m.block_count);
    put<uint32_t>(b, 40, static_cast<uint32_t>(m.layers.size()));
    put<uint32_t>(b, 44, m.flags);
    put<uint64_t>(b, 48, m.extents.size());
    put<uint64_t>(b, 56, m.checksums.size());
    put<uint64_t>(b, 64, table_bytes);
    put_id(b, 80, m.snapshot_id);
    if (m.packed_ws()) put<uint64_t>(b, 96, m.packed_order.size());
    if (m.framed()) {
        put<uint32_t>(b, 96, static_cast<uint32_t>(m.codec));
        put<uint32_t>(b, 100, static_cast<uint32_t>(m.frame_blocks));
        put<uint64_t>(b, 104, m.frames.size());
        put<uint32_t>(b, 112, m.codec_level);
    }
    uint64_t at = header_bytes;
    for (const LayerRecord& rec : m.layers) {
        put_id(b, at, rec.id);
        put<uint64_t>(b, at + 16, rec.file_size_bytes);
        put<uint64_t>(b, at + 24, rec.block_count);
        put<uint64_t>(b, at + 32, rec.data_offset_bytes);
        put<uint64_t>(b, at + 40, rec.checksums_xxh3);
        if (m.framed()) {
            put<uint64_t>(b, at + 48, rec.frame_count);
            put<uint64_t>(b, at + 56, rec.frames_xxh3);
        }
        std::memcpy(b.data() + at + 64, rec.path.data(), std::min<size_t>(rec.path.size(), layer_path_bytes - 1));
        at += layer_record_bytes;
    }
    // memcpy from an empty vector's data() (maybe null) is undefined even for 0 bytes.
    if (!m.extents.empty()) std::memcpy(b.data() + at, m.extents.data(), m.extents.size() * extent_record_bytes);
    at += m.extents.size() * extent_record_bytes;
    if (!m.checksums.empty()) {
        std::memcpy(b.data() + at, m.checksums.data(), m.checksums.size() * checksum_record_bytes);
    }
    at += m.checksums.size() * checksum_record_bytes;
    if (!m.frames.empty()) std::memcpy(b.data() + at, m.frames.data(), m.frames.size() * frame_record_bytes);
    at += m.frames.size() * frame_record_bytes;
    if (!m.packed_order.empty()) {
        std::memcpy(b.data() + at, m.packed_order.data(), m.packed_order.size() * packed_run_record_bytes);
    }
    reseal_manifest(b);
    return out;
}

void reseal_manifest(std::span<std::byte> b) {
    put<uint64_t>(b, 72, hash64(b.subspan(header_bytes)));
    put<uint64_t>(b, header_checksum_offset, hash64(b.first(header_checksum_offset)));
}

std::string load_manifest(const std::string& path, Manifest& m) {
    auto fail = [&](const std::string& cause) { return path + ": " + cause; };
    struct stat st {};
    std::string error;
    auto file = open_regular_file(path, "manifest", error, &st);
    if (!file) return error;
    auto file_size = static_cast<uint64_t>(st.st_size);
    if (file_size < header_bytes) return fail(truncated_header(file_size));
    // The header is checked before the tables are read: a file that is not a
    // manifest (a memory image given by mistake) is refused after 128 bytes.
    std::array<std::byte, header_bytes> header_buf;
    if (auto e = pread_exact(file->get(), header_buf, 0, path); !e.empty()) return e;
    ManifestHeader h;
    if (auto e = check_header(header_buf, file_size, h); !e.empty()) return fail(e);

    // Read each table straight into its final home; hash them as one stream.
    std::vector<std::byte> records(h.layer_count * layer_record_bytes);
    m.extents.resize(h.extent_count);
    m.checksums.resize(h.stored_block_count);
    m.frames.resize(h.frame_count);
    m.packed_order.resize(h.packed_runs);
    std::span<std::byte> packed_bytes(reinterpret_cast<std::byte*>(m.packed_order.data()),
                                      h.packed_runs * packed_run_record_bytes);
    std::span<std::byte> extent_bytes(reinterpret_cast<std::byte*>(m.extents.data()), h.extent_count * extent_record_bytes);
    std::span<std::byte> checksum_bytes(reinterpret_cast<std::byte*>(m.checksums.data()),
                                        h.stored_block_count * checksum_record_bytes);
    std::span<std::byte> frame_bytes(reinterpret_cast<std::byte*>(m.frames.data()), h.frame_count * frame_record_bytes);
    uint64_t at = header_bytes;
    std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> state(XXH3_createState(), &XXH3_freeState);
    if (!state) return fail("out of memory");
    XXH3_64bits_reset(state.get());
    for (std::span<std::byte> part :
         {std::span<std::byte>(records), extent_bytes, checksum_bytes, frame_bytes, packed_bytes}) {
        if (auto e = pread_exact(file->get(), part, at, path); !e.empty()) return e;
        XXH3_64bits_update(state.get(), part.data(), part.size());
        at += part.size();
    }
    if (auto e = finish_manifest(h, records, XXH3_64bits_digest(state.get()), path, m); !e.empty()) return fail(e);
    return {};
}

std::string decode_manifest(std::span<const std::byte> bytes, const std::string& path, Manifest& m) {
    auto fail = [&](const std::string& cause) { return path + ": " + cause; };
    if (bytes.size() < header_bytes) return fail(truncated_header(bytes.size()));
    ManifestHeader h;
    if (auto e = check_header(bytes.first(header_bytes), bytes.size(), h); !e.empty()) return fail(e);
    // check_header made the size exactly header + tables, each table's size from its count.
    auto records = bytes.subspan(header_bytes, h.layer_count * layer_record_bytes);
    auto extent_bytes = bytes.subspan(header_bytes + records.size(), h.extent_count * extent_record_bytes);
    auto checksum_bytes = bytes.subspan(header_bytes + records.size() + extent_bytes.size(),
                                        h.stored_block_count * checksum_record_bytes);
    auto frame_bytes = bytes.subspan(header_bytes + records.size() + extent_bytes.size() + checksum_bytes.size(),
                                     h.frame_count * frame_record_bytes);
    auto packed_bytes = bytes.subspan(header_bytes + records.size() + extent_bytes.size() + checksum_bytes.size() +
                                      frame_bytes.size());
    m.extents.resize(h.extent_count);
    m.checksums.resize(h.stored_block_count);
    m.frames.resize(h.frame_count);
    m.packed_order.resize(h.packed_runs);
    if (!packed_bytes.empty()) std::memcpy(m.packed_order.data(), packed_bytes.data(), packed_bytes.size());
    std::memcpy(m.extents.data(), extent_bytes.data(), extent_bytes.size());
    if (!checksum_bytes.empty()) std::memcpy(m.checksums.data(), checksum_bytes.data(), checksum_bytes.size());
    if (!frame_bytes.empty()) std::memcpy(m.frames.data(), frame_bytes.data(), frame_bytes.size());
    if (auto e = finish_manifest(h, records, hash64(bytes.subspan(header_bytes)), path, m); !e.empty()) return fail(e);
    return {};
}

std::string peek_manifest_header(std::span<const std::byte> header, uint64_t file_size, ManifestHeaderSummary& out) {
    if (header.size() < header_bytes) return truncated_header(header.size());
    ManifestHeader h;
    if (auto e = check_header(header.first(header_bytes), file_size, h); !e.empty()) return e;
    out = {h.block_size_bytes, h.guest_size_bytes, h.layer_count, h.snapshot_id};
    return {};
}

std::array<std::byte, header_bytes> encode_layer_header(const LayerHeader& h) {
    std::array<std::byte, header_bytes> out{};
    std::span<std::byte> b(out);
    std::memcpy(b.data(), layer_magic.data(), layer_magic.size());
    put<uint32_t>(b, 8, h.version);
    put<uint32_t>(b, 12, header_bytes);
    put_id(b, 16, h.id);
    put_id(b, 32, h.snapshot_id);
    put<uint64_t>(b, 48, h.block_size_bytes);
    put<uint64_t>(b, 56, h.block_count);
    put<uint64_t>(b, 64, h.data_offset_bytes);
    put<uint64_t>(b, 72, h.checksums_xxh3);
    put<uint32_t>(b, 80, h.layer_index);
    if (h.version == framed_format_version) {
        put<uint32_t>(b, 84, static_cast<uint32_t>(h.codec));
        put<uint64_t>(b, 88, h.frame_count);
        put<uint64_t>(b, 96, h.frames_xxh3);
    }
    put<uint64_t>(b, header_checksum_offset, hash64(b.first(header_checksum_offset)));
    return out;
}

std::string decode_layer_header(std::span<const std::byte, header_bytes> b, LayerHeader& h) {
    if (std::memcmp(b.data(), layer_magic.data(), layer_magic.size()) != 0) {
        return "not a ringpager layer file (wrong magic)";
    }
    auto version = get<uint32_t>(b, 8);
    if (version != format_version && version != framed_format_version) {
        return "unsupported layer version " + std::to_string(version);
    }
    uint64_t stored = get<uint64_t>(b, header_checksum_offset);
    uint64_t computed = hash64(b.first(header_checksum_offset));
    if (stored != computed) {
        return "layer header checksum mismatch (stored " + hex64(stored) + ", computed " + hex64(computed) + ")";
    }
    h.id = get_id(b, 16);
    h.snapshot_id = get_id(b, 32);
    h.block_size_bytes = get<uint64_t>(b, 48);
    h.block_count = get<uint64_t>(b, 56);
    h.data_offset_bytes = get<uint64_t>(b, 64);
    h.checksums_xxh3 = get<uint64_t>(b, 72);
    h.layer_index = get<uint32_t>(b, 80);
    h.version = version;
    if (version == framed_format_version) {
        h.codec = static_cast<FrameCodec>(get<uint32_t>(b, 84));
        h.frame_count = get<uint64_t>(b, 88);
        h.frames_xxh3 = get<uint64_t>(b, 96);
    }
    return {};
}

bool valid_layer_name(std::string_view name) {
    return std::none_of(name.begin(), name.end(), [](char c) {
        const auto byte = static_cast<unsigned char>(c);
        return byte < 0x20 || byte == 0x7f;
    });
}

std::string hex_id(const LayerId& id) {
    std::string out;
    char byte[3];
    for (uint8_t v : id) {
        std::snprintf(byte, sizeof byte, "%02x", v);
        out += byte;
    }
    return out;
}

std::string hex64(uint64_t value) {
    char text[24];
    std::snprintf(text, sizeof text, "0x%016llx", static_cast<unsigned long long>(value));
    return text;
}

}  // namespace ringpager::layered
