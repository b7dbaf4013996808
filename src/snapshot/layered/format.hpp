// The on-disk layout of a layered snapshot (docs/snapshot-format.md): the
// manifest header, layer records, extents and block checksums, and the header
// every layer file starts with. Encoding and decoding live here and nowhere
// else; the builder, the Source and the verify tool share them.
#pragma once

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ringpager/snapshot.hpp"

namespace ringpager::layered {

static_assert(std::endian::native == std::endian::little,
              "the snapshot format is little-endian and is read by memcpy");

inline constexpr std::array<char, 8> manifest_magic = {'R', 'P', 'S', 'N', 'A', 'P', 'M', 'F'};
inline constexpr std::array<char, 8> layer_magic = {'R', 'P', 'S', 'N', 'A', 'P', 'L', 'Y'};
inline constexpr uint32_t format_version = 1;          // blocks stored as they are, one per slot
inline constexpr uint32_t framed_format_version = 2;   // blocks stored in frames (compressed or not)

inline constexpr uint64_t header_bytes = 128;        // manifest header and layer header alike
inline constexpr uint64_t header_checksum_offset = 120;
inline constexpr uint64_t layer_record_bytes = 320;
inline constexpr uint64_t layer_path_bytes = 256;     // NUL-terminated inside the record
inline constexpr uint64_t extent_record_bytes = 16;
inline constexpr uint64_t checksum_record_bytes = 8;
inline constexpr uint64_t frame_record_bytes = 24;
inline constexpr uint64_t packed_run_record_bytes = 16;
inline constexpr uint64_t max_frame_bytes = 64 << 20;   // plain bytes of a frame, at most

inline constexpr uint64_t min_block_size_bytes = 4096;
inline constexpr uint64_t max_block_size_bytes = uint64_t{1} << 30;
inline constexpr uint32_t max_layer_count = 0xfffe;   // 0xffff marks a zero extent

// Manifest header flags (offset 44). A reader refuses any bit it does not know.
// packed_ws: the last layer is a packed working set (`snapshot pack-ws`): its
// slots hold the non-zero blocks of a recorded working set in the order the
// guest first touched them, each slot referenced by exactly one guest block,
// and the packed order table (after the checksum table) lists the whole set,
// zero blocks included, in that order.
inline constexpr uint32_t manifest_flag_packed_ws = 1u << 0;
inline constexpr uint32_t known_manifest_flags = manifest_flag_packed_ws;

// A block location packs the layer index into the top 16 bits and the block's
// slot inside that layer into the low 48 bits. All ones in the layer field means
// "zero block". Consecutive slots of one layer are consecutive integers, which is
// what extent run detection relies on.
inline constexpr uint64_t slot_bits = 48;
inline constexpr uint64_t slot_mask = (uint64_t{1} << slot_bits) - 1;
inline constexpr uint64_t zero_location = uint64_t{0xffff} << slot_bits;

inline constexpr uint64_t make_location(uint32_t layer, uint64_t slot) {
    return (uint64_t{layer} << slot_bits) | (slot & slot_mask);
}
inline constexpr bool is_zero_location(uint64_t location) { return (location >> slot_bits) == 0xffff; }
inline constexpr uint32_t location_layer(uint64_t location) {
    return static_cast<uint32_t>(location >> slot_bits);
}
inline constexpr uint64_t location_slot(uint64_t location) { return location & slot_mask; }

using LayerId = std::array<uint8_t, 16>;

// One run of guest blocks, [first_block, next extent's first_block), that is
// either all zero or stored in consecutive slots of one layer. Same bytes on
// disk and in memory.
struct Extent {
    uint64_t first_block = 0;
    uint64_t location = zero_location;
};
static_assert(sizeof(Extent) == extent_record_bytes);

// Version 2: where one frame of a layer is stored. Frame k of a layer holds
// its slots [k * frame_blocks, (k + 1) * frame_blocks), the last one fewer.
// Same bytes on disk and in memory.
struct FrameRecord {
    uint64_t offset = 0;          // file offset of the stored (compressed) bytes
    uint32_t stored_bytes = 0;    // their length
    uint32_t plain_bytes = 0;     // the frame's blocks, decompressed: blocks * block size
    uint64_t checksum = 0;        // XXH3-64 of the stored bytes
};
static_assert(sizeof(FrameRecord) == frame_record_bytes);

// One run of the packed order table: guest blocks [first_block, first_block +
// blocks), touched in that order. Same bytes on disk and in memory.
struct PackedRun {
    uint64_t first_block = 0;
    uint64_t blocks = 0;
};
static_assert(sizeof(PackedRun) == packed_run_record_bytes);

struct LayerRecord {
    LayerId id{};
    uint64_t file_size_bytes = 0;
    uint64_t block_count = 0;       // stored blocks (slots) in the layer file
    uint64_t data_offset_bytes = 0; // file offset of slot 0 (version 2: of frame 0)
    uint64_t checksums_xxh3 = 0;    // XXH3-64 of this layer's slice of the checksum table
    uint64_t frame_count = 0;       // version 2: frames in the layer file
    uint64_t frames_xxh3 = 0;       // version 2: XXH3-64 of this layer's slice of the frame table
    std::string path;               // relative to the manifest's directory
};

struct LayerHeader {
    LayerId id{};
    LayerId snapshot_id{};
    uint32_t layer_index = 0;
    uint64_t block_size_bytes = 0;
    uint64_t block_count = 0;
    uint64_t data_offset_bytes = 0;
    uint64_t checksums_xxh3 = 0;
    uint32_t version = format_version;
    FrameCodec codec = FrameCodec::none;   // version 2
    uint64_t frame_count = 0;              // version 2
    uint64_t frames_xxh3 = 0;              // version 2
};

// Everything a manifest says, decoded and validated.
struct Manifest {
    std::string path;            // as given to load_manifest
    std::string directory;       // layer paths are relative to it ("." when none)
    uint32_t version = format_version;
    uint32_t flags = 0;                    // manifest_flag_*
    uint64_t block_size_bytes = 0;
    uint64_t guest_size_bytes = 0;
    uint64_t block_count = 0;
    LayerId snapshot_id{};
    std::vector<LayerRecord> layers;
    std::vector<Extent> extents;           // sorted by first_block, tiling [0, block_count)
    std::vector<uint64_t> checksums;       // layer 0's slots, then layer 1's, ...
    std::vector<uint64_t> checksum_base;   // index of each layer's slot 0 in `checksums`
    // Version 2 (all zero or empty in version 1).
    FrameCodec codec = FrameCodec::none;
    uint32_t codec_level = 0;              // what the builder used (zstd); informational
    uint64_t frame_blocks = 0;             // blocks per frame
    std::vector<FrameRecord> frames;       // layer 0's frames, then layer 1's, ...
    std::vector<uint64_t> frame_base;      // index of each layer's frame 0 in `frames`
    // packed_ws: the working set's blocks in touch order (zero ones too).
    std::vector<PackedRun> packed_order;
    // Lookup accelerator built by load_manifest: bucket k holds the index of
    // the extent containing guest block k << bucket_shift. There are at most as
    // many buckets as extents, so it costs at most 4 bytes an extent.
    std::vector<uint32_t> bucket_first_extent;
    uint32_t bucket_shift = 0;

    uint64_t extent_end_block(size_t index) const {
        return index + 1 < extents.size() ? extents[index + 1].first_block : block_count;
    }
    // The extent holding guest block `block` (< block_count): a binary search,
    // narrowed by the bucket index when there is one. O(log extents).
    size_t find_extent(uint64_t block) const;
    void build_bucket_index();
    uint64_t block_checksum(uint32_t layer, uint64_t slot) const {
        return checksums[checksum_base[layer] + slot];
    }
    bool framed() const { return version == framed_format_version; }
    // The last layer is a packed working set (manifest_flag_packed_ws).
    bool packed_ws() const { return (flags & manifest_flag_packed_ws) != 0; }
    uint32_t packed_layer() const { return static_cast<uint32_t>(layers.size() - 1); }
    // Blocks must be decompressed before they are served (version 2, zstd or lz4).
    bool compressed() const { return framed() && codec != FrameCodec::none; }
    // Index in `frames` of the frame holding slot `slot` of layer `layer` (version 2).
    uint64_t frame_index(uint32_t layer, uint64_t slot) const { return frame_base[layer] + slot / frame_blocks; }
    // Where layer `index` lives on this machine: directory + "/" + relative path.
    std::string layer_path(uint32_t index) const;
};

// Serialises a manifest (header, layer table, extents, checksums) and seals it:
// fills in table_checksum and header_checksum. `m.path`/`m.directory` are unused.
std::vector<std::byte> encode_manifest(const Manifest& m);

// Recomputes both checksums of an encoded manifest after an edit. Tests use it
// to craft manifests that are well sealed but say something wrong.
void reseal_manifest(std::span<std::byte> manifest_bytes);

// Reads and validates a manifest file: size, magic, version, header checksum,
// table checksum, and internal consistency (extents tile the guest, every data
// extent lies inside its layer). Returns "" or a one-line error naming the file.
std::string load_manifest(const std::string& path, Manifest& out);

// The same checks on a manifest already in memory (`bytes` is the whole file;
// `path` names it in errors and is where layer paths start from). load_manifest
// reads the header first and the tables only once it passed; both share every
// check, so they refuse and accept the same bytes with the same message.
std::string decode_manifest(std::span<const std::byte> bytes, const std::string& path, Manifest& out);

// What the 128 header bytes of a manifest say, once they pass every check a
// reader makes on them alone (magic, version, header checksum, field
// consistency, and `file_size` = header + tables): for listings that read
// only the header (`ringpager snapshot ls s3://...`). Returns "" or the cause.
struct ManifestHeaderSummary {
    uint64_t block_size_bytes = 0;
    uint64_t guest_size_bytes = 0;
    uint32_t layer_count = 0;
    LayerId snapshot_id{};
};
std::string peek_manifest_header(std::span<const std::byte> header, uint64_t file_size, ManifestHeaderSummary& out);

// Layer header: 128 bytes at offset 0 of a layer file.
std::array<std::byte, header_bytes> encode_layer_header(const LayerHeader& h);
// Decodes a layer header of either version; returns "" or the cause (without
// the file name).
std::string decode_layer_header(std::span<const std::byte, header_bytes> bytes, LayerHeader& out);

// XXH3-64 of a layer's slice of the frame table, as its record and header carry it.
uint64_t hash_frames(std::span<const FrameRecord> frames);

// How messages name frame `k` of layer `layer`: "layer 0 (PATH) frame 3 at
// file offset 0x... (N bytes)".
std::string describe_frame(const Manifest& m, uint32_t layer, uint64_t k);

// Version 2: checks every layer's frames against its record (slice inside the
// table, its hash, one frame per frame_blocks slots, stored back to back from
// the data offset to the end of the file, sizes within the codec's bound) and
// fills m.frame_base. Returns "" or the cause (without the manifest's name).
std::string check_frame_table(Manifest& m);

// Where stored blocks start in a layer file: block aligned, and never below
// 4 KiB so the header has a page of its own. For 2 MiB blocks the gap after
// the 4 KiB header is left as a hole, so it costs no storage.
inline constexpr uint64_t layer_data_offset(uint64_t block_size_bytes) {
    return block_size_bytes < 4096 ? 4096 : block_size_bytes;
}

// A layer path may hold any byte but ASCII control characters (0x00-0x1f,
// 0x7f): it is printed in messages and logs, where a newline or an escape
// sequence would forge or hide lines. The builder refuses such names, the
// decoder such manifests.
bool valid_layer_name(std::string_view name);

std::string hex_id(const LayerId& id);
std::string hex64(uint64_t value);   // "0x1f2e..."

}  // namespace ringpager::layered
