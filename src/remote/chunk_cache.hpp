// ChunkCache: the local tier in front of the object store (DESIGN.md "Remote
// snapshots"; docs/remote.md "Serving from s3://"). One per process, shared
// by every remote snapshot, listener, reactor and VM.
//
// Layers are content-addressed (a layer id never names other bytes), so the
// cache keeps one sparse file per layer id, DIR/<layer-id>.rpl, holding the
// layer object's bytes at their own offsets: a data extent of the manifest is
// read from the cache file exactly as from a local layer file. A chunk is a
// run of `chunk_slots` stored blocks of one layer (the last one shorter); it
// is fetched with one range GET, every block checked against the manifest's
// XXH3-64, written with pwrite, and only then its ready bit set (release).
// In a compressed layer (format version 2, zstd or lz4) a chunk is one stored
// frame instead: its bytes as the frame table places them (offset, stored
// length), checked against the frame's XXH3-64 of the stored bytes; the
// frame source's workers decompress it from the cache file.
// ready() loads it with acquire: a reactor that saw a chunk ready reads
// verified bytes.
//
// Exactly one fetch per chunk in the process: a request for a chunk already
// being fetched attaches to it; a fault request promotes a queued prefetch
// fetch of the same chunk (RangeFetcher::promote). A chunk that fails its
// checksum is fetched once more, then its waiters get the one-line reason.
// A fetch that fails for a passing cause (the store away, 5xx, resets and
// timeouts, after the fetcher's own retries) is started again until its
// oldest waiter has waited `fetch_deadline`: a store that goes away and comes
// back within it only delays the VMs waiting on it. Each range GET carries
// that deadline (RangeRequest::deadline): a store that hangs without failing
// has a fault's fetch ended at the deadline by the fetcher's own poll
// timeout (a prefetch fetch is only checked when it fails, as before, until
// a fault waits on it and promotes it).
//
// DIR is locked (flock, LOCK_EX|LOCK_NB on DIR/lock) for the cache's life: a
// second cache on the same directory, in this process or another, is refused
// with one line. A cache opened on a directory with cached layers re-verifies
// every chunk that has data when the layer is added and keeps the intact ones.
//
// Eviction: past `capacity_bytes`, ready chunks lose their ready bit in CLOCK
// order (second chance, an approximation of least recently used that costs
// O(1) per use and amortized O(1) per eviction): ready chunks sit in a ring
// in the order they became ready; ready() sets a chunk's `referenced` bit; the
// hand takes the ring's oldest chunk, and one whose bit is set has it cleared
// and goes to the back instead of being evicted. An evicted chunk's bytes are
// punched out of the file (FALLOC_FL_PUNCH_HOLE) only at a later eviction
// pass, at least `punch_delay` later (a FIFO of evictions, oldest first), so
// a read a reactor planned just before the eviction
// still finds the bytes (they never change: a chunk fetched again writes the
// same bytes). A read that came later still would fail its checksum (reads are
// verified), never install wrong bytes.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "remote/range_fetcher.hpp"
#include "remote/s3_config.hpp"
#include "ringpager/file_desc.hpp"
#include "ringpager/source.hpp"
#include "snapshot/layered/format.hpp"

namespace ringpager::remote {

inline constexpr int max_cached_layers = 4096;

struct ChunkCacheOptions {
    std::string directory;
    uint64_t capacity_bytes = 0;            // 0: unbounded
    uint64_t chunk_bytes = 4 << 20;         // bytes of stored blocks per chunk (at least one block)
    std::chrono::milliseconds punch_delay{1000};
    std::chrono::milliseconds fetch_deadline{30000};
    RangeFetcher::Options fetcher;
};

struct ChunkCacheStats {
    uint64_t requests = 0;          // request() calls
    uint64_t fetches = 0;           // range GETs started (one per chunk, plus refetches)
    uint64_t attached = 0;          // a request waited on a fetch already under way
    uint64_t promoted = 0;          // queued prefetch fetches a fault promoted
    uint64_t refetches = 0;         // chunks fetched again after a checksum failure
    uint64_t restarts = 0;          // fetches started again after a passing failure
    uint64_t chunk_failures = 0;    // fetches whose waiters got an error
    uint64_t bytes_fetched = 0;
    uint64_t reused_chunks = 0;     // found intact in DIR when their layer was added
    uint64_t discarded_chunks = 0;  // found in DIR but not intact (punched out)
    uint64_t evictions = 0;
    uint64_t cached_bytes = 0;      // ready chunks now
};

class ChunkCache {
public:
    // Locks and prepares `options.directory` (made if missing) and starts the
    // range fetcher. "" or one line naming the directory or the store setting.
    static std::string open(S3Config config, ChunkCacheOptions options, std::shared_ptr<ChunkCache>& out);
    ~ChunkCache();
    ChunkCache(const ChunkCache&) = delete;
    ChunkCache& operator=(const ChunkCache&) = delete;

    // Layer `index` of manifest `m`, stored at `object`: its cache file
    // (created sparse, or reused after verifying what it holds). The same
    // layer id added again (another snapshot sharing it) answers the same
    // layer; geometry or checksums that disagree are refused. Returns the
    // layer's handle (>= 0), or -1 with `error` set.
    int add_layer(const S3Location& object, const layered::Manifest& m, uint32_t index, std::string& error);

    int layer_fd(int layer) const { return layers_[layer]->file.get(); }
    // Stored blocks per chunk of `layer`.
    uint64_t chunk_slots(int layer) const { return layers_[layer]->chunk_slots; }

    // Whether chunk `chunk` of `layer` is in its file. Lock free; marks the
    // chunk used (for LRU).
    bool ready(int layer, uint64_t chunk) const;

    struct ChunkRef {
        int layer = 0;
        uint64_t chunk = 0;
    };
    // Makes every chunk of `chunks` ready, then calls sink->fetched(cookie,
    // "" or the first failure) once, from the fetcher thread (or from here
    // when all are ready or a fetch cannot be started). Never blocks on the
    // network.
    void request(std::span<const ChunkRef> chunks, bool fault, std::shared_ptr<FetchSink> sink, uint64_t cookie);

    ChunkCacheStats stats() const;
    // Waits until `done(stats())` holds or `timeout` passes (tests); the
    // stats change under the cache's lock and wake it.
    bool wait_until(const std::function<bool(const ChunkCacheStats&)>& done, std::chrono::milliseconds timeout) const;
    const std::string& directory() const { return options_.directory; }
    const RangeFetcher& fetcher() const { return *fetcher_; }

private:
    struct Request;
    struct Chunk {
        std::atomic<bool> ready{false};
        mutable std::atomic<bool> referenced{false};   // used since the hand last passed (CLOCK)
        // Guarded by mu_:
        uint64_t ticket = 0;        // the fetch under way (0: none)
        bool fault = false;         // it was asked for by a fault
        unsigned attempts = 0;      // checksum failures of this fetch
        uint64_t waiting_since_ms = 0;   // when its first current waiter came
        std::vector<std::shared_ptr<Request>> waiters;
        int64_t evicted_at_ms = -1; // waiting for its bytes to be punched out
    };
    struct Layer {
        S3Location object;
        std::string id_hex;
        uint64_t block_size_bytes = 0;
        uint64_t data_offset_bytes = 0;
        uint64_t block_count = 0;
        uint64_t file_size_bytes = 0;
        uint64_t chunk_slots = 0;          // a compressed layer: blocks per frame
        std::vector<uint64_t> checksums;   // one per slot
        std::vector<layered::FrameRecord> frames;   // a compressed layer's: one chunk each; else empty
        FileDesc file;
        std::string path;   // DIR/<layer-id>.rpl
        std::unique_ptr<Chunk[]> chunks;
        uint64_t chunk_count = 0;

        uint64_t chunk_offset(uint64_t c) const {
            return frames.empty() ? data_offset_bytes + c * chunk_slots * block_size_bytes : frames[c].offset;
        }
        uint64_t chunk_length(uint64_t c) const {
            return frames.empty() ? std::min(chunk_slots, block_count - c * chunk_slots) * block_size_bytes
                                  : frames[c].stored_bytes;
        }
    };

    explicit ChunkCache(ChunkCacheOptions options) : options_(std::move(options)) {}
    std::string check_chunk(const Layer& l, uint64_t c, std::span<const std::byte> bytes) const;
    void reuse_cached(Layer& l, int handle);
    void punch(const Layer& l, uint64_t c) const;
    std::string start_fetch(int layer, uint64_t c, bool fault);   // mu_ held
    void fetched(int layer, uint64_t c, const S3Result<std::span<const std::byte>>& bytes);
    void evict_locked();
    void punch_due_locked(int64_t now);
    uint64_t now_ms() const;
    std::string deadline_message(const std::string& cause) const;

    ChunkCacheOptions options_;
    FileDesc lock_;
    std::chrono::steady_clock::time_point epoch_ = std::chrono::steady_clock::now();

    mutable std::mutex mu_;
    mutable std::condition_variable changed_;
    // Fixed at open so reactors index it without a lock: an entry is set
    // (under mu_) before its handle is handed out and never changes after.
    std::unique_ptr<std::unique_ptr<Layer>[]> layers_;
    int layer_count_ = 0;
    std::unordered_map<std::string, int> by_id_;
    ChunkCacheStats stats_;
    // Eviction, under mu_ and only with a capacity: the ready chunks in the
    // order they became ready (each once; the hand pops the front), and the
    // evicted ones waiting for their punch, oldest first.
    std::deque<ChunkRef> clock_;
    struct Evicted {
        ChunkRef chunk;
        int64_t at_ms = 0;
    };
    std::deque<Evicted> to_punch_;
    std::unique_ptr<RangeFetcher> fetcher_;   // last: its destructor calls back into the members above
};

}  // namespace ringpager::remote
