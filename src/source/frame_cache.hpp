// FrameCache: the decompressed side of a compressed layered snapshot (format
// version 2 with zstd or lz4; DESIGN.md "Remote snapshots": frames are
// decompressed off the reactor threads, so a reactor only ever reads plain
// bytes).
//
// The cache is one unlinked, sparse temporary file, opened with the source
// (the engine registers every source file with each ring at start), holding
// every stored block of the snapshot at (global slot) * block size, where the
// global slot of slot s of layer L is L's first checksum index + s. A frame is
// a run of consecutive slots of one layer, so it is one contiguous range of
// the file, and a run of slots a data extent names is contiguous there too.
//
// Worker threads owned by the cache (2 by default) take frames from a queue:
// read the stored bytes (pread), check the frame checksum, decompress into
// exactly the declared plain size, check every block against its checksum,
// pwrite the plain bytes into the file, and only then set the frame's bit in
// the ready bitmap (release). ready() loads it with acquire, so a reader that
// saw a frame ready reads bytes that were verified and are in the file.
//
// One decompression per frame at a time: a request for a frame already queued
// or being decompressed attaches to it, and every request waiting on it gets
// its callback. A frame that fails is not marked ready; its requests get the
// one-line reason, and a later request tries it again.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "ringpager/file_desc.hpp"
#include "ringpager/source.hpp"
#include "snapshot/layered/codec.hpp"
#include "snapshot/layered/format.hpp"

namespace ringpager {

struct FrameCacheStats {
    uint64_t requests = 0;              // request() calls
    uint64_t frames_queued = 0;         // decompressions started (one per frame, unless one failed)
    uint64_t frames_attached = 0;       // a request waited on a frame already queued
    uint64_t frames_decompressed = 0;   // frames now in the file
    uint64_t frames_reused = 0;         // frames a kept file already held, verified at create
    uint64_t frame_failures = 0;        // decompressions that failed (checksum, codec, read or write)
};

class FrameCache {
public:
    // Creates the cache file in `directory` ("": $TMPDIR, else /tmp) for
    // manifest `m` (compressed; the cache shares it, so a cache kept alive by
    // a fetch in flight after its source is gone still has it), whose layer
    // files are `layer_fds` (their owner must outlive the cache), and starts
    // `threads` workers (at least 1). "" or one line naming the directory and
    // the cause.
    // With `keep`, the file is DIRECTORY/frames-SNAPSHOTID.plain and stays:
    // frames a previous cache left in it are verified block by block (their
    // plain bytes against the manifest's checksums) and reused; the caller
    // keeps any other process off that file.
    static std::string create(std::shared_ptr<const layered::Manifest> m, std::span<const int> layer_fds,
                              std::string directory, unsigned threads, bool keep, std::shared_ptr<FrameCache>& out);
    // Stops the workers after the frame each is on; requests still waiting
    // are failed ("the snapshot source was closed").
    ~FrameCache();
    FrameCache(const FrameCache&) = delete;
    FrameCache& operator=(const FrameCache&) = delete;

    int fd() const { return file_.get(); }
    const std::string& directory() const { return directory_; }
    unsigned threads() const { return static_cast<unsigned>(workers_.size()); }

    // Whether frame `index` (into m.frames) is in the file. Lock free.
    bool ready(uint64_t index) const {
        return (bits_[index / 64].load(std::memory_order_acquire) >> (index % 64)) & 1;
    }

    // Makes every frame of `frames` ready, then calls sink->fetched(cookie,
    // "" or the first failure) once, from a worker (or from here when all are
    // ready already). Never blocks on a decompression.
    void request(std::span<const uint64_t> frames, std::shared_ptr<FetchSink> sink, uint64_t cookie);

    FrameCacheStats stats() const;

private:
    struct Request {
        std::shared_ptr<FetchSink> sink;
        uint64_t cookie = 0;
        size_t pending = 0;   // frames not finished yet; guarded by mu_
        std::string error;    // the first failure; guarded by mu_
    };
    struct Buffers {
        std::vector<std::byte> stored;
        std::vector<std::byte> plain;
        std::unique_ptr<layered::FrameDecompressor> decompressor;
    };

    FrameCache(std::shared_ptr<const layered::Manifest> m, std::span<const int> layer_fds);
    void run(Buffers& buffers);
    std::string decompress(uint64_t index, Buffers& buffers);
    // Marks ready every frame of a kept file whose blocks all verify.
    void reuse_kept_frames(std::vector<std::byte>& buffer);
    // Where frame `index`'s plain bytes are in the file.
    uint64_t cache_offset(uint64_t index) const;
    void finish(uint64_t index, const std::string& error);
    uint32_t layer_of(uint64_t index) const;

    std::shared_ptr<const layered::Manifest> manifest_;
    const layered::Manifest& m_;   // *manifest_
    std::vector<int> layer_fds_;
    FileDesc file_;
    std::string directory_;
    std::unique_ptr<std::atomic<uint64_t>[]> bits_;
    std::vector<Buffers> buffers_;   // one per worker, sized at create

    mutable std::mutex mu_;
    std::condition_variable work_;
    std::deque<uint64_t> queue_;
    std::unordered_map<uint64_t, std::vector<std::shared_ptr<Request>>> waiting_;   // queued or in progress
    bool stopping_ = false;
    FrameCacheStats stats_;   // guarded by mu_
    std::vector<std::thread> workers_;
};

}  // namespace ringpager
