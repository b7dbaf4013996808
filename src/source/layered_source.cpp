// LayeredSource: serves a layered snapshot to the reactor. lookup() is a
// binary search over the manifest's extents and never touches the files; the
// reactor reads the bytes itself through its ring.
#include <algorithm>

#include "ringpager/snapshot.hpp"
#include "snapshot/layered/file_io.hpp"
#include "snapshot/layered/format.hpp"
#include "snapshot/layered/layer_files.hpp"
#include "snapshot/layered/read_check.hpp"
#include "source/frame_source.hpp"

namespace ringpager {
namespace layered {
namespace {

class LayeredSource final : public Source {
public:
    LayeredSource(Manifest manifest, std::vector<FileDesc> files, bool verify_reads)
        : m_(std::move(manifest)), files_(std::move(files)), verify_reads_(verify_reads) {
        for (const FileDesc& f : files_) fds_.push_back(f.get());
    }

    uint64_t size_bytes() const override { return m_.guest_size_bytes; }
    uint64_t block_size_bytes() const override { return m_.block_size_bytes; }
    std::span<const int> file_fds() const override { return fds_; }
    bool verifies_reads() const override { return verify_reads_; }

    SourceExtent lookup(uint64_t offset, uint64_t max_length_bytes) const override {
        if (offset >= m_.guest_size_bytes) return SourceExtent{};   // precondition broken: an empty zero extent
        size_t index = m_.find_extent(offset / m_.block_size_bytes);
        const Extent& e = m_.extents[index];
        uint64_t extent_begin = e.first_block * m_.block_size_bytes;
        uint64_t extent_end = m_.extent_end_block(index) * m_.block_size_bytes;
        SourceExtent out;
        out.length_bytes = std::min(extent_end - offset, max_length_bytes);
        if (is_zero_location(e.location)) return out;
        uint32_t layer = location_layer(e.location);
        out.kind = SourceExtent::Kind::data;
        out.file_index = layer;
        out.file_offset = m_.layers[layer].data_offset_bytes +
                          location_slot(e.location) * m_.block_size_bytes + (offset - extent_begin);
        return out;
    }

    std::string verify(uint64_t offset, std::span<const std::byte> bytes) const override {
        return check_read(m_, offset, bytes);
    }
    std::optional<BlockDigest> block_digest(uint64_t offset) const override {
        if (offset >= m_.guest_size_bytes) return std::nullopt;   // precondition broken
        return manifest_block_digest(m_, offset);
    }

    // The packed order table: the set in touch order, zero blocks too (the
    // loader proved its data blocks are the packed layer's slots in order).
    std::vector<GuestRange> packed_working_set() const override { return manifest_packed_working_set(m_); }

    std::string describe() const override {
        return "layered snapshot " + m_.path + " (" + format_bytes(m_.guest_size_bytes) + " in " +
               std::to_string(m_.layers.size()) + " layers, " + format_bytes(m_.block_size_bytes) + " blocks, " +
               std::to_string(m_.extents.size()) + " extents)";
    }

private:
    Manifest m_;
    std::vector<FileDesc> files_;
    std::vector<int> fds_;
    bool verify_reads_;
};

}  // namespace
}  // namespace layered

std::unique_ptr<Source> open_layered_source(const std::string& manifest_path, const LayeredSourceOptions& options,
                                            std::string& error) {
    layered::Manifest m;
    std::vector<FileDesc> files;
    error = layered::open_snapshot(manifest_path, m, files);
    if (!error.empty()) return nullptr;
    // Uncompressed frames (version 2, codec none) keep every slot where
    // version 1 has it: they are served the same way.
    if (m.compressed()) return open_frame_source(std::move(m), std::move(files), options, error);
    return std::make_unique<layered::LayeredSource>(std::move(m), std::move(files), options.verify_reads);
}

std::unique_ptr<Source> open_layered_source(const std::string& manifest_path, bool verify_reads, std::string& error) {
    LayeredSourceOptions options;
    options.verify_reads = verify_reads;
    return open_layered_source(manifest_path, options, error);
}

}  // namespace ringpager
