#include "remote/snapshot_store.hpp"

#include <sys/stat.h>
#include <xxhash.h>

#include <chrono>
#include <memory>
#include <set>

#include "common/regular_file.hpp"
#include "snapshot/layered/describe.hpp"
#include "snapshot/layered/file_io.hpp"
#include "snapshot/layered/layer_files.hpp"

namespace ringpager::remote {
namespace {

using namespace layered;

// Re-hashes a layer's stored bytes as they stream past in file order against
// the manifest: a layer that changed on disk since it was built is never
// pushed. Version 1 (and version 2 without compression) checks every block
// against its checksum; a compressed layer checks every frame's stored bytes
// against the frame's checksum (its blocks are checked when a server
// decompresses it).
class StoredChecker {
public:
    StoredChecker(const Manifest& m, uint32_t layer)
        : m_(m), layer_(layer), state_(XXH3_createState(), &XXH3_freeState) {
        if (state_) XXH3_64bits_reset(state_.get());
    }

    // `bytes` are the file's bytes at [offset, offset + size), fed in order without gaps.
    std::string feed(uint64_t offset, std::span<const std::byte> bytes) {
        if (!state_) return "out of memory";
        const LayerRecord& rec = m_.layers[layer_];
        uint64_t skip = offset < rec.data_offset_bytes ? std::min<uint64_t>(rec.data_offset_bytes - offset, bytes.size()) : 0;
        bytes = bytes.subspan(skip);   // the header and its padding were checked when the file was opened
        while (!bytes.empty() && unit_ < units()) {
            const uint64_t unit_bytes = unit_length(unit_);
            size_t take = std::min<uint64_t>(unit_bytes - in_unit_, bytes.size());
            XXH3_64bits_update(state_.get(), bytes.data(), take);
            bytes = bytes.subspan(take);
            in_unit_ += take;
            if (in_unit_ < unit_bytes) break;
            if (auto e = finish_unit(); !e.empty()) return e;
        }
        return {};
    }
    uint64_t verified() const { return verified_; }

private:
    bool frames() const { return m_.compressed(); }
    uint64_t units() const { return frames() ? m_.layers[layer_].frame_count : m_.layers[layer_].block_count; }
    uint64_t unit_length(uint64_t i) const {
        return frames() ? m_.frames[m_.frame_base[layer_] + i].stored_bytes : m_.block_size_bytes;
    }
    std::string finish_unit() {
        const LayerRecord& rec = m_.layers[layer_];
        const uint64_t read = XXH3_64bits_digest(state_.get());
        const uint64_t stored =
            frames() ? m_.frames[m_.frame_base[layer_] + unit_].checksum : m_.block_checksum(layer_, unit_);
        if (read != stored) {
            const std::string what =
                frames() ? "frame " + std::to_string(unit_) + " (file offset " +
                               hex64(m_.frames[m_.frame_base[layer_] + unit_].offset) + ")"
                         : "slot " + std::to_string(unit_) + " (file offset " +
                               hex64(rec.data_offset_bytes + unit_ * m_.block_size_bytes) + ")";
            return "layer " + m_.layer_path(layer_) + " " + what + ": checksum mismatch (stored " + hex64(stored) +
                   ", read " + hex64(read) + "): the file changed since it was built; nothing of it was pushed";
        }
        verified_ += frames() ? m_.frames[m_.frame_base[layer_] + unit_].plain_bytes / m_.block_size_bytes : 1;
        ++unit_;
        in_unit_ = 0;
        XXH3_64bits_reset(state_.get());
        return {};
    }

    const Manifest& m_;
    uint32_t layer_;
    std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> state_;
    uint64_t unit_ = 0;      // block (slot) or frame
    uint64_t in_unit_ = 0;
    uint64_t verified_ = 0;  // blocks
};

struct Progress {
    const PushOptions& options;
    uint64_t done = 0;
    uint64_t total = 0;
    void add(uint64_t bytes) {
        done += bytes;
        if (options.progress) options.progress(done, total);
    }
};

std::string upload_whole(S3Client& client, const S3Location& at, int fd, const Manifest& m, uint32_t index,
                         StoredChecker& checker, Progress& progress) {
    const uint64_t size = m.layers[index].file_size_bytes;
    std::vector<std::byte> bytes(size);
    const std::string name = "layer " + std::to_string(index) + " file " + m.layer_path(index);
    if (auto e = pread_exact(fd, bytes, 0, name); !e.empty()) return e;
    if (auto e = checker.feed(0, bytes); !e.empty()) return e;
    auto put = client.put(at, bytes);
    if (!put) return put.error().message;
    progress.add(size);
    return {};
}

std::string upload_parts(S3Client& client, const S3Location& at, int fd, const Manifest& m, uint32_t index,
                         StoredChecker& checker, const PushOptions& options, Progress& progress) {
    const uint64_t size = m.layers[index].file_size_bytes;
    const std::string name = "layer " + std::to_string(index) + " file " + m.layer_path(index);
    uint64_t part_bytes = options.part_bytes;
    while ((size + part_bytes - 1) / part_bytes > max_part_count) part_bytes *= 2;
    auto upload = client.create_multipart(at);
    if (!upload) return upload.error().message;
    std::vector<std::byte> buffer(part_bytes);
    std::vector<CompletedPart> parts;
    std::string error;
    for (uint64_t offset = 0; offset < size && error.empty(); offset += part_bytes) {
        auto piece = std::span(buffer).first(std::min(part_bytes, size - offset));
        error = pread_exact(fd, piece, offset, name);
        if (error.empty()) error = checker.feed(offset, piece);
        if (!error.empty()) break;
        auto number = static_cast<uint32_t>(parts.size() + 1);
        auto etag = client.upload_part(at, *upload, number, piece);
        if (!etag) {
            error = etag.error().message;
            break;
        }
        parts.push_back({number, std::move(*etag)});
        progress.add(piece.size());
    }
    if (error.empty()) {
        auto done = client.complete_multipart(at, *upload, parts);
        if (done) return {};
        error = done.error().message;
    }
    (void)client.abort_multipart(at, *upload);   // best effort: the error that stopped us is what the user needs
    return error;
}

// Reads the manifest once: the bytes validated are the bytes uploaded.
std::string read_manifest(const std::string& path, std::vector<std::byte>& bytes) {
    struct stat st {};
    std::string error;
    auto file = open_regular_file(path, "manifest", error, &st);
    if (!file) return error;
    auto size = static_cast<uint64_t>(st.st_size);
    if (size > max_manifest_bytes) {
        return path + ": " + std::to_string(size) + " bytes, larger than any manifest this ringpager pushes (" +
               std::to_string(max_manifest_bytes) + ")";
    }
    bytes.resize(size);
    return pread_exact(file->get(), bytes, 0, path);
}

}  // namespace

std::string layer_key(const LayerId& id) { return std::string(layer_prefix) + hex_id(id) + ".rpl"; }

std::string push_snapshot(S3Client& client, const std::string& manifest_path, const S3Location& destination,
                          const PushOptions& options, PushReport& report) {
    auto start = std::chrono::steady_clock::now();
    report = PushReport{};
    if (options.part_bytes < min_part_bytes || options.multipart_threshold_bytes < options.part_bytes) {
        return "push: parts must be at least 5 MiB and the multipart threshold at least one part";
    }
    if (destination.key.rfind(layer_prefix, 0) == 0) {
        return destination.url() + ": names under " + std::string(layer_prefix) + " hold layers; choose another name";
    }
    std::vector<std::byte> manifest_bytes;
    if (auto e = read_manifest(manifest_path, manifest_bytes); !e.empty()) return e;
    Manifest m;
    if (auto e = decode_manifest(manifest_bytes, manifest_path, m); !e.empty()) return e;
    std::vector<FileDesc> files;
    if (auto e = open_layers(m, files); !e.empty()) return e;

    // Which layers the bucket lacks (same key and size: already there).
    Progress progress{options, 0, manifest_bytes.size()};
    std::vector<uint32_t> missing;
    std::set<std::string> seen;
    for (uint32_t i = 0; i < m.layers.size(); ++i) {
        std::string key = layer_key(m.layers[i].id);
        if (!seen.insert(key).second) continue;   // one object per id, however often a manifest names it
        auto info = client.head({destination.bucket, key});
        if (info && info->size_bytes == m.layers[i].file_size_bytes) {
            ++report.layers_present;
            report.bytes_skipped += info->size_bytes;
            continue;
        }
        if (!info && info.error().kind != S3Error::Kind::not_found) return info.error().message;
        missing.push_back(i);   // absent, or a wrong-sized leftover that the right bytes replace
        progress.total += m.layers[i].file_size_bytes;
    }
    for (uint32_t i : missing) {
        S3Location at{destination.bucket, layer_key(m.layers[i].id)};
        StoredChecker checker(m, i);
        std::string e = m.layers[i].file_size_bytes > options.multipart_threshold_bytes
                            ? upload_parts(client, at, files[i].get(), m, i, checker, options, progress)
                            : upload_whole(client, at, files[i].get(), m, i, checker, progress);
        if (!e.empty()) return e;
        ++report.layers_uploaded;
        report.bytes_uploaded += m.layers[i].file_size_bytes;
        report.blocks_verified += checker.verified();
    }
    auto put = client.put(destination, manifest_bytes);
    if (!put) return put.error().message;
    progress.add(manifest_bytes.size());
    report.manifest_bytes = manifest_bytes.size();
    report.bytes_uploaded += manifest_bytes.size();
    report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return {};
}

std::string list_snapshots(S3Client& client, const S3Location& prefix, RemoteListing& out, uint64_t max_objects) {
    out = RemoteListing{};
    auto objects = client.list(prefix.bucket, prefix.key, max_objects);
    if (!objects) return objects.error().message;
    for (const ObjectSummary& o : *objects) {
        if (o.key.rfind(layer_prefix, 0) == 0) continue;
        RemoteSnapshot s{o.key, o.size_bytes, o.last_modified, {}};
        if (o.size_bytes < header_bytes || o.size_bytes > max_manifest_bytes) {
            ++out.other_objects;
            continue;
        }
        std::array<std::byte, header_bytes> header;
        auto got = client.get_range({prefix.bucket, o.key}, 0, header);
        if (!got && got.error().kind == S3Error::Kind::not_found) continue;   // deleted since the listing
        if (!got) return got.error().message;
        if (!peek_manifest_header(header, o.size_bytes, s.header).empty()) {
            ++out.other_objects;
            continue;
        }
        out.snapshots.push_back(std::move(s));
    }
    return {};
}

std::string inspect_remote_snapshot(S3Client& client, const S3Location& manifest, SnapshotInfo& info) {
    info = SnapshotInfo{};
    auto bytes = client.get(manifest, max_manifest_bytes);
    if (!bytes) return bytes.error().message;
    Manifest m;
    if (auto e = decode_manifest(*bytes, manifest.url(), m); !e.empty()) return e;
    describe_manifest(m, info);
    info.manifest_size_bytes = bytes->size();
    for (uint32_t i = 0; i < m.layers.size(); ++i) {
        S3Location at{manifest.bucket, layer_key(m.layers[i].id)};
        SnapshotLayerInfo& layer = info.layers[i];
        layer.resolved_path = at.url();
        auto head = client.head(at);
        if (!head) {
            layer.status = head.error().message;
        } else if (head->size_bytes != m.layers[i].file_size_bytes) {
            layer.status = at.url() + ": size " + std::to_string(head->size_bytes) + " bytes, the manifest expects " +
                           std::to_string(m.layers[i].file_size_bytes);
        }
    }
    return {};
}

}  // namespace ringpager::remote
