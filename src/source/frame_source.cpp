// FrameSource: serves a compressed layered snapshot. lookup() and plan() are
// the layered source's extent search; a data block is served from the
// decompressed-frame cache file (listed after the layer files) once its frame
// is there, and fetched (decompressed by the cache's workers) before that. A
// block that duplicates one in another frame (dedup across layers and frames)
// is served from that frame: one decompression serves every reference.
//
// With StoredFrames (a snapshot in an object store) a frame whose stored
// bytes are not in their layer file yet is brought in first, then handed to
// the workers. The fetch's callback holds the frame cache (and through it
// the manifest) by shared ownership, so a source destroyed while a fetch is
// in flight leaves the cache to the callback: it queues the frames, and the
// cache's destructor (wherever the last owner lets go: never a worker, which
// owns nothing) joins the workers after they finished.
#include "source/frame_source.hpp"

#include <algorithm>

#include "snapshot/layered/extent_place.hpp"
#include "snapshot/layered/file_io.hpp"
#include "snapshot/layered/read_check.hpp"

namespace ringpager {

using namespace layered;

namespace {

// A fetch's second step: once the stored frames are in, decompress them.
class DecompressAfter final : public FetchSink {
public:
    DecompressAfter(std::shared_ptr<FrameCache> cache, std::vector<uint64_t> frames, std::shared_ptr<FetchSink> sink)
        : cache_(std::move(cache)), frames_(std::move(frames)), sink_(std::move(sink)) {}
    void fetched(uint64_t cookie, const std::string& error) override {
        if (!error.empty()) return sink_->fetched(cookie, error);
        cache_->request(frames_, std::move(sink_), cookie);
    }

private:
    std::shared_ptr<FrameCache> cache_;
    std::vector<uint64_t> frames_;
    std::shared_ptr<FetchSink> sink_;
};

class FrameSource final : public Source {
public:
    FrameSource(Manifest m, std::vector<FileDesc> files, std::vector<int> fds,
                std::shared_ptr<const StoredFrames> stored, bool verify_reads)
        : manifest_(std::make_shared<const Manifest>(std::move(m))), m_(*manifest_), files_(std::move(files)),
          fds_(std::move(fds)), verify_reads_(verify_reads), stored_(std::move(stored)) {
        for (const FileDesc& f : files_) fds_.push_back(f.get());
    }

    // Called once, before the source is shared: the cache's file joins the list.
    std::string start(const LayeredSourceOptions& options) {
        std::vector<int> layer_fds = fds_;
        if (auto e = FrameCache::create(manifest_, layer_fds, options.decompress_dir, options.decompress_threads,
                                        options.keep_decompressed, cache_);
            !e.empty()) {
            return m_.path + ": " + e;
        }
        fds_.push_back(cache_->fd());
        return {};
    }

    uint64_t size_bytes() const override { return m_.guest_size_bytes; }
    uint64_t block_size_bytes() const override { return m_.block_size_bytes; }
    std::span<const int> file_fds() const override { return fds_; }
    bool verifies_reads() const override { return verify_reads_; }

    // Where the bytes are once their frame is decompressed (plan() says
    // whether it is).
    SourceExtent lookup(uint64_t offset, uint64_t max_length_bytes) const override {
        if (offset >= m_.guest_size_bytes) return SourceExtent{};   // precondition broken: an empty zero extent
        const Place p = place(offset, max_length_bytes);
        SourceExtent out;
        out.length_bytes = p.length_bytes;
        if (p.zero) return out;
        out.kind = SourceExtent::Kind::data;
        out.file_index = cache_index();
        out.file_offset = cache_offset(p, offset);
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

    std::string describe() const override {
        return "layered snapshot " + m_.path + " (" + format_bytes(m_.guest_size_bytes) + " in " +
               std::to_string(m_.layers.size()) + " layers, " + format_bytes(m_.block_size_bytes) + " blocks, " +
               std::to_string(m_.extents.size()) + " extents, " + std::to_string(m_.frames.size()) + " " +
               codec_name(m_.codec) + " frames of " + format_bytes(m_.frame_blocks * m_.block_size_bytes) +
               ", decompressed by " + std::to_string(cache_->threads()) + " threads into " + cache_->directory() +
               (stored_ ? ", " + stored_->describe() : std::string()) + ")";
    }

    FrameCacheStats stats() const { return cache_->stats(); }

private:
    using Place = ExtentPlace;
    Place place(uint64_t offset, uint64_t max) const { return place_in(m_, offset, max); }
    uint32_t cache_index() const { return static_cast<uint32_t>(m_.layers.size()); }
    uint64_t cache_offset(const Place& p, uint64_t offset) const {
        return (m_.checksum_base[p.layer] + p.slot) * m_.block_size_bytes + offset % m_.block_size_bytes;
    }

    std::shared_ptr<const Manifest> manifest_;   // shared with the frame cache
    const Manifest& m_;                          // *manifest_
    std::vector<FileDesc> files_;                // local layer files (none when `stored_` owns them)
    std::vector<int> fds_;                       // the layer files, then the cache file
    bool verify_reads_;
    std::shared_ptr<const StoredFrames> stored_;   // null: every frame is in its local layer file
    std::shared_ptr<FrameCache> cache_;   // last: its workers use the layer files above
};

ReadPlan FrameSource::plan(uint64_t offset, uint64_t max_length_bytes) const {
    if (offset >= m_.guest_size_bytes) return ReadPlan{};   // precondition broken: an empty zero plan
    const Place p = place(offset, max_length_bytes);
    if (p.zero) return ReadPlan{ReadPlan::Kind::zero, 0, 0, p.length_bytes};
    const uint64_t fb = m_.frame_blocks;
    if (!cache_->ready(m_.frame_index(p.layer, p.slot))) {
        // The whole range asked for: fetch() works out which frames it needs,
        // so a prefetch batch spanning several frames has them decompressed
        // side by side.
        return ReadPlan{ReadPlan::Kind::fetch, 0, 0, std::min(max_length_bytes, m_.guest_size_bytes - offset)};
    }
    // Frames of one layer follow each other in the cache: the run goes on
    // through the extent's next frames while they are ready too.
    uint64_t covered = std::min((p.slot / fb + 1) * fb, p.slot_end);
    while (covered < p.slot_end && cache_->ready(m_.frame_index(p.layer, covered))) {
        covered = std::min(covered + fb, p.slot_end);
    }
    const uint64_t bs = m_.block_size_bytes;
    const uint64_t length = std::min(p.length_bytes, (covered - p.slot) * bs - offset % bs);
    return ReadPlan{ReadPlan::Kind::ready, cache_index(), cache_offset(p, offset), length};
}

// Frames are decompressed in the order asked for: a fault waits behind at
// most what the workers hold (`why` orders only the fetches of stored frames).
void FrameSource::fetch(uint64_t offset, uint64_t length_bytes, std::shared_ptr<FetchSink> sink, uint64_t cookie,
                        FetchFor why) const {
    // Every frame a data block of the range lives in, that is not ready yet.
    std::vector<uint64_t> frames;
    const uint64_t size = m_.guest_size_bytes;
    const uint64_t end = offset < size ? offset + std::min(length_bytes, size - offset) : 0;
    for (uint64_t at = offset; at < end;) {
        const Place p = place(at, end - at);
        if (!p.zero) {
            const uint64_t last = p.slot + (at % m_.block_size_bytes + p.length_bytes - 1) / m_.block_size_bytes;
            for (uint64_t s = p.slot / m_.frame_blocks; s <= last / m_.frame_blocks; ++s) {
                const uint64_t index = m_.frame_base[p.layer] + s;
                if (!cache_->ready(index)) frames.push_back(index);
            }
        }
        at += p.length_bytes;
    }
    std::sort(frames.begin(), frames.end());
    frames.erase(std::unique(frames.begin(), frames.end()), frames.end());
    if (stored_ && !std::all_of(frames.begin(), frames.end(), [&](uint64_t i) { return stored_->present(i); })) {
        // bring() skips the frames already in; the decompression waits for all.
        auto then = std::make_shared<DecompressAfter>(cache_, frames, std::move(sink));
        return stored_->bring(frames, why, std::move(then), cookie);
    }
    cache_->request(frames, std::move(sink), cookie);
}

}  // namespace

std::unique_ptr<Source> open_frame_source(Manifest m, std::vector<FileDesc> layers, const LayeredSourceOptions& options,
                                          std::string& error) {
    auto source = std::make_unique<FrameSource>(std::move(m), std::move(layers), std::vector<int>{}, nullptr,
                                                 options.verify_reads);
    error = source->start(options);
    if (!error.empty()) return nullptr;
    return source;
}

std::unique_ptr<Source> open_frame_source(Manifest m, std::vector<int> layer_fds,
                                          std::shared_ptr<const StoredFrames> stored,
                                          const LayeredSourceOptions& options, std::string& error) {
    auto source = std::make_unique<FrameSource>(std::move(m), std::vector<FileDesc>{}, std::move(layer_fds),
                                                std::move(stored), options.verify_reads);
    error = source->start(options);
    if (!error.empty()) return nullptr;
    return source;
}

std::optional<FrameCacheStats> frame_cache_stats(const Source& source) {
    const auto* framed = dynamic_cast<const FrameSource*>(&source);
    if (framed == nullptr) return std::nullopt;
    return framed->stats();
}

}  // namespace ringpager
