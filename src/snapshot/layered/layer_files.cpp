#include "snapshot/layered/layer_files.hpp"

#include <sys/stat.h>

#include "common/regular_file.hpp"
#include "snapshot/layered/file_io.hpp"

namespace ringpager::layered {
namespace {

// Compares the decoded header with the manifest's record; "" when they agree.
std::string check_header(const Manifest& m, uint32_t index, const LayerHeader& h) {
    const LayerRecord& rec = m.layers[index];
    if (h.id != rec.id || h.snapshot_id != m.snapshot_id) {
        return "identity mismatch (layer id " + hex_id(h.id) + ", the manifest expects " + hex_id(rec.id) +
               "): the file was swapped or belongs to another snapshot";
    }
    if (h.version != m.version || h.layer_index != index || h.block_size_bytes != m.block_size_bytes ||
        h.block_count != rec.block_count || h.data_offset_bytes != rec.data_offset_bytes ||
        h.checksums_xxh3 != rec.checksums_xxh3 ||
        (m.framed() && (h.codec != m.codec || h.frame_count != rec.frame_count || h.frames_xxh3 != rec.frames_xxh3))) {
        return "header disagrees with the manifest (version, index, block size, block count, data offset, "
               "checksum list, codec or frame list): the file was rewritten";
    }
    return {};
}

}  // namespace

std::string open_layer(const Manifest& m, uint32_t index, FileDesc& out) {
    const LayerRecord& rec = m.layers[index];
    std::string path = m.layer_path(index);
    const std::string what = "layer " + std::to_string(index) + " file";
    const std::string name = what + " " + path;
    struct stat st {};
    std::string error;
    auto file = open_regular_file(path, what, error, &st);
    if (!file) return error + " (named by manifest " + m.path + ")";
    auto size = static_cast<uint64_t>(st.st_size);
    if (size != rec.file_size_bytes) {
        return name + ": size " + std::to_string(size) + " bytes, the manifest expects " +
               std::to_string(rec.file_size_bytes) + " (the file was resized or truncated)";
    }
    std::array<std::byte, header_bytes> bytes;
    if (auto e = pread_exact(file->get(), bytes, 0, name); !e.empty()) return e;
    LayerHeader header;
    if (auto e = decode_layer_header(bytes, header); !e.empty()) return name + ": " + e;
    if (auto e = check_header(m, index, header); !e.empty()) return name + ": " + e;
    out = std::move(*file);
    return {};
}

std::string open_layers(const Manifest& m, std::vector<FileDesc>& out) {
    out.clear();
    out.resize(m.layers.size());
    for (uint32_t i = 0; i < m.layers.size(); ++i) {
        if (auto e = open_layer(m, i, out[i]); !e.empty()) return e;
    }
    return {};
}

std::string open_snapshot(const std::string& manifest_path, Manifest& m, std::vector<FileDesc>& layers) {
    if (auto e = load_manifest(manifest_path, m); !e.empty()) return e;
    return open_layers(m, layers);
}

}  // namespace ringpager::layered
