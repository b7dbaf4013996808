#include "snapshot/layered/read_check.hpp"

#include <xxhash.h>

#include "snapshot/layered/file_io.hpp"

namespace ringpager::layered {

std::string check_read(const Manifest& m, uint64_t offset, std::span<const std::byte> bytes) {
    const uint64_t bs = m.block_size_bytes;
    if (offset % bs != 0 || bytes.size() % bs != 0 || offset > m.guest_size_bytes ||
        bytes.size() > m.guest_size_bytes - offset) {
        return "snapshot " + m.path + ": cannot verify " + std::to_string(bytes.size()) + " bytes at guest offset " +
               hex64(offset) + " (not block aligned or past the guest size)";
    }
    size_t index = bytes.empty() ? 0 : m.find_extent(offset / bs);
    for (uint64_t at = 0; at < bytes.size(); at += bs) {
        uint64_t block = (offset + at) / bs;
        while (m.extent_end_block(index) <= block) ++index;
        const Extent& e = m.extents[index];
        const std::byte* p = bytes.data() + at;
        if (is_zero_location(e.location)) {
            if (!is_zero_block(p, bs)) {
                return "snapshot " + m.path + " block at guest offset " + hex64(block * bs) +
                       ": expected a zero block, read non-zero bytes";
            }
            continue;
        }
        uint32_t layer = location_layer(e.location);
        uint64_t slot = location_slot(e.location) + (block - e.first_block);
        uint64_t stored = m.block_checksum(layer, slot);
        uint64_t read = XXH3_64bits(p, bs);
        if (stored != read) {
            // A compressed block was read from the decompressed-frame cache, not from the layer file.
            const uint64_t file_offset = m.layers[layer].data_offset_bytes + slot * bs;
            const std::string from = m.compressed() ? "frame " + std::to_string(slot / m.frame_blocks) +
                                                          ", read from the decompressed-frame cache"
                                                    : "file offset " + hex64(file_offset);
            return "layer " + m.layer_path(layer) + " block at guest offset " + hex64(block * bs) + " (" + from +
                   "): checksum mismatch (stored " + hex64(stored) + ", read " + hex64(read) + ")";
        }
    }
    return {};
}

BlockDigest manifest_block_digest(const Manifest& m, uint64_t offset) {
    const uint64_t block = offset / m.block_size_bytes;
    const Extent& e = m.extents[m.find_extent(block)];
    BlockDigest out;
    out.block_size_bytes = m.block_size_bytes;
    out.zero = is_zero_location(e.location);
    if (!out.zero) out.xxh3 = m.block_checksum(location_layer(e.location), location_slot(e.location) + (block - e.first_block));
    return out;
}

std::vector<GuestRange> manifest_packed_working_set(const Manifest& m) {
    std::vector<GuestRange> out;
    out.reserve(m.packed_order.size());
    for (const PackedRun& r : m.packed_order) out.push_back({r.first_block * m.block_size_bytes, r.blocks * m.block_size_bytes});
    return out;
}

}  // namespace ringpager::layered
