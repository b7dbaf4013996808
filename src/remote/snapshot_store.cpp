#include "remote/snapshot_store.hpp"

#include <sys/stat.h>
#include <xxhash.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <system_error>
#include <thread>

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

// Parts read and verified in order on the caller's thread, sent by up to
// `parallel_parts` uploader threads (each with its own client, so its own
// connection). At most that many part buffers exist: the reader waits for
// a free one. The first error stops the reading; parts already handed out
// finish (or fail) before the upload is aborted.
class PartUploads {
public:
    PartUploads(const S3Config& config, const S3Location& at, const std::string& upload_id, const PushOptions& options)
        : config_(config), at_(at), upload_id_(upload_id), options_(options) {}
    ~PartUploads() { stop(); }

    // Starts the uploaders: "" or why none could start.
    std::string start(unsigned threads) {
        for (unsigned i = 0; i < threads; ++i) {
            auto client = S3Client::create(config_);
            if (!client) return client.error().message;
            try {
                workers_.emplace_back([this, c = std::shared_ptr<S3Client>(std::move(*client))] { run(*c); });
            } catch (const std::system_error& e) {
                if (workers_.empty()) return std::string("cannot start an upload thread: ") + e.what();
                break;   // fewer threads: still parallel enough
            }
            free_buffers_++;
        }
        return {};
    }
    // A buffer for the next part (waits for one), or nullopt once a part failed.
    std::optional<std::vector<std::byte>> take_buffer(uint64_t bytes, Progress& progress) {
        std::unique_lock lock(mu_);
        changed_.wait(lock, [&] { return free_buffers_ > 0 || !error_.empty(); });
        report_done(lock, progress);
        if (!error_.empty()) return std::nullopt;
        free_buffers_--;
        std::vector<std::byte> buffer = spare_.empty() ? std::vector<std::byte>() : std::move(spare_.back());
        if (!spare_.empty()) spare_.pop_back();
        buffer.resize(bytes);
        return buffer;
    }
    void give_back(std::vector<std::byte> buffer) {
        std::lock_guard lock(mu_);
        spare_.push_back(std::move(buffer));
        free_buffers_++;
    }
    void send(uint32_t number, std::vector<std::byte> bytes) {
        {
            std::lock_guard lock(mu_);
            queue_.push_back({number, std::move(bytes)});
        }
        changed_.notify_all();
    }
    // Waits for every part handed out; the parts in order, or the first error.
    std::string finish(std::vector<CompletedPart>& parts, Progress& progress) {
        std::unique_lock lock(mu_);
        changed_.wait(lock, [&] { return queue_.empty() && busy_ == 0; });
        report_done(lock, progress);
        parts = done_parts_;
        std::sort(parts.begin(), parts.end(), [](const auto& a, const auto& b) { return a.number < b.number; });
        return error_;
    }
    void fail(const std::string& error) {
        std::lock_guard lock(mu_);
        if (error_.empty()) error_ = error;
    }

private:
    struct Part {
        uint32_t number = 0;
        std::vector<std::byte> bytes;
    };
    void run(S3Client& client) {
        std::unique_lock lock(mu_);
        for (;;) {
            changed_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
            if (queue_.empty()) return;   // stopping, nothing left
            Part part = std::move(queue_.front());
            queue_.pop_front();
            busy_++;
            const bool skip = !error_.empty();   // another part failed: the upload is aborted anyway
            lock.unlock();
            std::optional<S3Result<std::string>> etag;
            if (!skip) {
                if (options_.before_part) options_.before_part(part.number);
                etag.emplace(client.upload_part(at_, upload_id_, part.number, part.bytes));
            }
            lock.lock();
            busy_--;
            if (etag && *etag) {
                done_parts_.push_back({part.number, std::move(**etag)});
                done_bytes_.push_back(part.bytes.size());
            } else if (etag && error_.empty()) {
                error_ = etag->error().message;
            }
            spare_.push_back(std::move(part.bytes));
            free_buffers_++;
            changed_.notify_all();
        }
    }
    // mu_ held: progress for the parts acknowledged since the last call (the caller's thread).
    void report_done(std::unique_lock<std::mutex>& lock, Progress& progress) {
        std::vector<uint64_t> sizes;
        sizes.swap(done_bytes_);
        lock.unlock();
        for (uint64_t n : sizes) progress.add(n);
        lock.lock();
    }
    void stop() {
        {
            std::lock_guard lock(mu_);
            stopping_ = true;
        }
        changed_.notify_all();
        for (std::thread& t : workers_) t.join();
    }

    const S3Config& config_;
    const S3Location& at_;
    const std::string& upload_id_;
    const PushOptions& options_;
    std::mutex mu_;
    std::condition_variable changed_;
    std::deque<Part> queue_;
    std::vector<std::vector<std::byte>> spare_;
    std::vector<CompletedPart> done_parts_;
    std::vector<uint64_t> done_bytes_;
    std::string error_;
    unsigned free_buffers_ = 0, busy_ = 0;
    bool stopping_ = false;
    std::vector<std::thread> workers_;   // last: joined before the members above go
};

std::string upload_parts(S3Client& client, const S3Location& at, int fd, const Manifest& m, uint32_t index,
                         StoredChecker& checker, const PushOptions& options, Progress& progress,
                         uint32_t& parts_uploaded) {
    const uint64_t size = m.layers[index].file_size_bytes;
    const std::string name = "layer " + std::to_string(index) + " file " + m.layer_path(index);
    uint64_t part_bytes = options.part_bytes;
    while ((size + part_bytes - 1) / part_bytes > max_part_count) part_bytes *= 2;
    auto upload = client.create_multipart(at);
    if (!upload) return upload.error().message;
    std::vector<CompletedPart> parts;
    std::string error;
    {
        PartUploads uploads(client.config(), at, *upload, options);
        error = uploads.start(std::max(1u, options.parallel_parts));
        uint32_t number = 0;
        for (uint64_t offset = 0; offset < size && error.empty(); offset += part_bytes) {
            auto buffer = uploads.take_buffer(std::min(part_bytes, size - offset), progress);
            if (!buffer) break;   // a part failed: finish() has its error
            error = pread_exact(fd, *buffer, offset, name);
            if (error.empty()) error = checker.feed(offset, *buffer);
            if (!error.empty()) {
                uploads.give_back(std::move(*buffer));
                uploads.fail(error);
                break;
            }
            uploads.send(++number, std::move(*buffer));
        }
        if (error.empty()) error = uploads.finish(parts, progress);
        else (void)uploads.finish(parts, progress);
    }   // the uploaders are joined here
    if (error.empty()) {
        auto done = client.complete_multipart(at, *upload, parts);
        if (done) {
            parts_uploaded += static_cast<uint32_t>(parts.size());
            return {};
        }
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
                            ? upload_parts(client, at, files[i].get(), m, i, checker, options, progress,
                                           report.parts_uploaded)
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
