// pack_working_set: `ringpager snapshot pack-ws`, REAP's packed working set.
// The new manifest keeps every layer of the snapshot as it is and appends
// one layer holding the set's non-zero pages in touch order; the extents of
// those pages point into it, so replaying the set reads one file front to
// back (docs/snapshot-format.md, "Packed working-set layer").
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>

#include "ringpager/snapshot.hpp"
#include "snapshot/layered/file_io.hpp"
#include "snapshot/layered/format.hpp"
#include "snapshot/layered/layer_files.hpp"
#include "snapshot/layered/layer_writer.hpp"
#include "snapshot/working_set.hpp"

namespace ringpager {
namespace layered {
namespace {

constexpr uint64_t pack_block_bytes = 4096;
constexpr uint64_t write_batch_blocks = 256;   // 1 MiB per pwritev

// Removes a temporary file unless it was renamed into place.
struct TempFile {
    std::string path;
    bool renamed = false;
    ~TempFile() {
        if (!path.empty() && !renamed) (void)::unlink(path.c_str());   // cleanup: the caller reports its own error
    }
};

std::string base_name(const std::string& path) {
    const size_t slash = path.find_last_of('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

// The snapshot must be one pack-ws can extend: what it refuses, and why, is
// in docs/snapshot-format.md. "" or the cause.
std::string check_packable(const Manifest& m, const PackWorkingSetOptions& o) {
    const std::string& path = o.manifest_path;
    if (m.version != format_version) {
        return path + ": pack-ws packs format version 1 snapshots only (this one is version " +
               std::to_string(m.version) + ", frames); build the snapshot without --compress";
    }
    if (m.block_size_bytes != pack_block_bytes) {
        return path + ": pack-ws needs 4 KiB blocks (this snapshot has " + format_bytes(m.block_size_bytes) +
               " blocks)";
    }
    if (m.packed_ws()) return path + ": already has a packed working-set layer; pack the snapshot it was made from";
    if (m.layers.size() >= max_layer_count) return path + ": has the most layers a manifest can name";
    struct stat in_dir {}, out_dir {};
    const std::string out_directory = parent_directory(o.out_path);
    if (::stat(m.directory.c_str(), &in_dir) != 0) return m.directory + ": " + errno_text("stat");
    if (::stat(out_directory.c_str(), &out_dir) != 0) return out_directory + ": " + errno_text("stat");
    if (in_dir.st_dev != out_dir.st_dev || in_dir.st_ino != out_dir.st_ino) {
        return o.out_path + ": --out must be in the manifest's directory " + m.directory +
               " (the packed manifest names the snapshot's layer files by their paths relative to it)";
    }
    const std::string out_name = base_name(o.out_path);
    if (out_name == base_name(path)) return o.out_path + ": --out must name a new manifest, not the snapshot's own";
    const std::string packed_name = base_name(layer_file_path(o.out_path, static_cast<uint32_t>(m.layers.size())));
    for (const LayerRecord& rec : m.layers) {
        if (rec.path == out_name || rec.path == packed_name) {
            return o.out_path + ": --out would overwrite the snapshot's layer file " + rec.path;
        }
    }
    return {};
}

// Every guest block's location, from the extents.
std::vector<uint64_t> block_locations(const Manifest& m) {
    std::vector<uint64_t> out(m.block_count);
    for (size_t i = 0; i < m.extents.size(); ++i) {
        const Extent& e = m.extents[i];
        for (uint64_t b = e.first_block; b < m.extent_end_block(i); ++b)
            out[b] = is_zero_location(e.location) ? zero_location : e.location + (b - e.first_block);
    }
    return out;
}

// Maximal extents over per-block locations (the builder's rule).
std::vector<Extent> make_extents(const std::vector<uint64_t>& locations) {
    std::vector<Extent> extents;
    uint64_t previous = 0;
    for (uint64_t b = 0; b < locations.size(); ++b) {
        const uint64_t location = locations[b];
        const bool continues = !extents.empty() && (is_zero_location(previous) ? is_zero_location(location)
                                                                               : location == previous + 1);
        if (!continues) extents.push_back({b, location});
        previous = location;
    }
    return extents;
}

class Packer {
public:
    Packer(const PackWorkingSetOptions& o, PackWorkingSetReport& r) : o_(o), r_(r) {}

    std::string run() {
        if (auto e = open_snapshot(o_.manifest_path, m_, files_); !e.empty()) return e;
        if (auto e = check_packable(m_, o_); !e.empty()) return e;
        if (auto e = load_set(); !e.empty()) return e;
        const uint32_t packed = static_cast<uint32_t>(m_.layers.size());
        const std::string layer_path = layer_file_path(o_.out_path, packed);
        if (auto e = LayerWriter::create(layer_path, packed, m_.snapshot_id, pack_block_bytes, writer_); !e.empty())
            return e;
        locations_ = block_locations(m_);
        if (auto e = copy_pages(packed); !e.empty()) return e;
        return write_manifest();
    }

private:
    // The set must be this snapshot's (identity) and in 4 KiB pages.
    std::string load_set() {
        std::string error;
        auto source = open_layered_source(o_.manifest_path, false, error);
        if (!source) return error;
        SnapshotIdentity identity;
        if (!snapshot_identity(*source, identity, error)) return error;
        if (!load_working_set_for(o_.working_set_path, identity, set_, error)) return error;
        if (set_.page_size_bytes != pack_block_bytes) {
            return "working set " + o_.working_set_path + ": recorded with " + std::to_string(set_.page_size_bytes) +
                   "-byte pages; pack-ws packs 4 KiB pages";
        }
        return {};
    }

    // Reads each non-zero page of the set in touch order (checking it
    // against the checksum table) and appends it to the packed layer.
    std::string copy_pages(uint32_t packed) {
        std::vector<std::byte> buffer(write_batch_blocks * pack_block_bytes);
        uint64_t batch = 0, batch_first_slot = 0;
        auto flush = [&]() -> std::string {
            std::vector<iovec> iov{{buffer.data(), batch * pack_block_bytes}};
            if (batch == 0) return {};
            auto e = writer_->write_slots(batch_first_slot, iov);
            batch_first_slot += batch;
            batch = 0;
            return e;
        };
        for (const PageRun& run : set_.runs) {
            for (uint64_t page = run.first_page; page < run.first_page + run.pages; ++page) {
                r_.set_pages++;
                // Pages are memory-file offsets / 4 KiB: Firecracker writes its regions back to back.
                if (page >= m_.block_count) return "working set " + o_.working_set_path + ": page " +
                                                   std::to_string(page) + " is past the snapshot's end";
                const uint64_t location = locations_[page];
                if (is_zero_location(location)) {
                    r_.zero_pages++;
                    continue;
                }
                std::span<std::byte> block(buffer.data() + batch * pack_block_bytes, pack_block_bytes);
                if (auto e = read_block(location, block); !e.empty()) return e;
                const uint64_t slot = writer_->add_block(m_.block_checksum(location_layer(location),
                                                                           location_slot(location)));
                locations_[page] = make_location(packed, slot);
                r_.packed_pages++;
                if (++batch == write_batch_blocks) {
                    if (auto e = flush(); !e.empty()) return e;
                }
            }
        }
        return flush();
    }

    std::string read_block(uint64_t location, std::span<std::byte> out) {
        const uint32_t layer = location_layer(location);
        const uint64_t slot = location_slot(location);
        const uint64_t offset = m_.layers[layer].data_offset_bytes + slot * pack_block_bytes;
        if (auto e = pread_exact(files_[layer].get(), out, offset, m_.layer_path(layer)); !e.empty()) return e;
        const uint64_t read = XXH3_64bits(out.data(), out.size());
        if (read != m_.block_checksum(layer, slot)) {
            return "layer " + std::to_string(layer) + " (" + m_.layer_path(layer) + ") slot " + std::to_string(slot) +
                   ": checksum mismatch (stored " + hex64(m_.block_checksum(layer, slot)) + ", read " + hex64(read) +
                   "); run ringpager snapshot verify";
        }
        return {};
    }

    // Layer first, manifest last, as the builder does.
    std::string write_manifest() {
        if (r_.packed_pages == 0) {
            return "working set " + o_.working_set_path + ": every page of it is zero in " + o_.manifest_path +
                   "; there is nothing to pack";
        }
        LayerRecord record;
        if (auto e = writer_->finish(o_.sync, record, r_.bytes_written); !e.empty()) return e;
        Manifest out = m_;
        out.flags |= manifest_flag_packed_ws;
        out.layers.push_back(record);
        out.checksums.insert(out.checksums.end(), writer_->checksums().begin(), writer_->checksums().end());
        out.extents = make_extents(locations_);
        // The whole set, zero pages too: the replay installs those in their
        // turn (by UFFDIO_ZEROPAGE, nothing read) instead of leaving them to faults.
        for (const PageRun& run : set_.runs) out.packed_order.push_back({run.first_page, run.pages});
        r_.extent_count = out.extents.size();
        const std::vector<std::byte> bytes = encode_manifest(out);
        TempFile temp{o_.out_path + ".tmp"};
        auto file = FileDesc::open(temp.path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (!file) {
            std::string cause = temp.path + ": " + file.error().message();
            temp.path.clear();   // never created, nothing to remove
            return cause;
        }
        if (auto e = pwrite_all(file->get(), bytes, 0, temp.path); !e.empty()) return e;
        if (o_.sync && ::fsync(file->get()) != 0) return temp.path + ": " + errno_text("fsync");
        r_.bytes_written += bytes.size();
        if (auto e = writer_->commit(); !e.empty()) return e;
        if (::rename(temp.path.c_str(), o_.out_path.c_str()) != 0) {
            return temp.path + ": " + errno_text("rename") + " (to " + o_.out_path + ")";
        }
        temp.renamed = true;
        if (o_.sync) {
            auto dir = FileDesc::open(m_.directory.c_str(), O_RDONLY | O_DIRECTORY);
            if (!dir) return m_.directory + ": " + dir.error().message();
            if (::fsync(dir->get()) != 0) return m_.directory + ": " + errno_text("fsync");
        }
        r_.layer_path = writer_->final_path();
        return {};
    }

    const PackWorkingSetOptions& o_;
    PackWorkingSetReport& r_;
    Manifest m_;
    std::vector<FileDesc> files_;
    WorkingSet set_;
    std::unique_ptr<LayerWriter> writer_;
    std::vector<uint64_t> locations_;
};

}  // namespace
}  // namespace layered

bool pack_working_set(const PackWorkingSetOptions& options, PackWorkingSetReport& report, std::string& error) {
    report = PackWorkingSetReport{};
    layered::Packer packer(options, report);
    error = packer.run();
    return error.empty();
}

}  // namespace ringpager
