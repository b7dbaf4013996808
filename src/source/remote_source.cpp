// RemoteSource: a layered snapshot served from an object store through the
// chunk cache. The extents are the manifest's, as for a local layered
// snapshot; the files are the cache's layer files, which hold a layer's
// bytes at the layer object's own offsets, so a ready block is read exactly
// where a local layer file would have it.
#include "source/remote_source.hpp"

#include <algorithm>

#include "remote/snapshot_store.hpp"
#include "source/frame_source.hpp"
#include "snapshot/layered/extent_place.hpp"
#include "snapshot/layered/file_io.hpp"
#include "snapshot/layered/read_check.hpp"

namespace ringpager::remote {

using namespace layered;

namespace {

class RemoteSource final : public Source {
public:
    RemoteSource(Manifest m, std::string url, std::shared_ptr<ChunkCache> cache, std::vector<int> handles,
                 bool verify_reads)
        : m_(std::move(m)), url_(std::move(url)), cache_(std::move(cache)), handles_(std::move(handles)),
          verify_reads_(verify_reads) {
        for (int h : handles_) fds_.push_back(cache_->layer_fd(h));
    }

    uint64_t size_bytes() const override { return m_.guest_size_bytes; }
    uint64_t block_size_bytes() const override { return m_.block_size_bytes; }
    std::span<const int> file_fds() const override { return fds_; }
    bool verifies_reads() const override { return verify_reads_; }

    // Where the bytes are once their chunk is cached (plan() says whether it is).
    SourceExtent lookup(uint64_t offset, uint64_t max_length_bytes) const override {
        if (offset >= m_.guest_size_bytes) return SourceExtent{};   // precondition broken: an empty zero extent
        const Place p = place(offset, max_length_bytes);
        SourceExtent out;
        out.length_bytes = p.length_bytes;
        if (p.zero) return out;
        out.kind = SourceExtent::Kind::data;
        out.file_index = p.layer;
        out.file_offset = file_offset(p, offset);
        return out;
    }

    ReadPlan plan(uint64_t offset, uint64_t max_length_bytes) const override;
    void fetch(uint64_t offset, uint64_t length_bytes, std::shared_ptr<FetchSink> sink, uint64_t cookie,
               FetchFor why) const override;

    std::string verify(uint64_t offset, std::span<const std::byte> bytes) const override {
        return check_read(m_, offset, bytes);
    }
    std::optional<BlockDigest> block_digest(uint64_t offset) const override {
        if (offset >= m_.guest_size_bytes) return std::nullopt;   // precondition broken
        return manifest_block_digest(m_, offset);
    }
    // A packed working set pushed with its snapshot: replayed first, its
    // layer's chunks fetched front to back ahead of the rest's.
    std::vector<GuestRange> packed_working_set() const override { return manifest_packed_working_set(m_); }

    std::string describe() const override {
        return "layered snapshot " + url_ + " (" + format_bytes(m_.guest_size_bytes) + " in " +
               std::to_string(m_.layers.size()) + " layers, " + format_bytes(m_.block_size_bytes) + " blocks, " +
               std::to_string(m_.extents.size()) + " extents, chunk cache " + cache_->directory() + ")";
    }

private:
    using Place = ExtentPlace;
    Place place(uint64_t offset, uint64_t max) const { return place_in(m_, offset, max); }
    uint64_t file_offset(const Place& p, uint64_t offset) const {
        return m_.layers[p.layer].data_offset_bytes + p.slot * m_.block_size_bytes + offset % m_.block_size_bytes;
    }

    Manifest m_;
    std::string url_;
    std::shared_ptr<ChunkCache> cache_;
    std::vector<int> handles_;   // the cache's handle of each manifest layer
    std::vector<int> fds_;
    bool verify_reads_;
};

ReadPlan RemoteSource::plan(uint64_t offset, uint64_t max_length_bytes) const {
    if (offset >= m_.guest_size_bytes) return ReadPlan{};   // precondition broken: an empty zero plan
    const Place p = place(offset, max_length_bytes);
    if (p.zero) return ReadPlan{ReadPlan::Kind::zero, 0, 0, p.length_bytes};
    const int h = handles_[p.layer];
    const uint64_t cs = cache_->chunk_slots(h);
    if (!cache_->ready(h, p.slot / cs)) {
        // The whole range asked for: fetch() finds the chunks it needs, so a
        // prefetch batch spanning several has them fetched side by side.
        return ReadPlan{ReadPlan::Kind::fetch, 0, 0, std::min(max_length_bytes, m_.guest_size_bytes - offset)};
    }
    // The run goes on through the extent's next chunks while they are ready too.
    uint64_t covered = std::min((p.slot / cs + 1) * cs, p.slot_end);
    while (covered < p.slot_end && cache_->ready(h, covered / cs)) covered = std::min(covered + cs, p.slot_end);
    const uint64_t bs = m_.block_size_bytes;
    const uint64_t length = std::min(p.length_bytes, (covered - p.slot) * bs - offset % bs);
    return ReadPlan{ReadPlan::Kind::ready, p.layer, file_offset(p, offset), length};
}

void RemoteSource::fetch(uint64_t offset, uint64_t length_bytes, std::shared_ptr<FetchSink> sink, uint64_t cookie,
                         FetchFor why) const {
    // Every chunk a data block of the range lives in.
    std::vector<ChunkCache::ChunkRef> chunks;
    const uint64_t size = m_.guest_size_bytes, bs = m_.block_size_bytes;
    const uint64_t end = offset < size ? offset + std::min(length_bytes, size - offset) : 0;
    for (uint64_t at = offset; at < end;) {
        const Place p = place(at, end - at);
        if (!p.zero) {
            const int h = handles_[p.layer];
            const uint64_t cs = cache_->chunk_slots(h);
            const uint64_t last = p.slot + (at % bs + p.length_bytes - 1) / bs;
            for (uint64_t c = p.slot / cs; c <= last / cs; ++c) chunks.push_back({h, c});
        }
        at += p.length_bytes;
    }
    std::sort(chunks.begin(), chunks.end(),
              [](const auto& a, const auto& b) { return a.layer != b.layer ? a.layer < b.layer : a.chunk < b.chunk; });
    chunks.erase(std::unique(chunks.begin(), chunks.end(),
                             [](const auto& a, const auto& b) { return a.layer == b.layer && a.chunk == b.chunk; }),
                 chunks.end());
    cache_->request(chunks, why == FetchFor::fault, std::move(sink), cookie);
}

// The stored frames of a compressed snapshot in the store: chunk `k` of a
// compressed layer's cache entry is its frame `k`.
class RemoteFrames final : public StoredFrames {
public:
    RemoteFrames(const Manifest& m, std::shared_ptr<ChunkCache> cache, std::vector<int> handles)
        : cache_(std::move(cache)), handles_(std::move(handles)), frame_base_(m.frame_base) {}

    bool present(uint64_t index) const override {
        const Ref r = ref(index);
        return cache_->ready(r.layer, r.chunk);
    }
    void bring(std::span<const uint64_t> frames, FetchFor why, std::shared_ptr<FetchSink> sink,
               uint64_t cookie) const override {
        std::vector<Ref> chunks;
        chunks.reserve(frames.size());
        for (uint64_t index : frames) chunks.push_back(ref(index));
        cache_->request(chunks, why == FetchFor::fault, std::move(sink), cookie);
    }
    std::string describe() const override { return "frames fetched into chunk cache " + cache_->directory(); }

private:
    using Ref = ChunkCache::ChunkRef;
    Ref ref(uint64_t index) const {
        // The last layer whose first frame is at or before `index`.
        const auto it = std::upper_bound(frame_base_.begin(), frame_base_.end(), index);
        const auto layer = static_cast<size_t>(it - frame_base_.begin()) - 1;
        return Ref{handles_[layer], index - frame_base_[layer]};
    }

    std::shared_ptr<ChunkCache> cache_;
    std::vector<int> handles_;            // the cache's handle of each manifest layer
    std::vector<uint64_t> frame_base_;    // the manifest's
};

}  // namespace

std::unique_ptr<Source> open_remote_source(S3Client& client, const S3Location& manifest,
                                           std::shared_ptr<ChunkCache> cache, const LayeredSourceOptions& options,
                                           std::string& error) {
    auto bytes = client.get(manifest, max_manifest_bytes);
    if (!bytes) {
        error = bytes.error().message;
        return nullptr;
    }
    Manifest m;
    if (error = decode_manifest(*bytes, manifest.url(), m); !error.empty()) return nullptr;
    std::vector<int> handles;
    for (uint32_t i = 0; i < m.layers.size(); ++i) {
        const S3Location object{manifest.bucket, layer_key(m.layers[i].id)};
        auto info = client.head(object);
        if (!info) {
            error = manifest.url() + ": layer " + std::to_string(i) + ": " + info.error().message;
            return nullptr;
        }
        if (info->size_bytes != m.layers[i].file_size_bytes) {
            error = object.url() + ": " + std::to_string(info->size_bytes) + " bytes, the manifest " + manifest.url() +
                    " says " + std::to_string(m.layers[i].file_size_bytes) + "; push the snapshot again";
            return nullptr;
        }
        const int h = cache->add_layer(object, m, i, error);
        if (h < 0) return nullptr;
        handles.push_back(h);
    }
    if (m.compressed()) {
        std::vector<int> fds;
        for (int h : handles) fds.push_back(cache->layer_fd(h));
        // The decompressed frames stay beside the chunks, under the cache's
        // lock: an engine started again on the directory reuses them.
        LayeredSourceOptions kept = options;
        kept.decompress_dir = cache->directory();
        kept.keep_decompressed = true;
        auto frames = std::make_shared<const RemoteFrames>(m, std::move(cache), std::move(handles));
        return open_frame_source(std::move(m), std::move(fds), std::move(frames), kept, error);
    }
    return std::make_unique<RemoteSource>(std::move(m), manifest.url(), std::move(cache), std::move(handles),
                                          options.verify_reads);
}

}  // namespace ringpager::remote
