#include "remote/chunk_cache.hpp"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "snapshot/layered/file_io.hpp"

namespace ringpager::remote {

using namespace layered;

struct ChunkCache::Request {
    std::shared_ptr<FetchSink> sink;
    uint64_t cookie = 0;
    size_t pending = 0;   // chunks not back yet; guarded by mu_
    std::string error;    // the first failure; guarded by mu_
};

namespace {

std::string errno_text(int error) { return std::strerror(error); }

std::string pwrite_all(int fd, std::span<const std::byte> bytes, uint64_t offset, const std::string& path) {
    while (!bytes.empty()) {
        const ssize_t n = ::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(offset));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return "cache file " + path + ": write at " + std::to_string(offset) + ": " + errno_text(errno);
        bytes = bytes.subspan(static_cast<size_t>(n));
        offset += static_cast<uint64_t>(n);
    }
    return {};
}

// Locks DIR/lock for this process; writes our pid into it for the next one's message.
std::string lock_directory(const std::string& dir, FileDesc& out) {
    const std::string path = dir + "/lock";
    auto file = FileDesc::open(path.c_str(), O_RDWR | O_CREAT, 0644);
    if (!file) return "cache directory " + dir + ": cannot open " + path + ": " + file.error().message();
    if (::flock(file->get(), LOCK_EX | LOCK_NB) != 0) {
        if (errno != EWOULDBLOCK) return "cache directory " + dir + ": flock " + path + ": " + errno_text(errno);
        char pid[32] = {};
        const ssize_t got = ::pread(file->get(), pid, sizeof pid - 1, 0);
        std::string holder = got > 0 ? std::string(pid, static_cast<size_t>(got)) : std::string("?");
        holder.erase(std::remove_if(holder.begin(), holder.end(), [](char c) { return c < '0' || c > '9'; }),
                     holder.end());
        return "cache directory " + dir + " is in use by another chunk cache (pid " + (holder.empty() ? "?" : holder) +
               " holds " + path + "); give each engine its own --cache-dir";
    }
    const std::string pid = std::to_string(::getpid()) + "\n";
    if (::ftruncate(file->get(), 0) != 0 ||
        ::pwrite(file->get(), pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
        return "cache directory " + dir + ": cannot write " + path + ": " + errno_text(errno);
    }
    out = std::move(*file);
    return {};
}

bool same_frames(std::span<const FrameRecord> a, std::span<const FrameRecord> b) {
    return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](const FrameRecord& x, const FrameRecord& y) {
        return x.offset == y.offset && x.stored_bytes == y.stored_bytes && x.plain_bytes == y.plain_bytes &&
               x.checksum == y.checksum;
    });
}

std::string prepare_directory(const std::string& dir) {
    if (dir.empty()) return "no cache directory (--cache-dir DIR)";
    if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
        return "cache directory " + dir + ": cannot create it: " + errno_text(errno);
    }
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0) return "cache directory " + dir + ": " + errno_text(errno);
    if (!S_ISDIR(st.st_mode)) return "cache directory " + dir + " is not a directory";
    return {};
}

}  // namespace

std::string ChunkCache::open(S3Config config, ChunkCacheOptions options, std::shared_ptr<ChunkCache>& out) {
    if (options.chunk_bytes < 4096 || options.chunk_bytes > options.fetcher.max_range_bytes) {
        return "chunk size " + std::to_string(options.chunk_bytes) + " is outside 4 KiB .. " +
               format_bytes(options.fetcher.max_range_bytes);
    }
    // Every transfer's chunk, twice over: a chunk just fetched for a waiter
    // is never the one evicted before the waiter reads it.
    const uint64_t floor = uint64_t{2} * options.fetcher.max_in_flight * options.chunk_bytes;
    if (options.capacity_bytes != 0 && options.capacity_bytes < floor) {
        return "cache size " + format_bytes(options.capacity_bytes) + " is below the " + format_bytes(floor) +
               " the fetches in flight need (2 x " + std::to_string(options.fetcher.max_in_flight) + " chunks of " +
               format_bytes(options.chunk_bytes) + ")";
    }
    if (auto e = prepare_directory(options.directory); !e.empty()) return e;
    std::shared_ptr<ChunkCache> cache(new ChunkCache(std::move(options)));
    if (auto e = lock_directory(cache->options_.directory, cache->lock_); !e.empty()) return e;
    auto fetcher = RangeFetcher::start(std::move(config), cache->options_.fetcher);
    if (!fetcher) return fetcher.error().message;
    cache->fetcher_ = std::move(*fetcher);
    cache->layers_ = std::make_unique<std::unique_ptr<Layer>[]>(max_cached_layers);
    out = std::move(cache);
    return {};
}

ChunkCache::~ChunkCache() {
    // The fetcher first: it calls back what is still pending (as cancelled)
    // into the layers, which outlive it.
    fetcher_.reset();
}

std::string ChunkCache::deadline_message(const std::string& cause) const {
    return "not fetched within the fetch deadline (" + std::to_string(options_.fetch_deadline.count()) +
           " ms): " + cause;
}

uint64_t ChunkCache::now_ms() const {
    return static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - epoch_).count());
}

bool ChunkCache::ready(int layer, uint64_t chunk) const {
    const Chunk& c = layers_[layer]->chunks[chunk];
    if (!c.ready.load(std::memory_order_acquire)) return false;
    // Loaded first: a chunk read over and over keeps its cache line shared.
    if (!c.referenced.load(std::memory_order_relaxed)) c.referenced.store(true, std::memory_order_relaxed);
    return true;
}

std::string ChunkCache::check_chunk(const Layer& l, uint64_t c, std::span<const std::byte> bytes) const {
    const std::string where = l.object.url() + " chunk " + std::to_string(c) + " (bytes " +
                              std::to_string(l.chunk_offset(c)) + "+" + std::to_string(l.chunk_length(c)) + "): ";
    if (!l.frames.empty()) {   // a stored frame: one checksum over its stored bytes
        const uint64_t read = XXH3_64bits(bytes.data(), bytes.size());
        if (read == l.frames[c].checksum) return {};
        return where + "frame checksum mismatch (stored " + hex64(l.frames[c].checksum) + ", fetched " + hex64(read) +
               ")";
    }
    const uint64_t bs = l.block_size_bytes;
    for (uint64_t i = 0; i * bs < bytes.size(); ++i) {
        const uint64_t slot = c * l.chunk_slots + i;
        const uint64_t read = XXH3_64bits(bytes.data() + i * bs, bs);
        if (read != l.checksums[slot]) {
            return where + "slot " + std::to_string(slot) + " checksum mismatch (stored " + hex64(l.checksums[slot]) +
                   ", fetched " + hex64(read) + ")";
        }
    }
    return {};
}

// Frees chunk `c`'s bytes in its file. A stored frame need not start or end
// on a page: only the pages wholly inside it are punched, so a neighbour
// frame sharing a page keeps its bytes (what is left of this one no longer
// passes its checksum, so it is never reused).
void ChunkCache::punch(const Layer& l, uint64_t c) const {
    uint64_t begin = l.chunk_offset(c), end = begin + l.chunk_length(c);
    if (!l.frames.empty()) {
        begin = (begin + 4095) / 4096 * 4096;
        end = end / 4096 * 4096;
        if (end <= begin) return;
    }
    // A failed punch only costs disk space: the chunk is not ready either way.
    (void)::fallocate(l.file.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(begin),
                      static_cast<off_t>(end - begin));
}

// A restarted engine: every chunk of the file that holds data is read and
// checked; intact ones are ready at once, others are punched out.
void ChunkCache::reuse_cached(Layer& l, int handle) {
    std::vector<std::byte> buffer;
    for (uint64_t c = 0; c < l.chunk_count; ++c) {
        const uint64_t offset = l.chunk_offset(c), length = l.chunk_length(c);
        const off_t data = ::lseek(l.file.get(), static_cast<off_t>(offset), SEEK_DATA);
        if (data < 0) break;   // ENXIO: no data from here to the end
        if (static_cast<uint64_t>(data) >= offset + length) continue;
        buffer.resize(length);
        const bool intact = pread_exact(l.file.get(), buffer, offset, l.path).empty() &&
                            check_chunk(l, c, buffer).empty();
        if (intact) {
            l.chunks[c].ready.store(true, std::memory_order_release);
            if (options_.capacity_bytes != 0) clock_.push_back({handle, c});
            stats_.reused_chunks++;
            stats_.cached_bytes += length;
        } else {
            punch(l, c);
            stats_.discarded_chunks++;
        }
    }
}

int ChunkCache::add_layer(const S3Location& object, const Manifest& m, uint32_t index, std::string& error) {
    const LayerRecord& rec = m.layers[index];
    const uint64_t bs = m.block_size_bytes;
    std::span<const uint64_t> sums(m.checksums.data() + m.checksum_base[index], rec.block_count);
    // A compressed layer is fetched frame by frame (an uncompressed version 2
    // layer stores its blocks as version 1 does: chunks of blocks).
    std::span<const FrameRecord> frames;
    if (m.compressed()) frames = std::span(m.frames).subspan(m.frame_base[index], rec.frame_count);
    std::lock_guard lock(mu_);
    const std::string id = hex_id(rec.id);
    if (auto it = by_id_.find(id); it != by_id_.end()) {
        const Layer& l = *layers_[it->second];
        if (l.block_size_bytes != bs || l.data_offset_bytes != rec.data_offset_bytes ||
            l.block_count != rec.block_count || l.file_size_bytes != rec.file_size_bytes ||
            !std::equal(sums.begin(), sums.end(), l.checksums.begin(), l.checksums.end()) ||
            !same_frames(l.frames, frames)) {
            error = object.url() + ": layer " + id + " is cached with another size or other checksums";
            return -1;
        }
        return it->second;
    }
    // The manifest was validated; still, nothing is sized from it unchecked.
    // A compressed layer's blocks are in its frames' plain bytes, usually more
    // than the file holds: its frames are bounded by the file below instead.
    if (bs == 0 || rec.block_count > (max_object_bytes - rec.data_offset_bytes) / bs ||
        (frames.empty() && rec.data_offset_bytes + rec.block_count * bs > rec.file_size_bytes) ||
        rec.file_size_bytes > max_object_bytes) {
        error = object.url() + ": layer " + id + " has blocks outside its file";
        return -1;
    }
    for (const FrameRecord& f : frames) {
        if (f.offset > rec.file_size_bytes || f.stored_bytes > rec.file_size_bytes - f.offset ||
            f.stored_bytes > options_.fetcher.max_range_bytes) {
            error = object.url() + ": layer " + id + " has a frame outside its file or above " +
                    format_bytes(options_.fetcher.max_range_bytes);
            return -1;
        }
    }
    if (layer_count_ == max_cached_layers) {
        error = object.url() + ": more than " + std::to_string(max_cached_layers) + " layers in one chunk cache";
        return -1;
    }
    auto l = std::make_unique<Layer>();
    l->object = object;
    l->id_hex = id;
    l->block_size_bytes = bs;
    l->data_offset_bytes = rec.data_offset_bytes;
    l->block_count = rec.block_count;
    l->file_size_bytes = rec.file_size_bytes;
    l->chunk_slots = frames.empty() ? std::max<uint64_t>(1, options_.chunk_bytes / bs) : m.frame_blocks;
    l->checksums.assign(sums.begin(), sums.end());
    l->frames.assign(frames.begin(), frames.end());
    l->chunk_count = frames.empty() ? (rec.block_count + l->chunk_slots - 1) / l->chunk_slots : frames.size();
    l->chunks = std::make_unique<Chunk[]>(l->chunk_count);
    const std::string path = options_.directory + "/" + id + ".rpl";
    auto file = FileDesc::open(path.c_str(), O_RDWR | O_CREAT, 0644);
    if (!file) {
        error = "cache file " + path + ": " + file.error().message();
        return -1;
    }
    struct stat st {};
    if (::fstat(file->get(), &st) != 0 || !S_ISREG(st.st_mode) ||
        (static_cast<uint64_t>(st.st_size) != rec.file_size_bytes &&
         ::ftruncate(file->get(), static_cast<off_t>(rec.file_size_bytes)) != 0)) {
        error = "cache file " + path + ": not a regular file, or cannot be sized: " + errno_text(errno);
        return -1;
    }
    l->file = std::move(*file);
    l->path = path;
    const int handle = layer_count_;
    reuse_cached(*l, handle);
    layer_count_++;
    layers_[handle] = std::move(l);
    by_id_[id] = handle;
    return handle;
}

// mu_ held. Submits the range GET of chunk `c` of `layer`.
std::string ChunkCache::start_fetch(int layer, uint64_t c, bool fault) {
    Layer& l = *layers_[layer];
    RangeRequest r;
    r.object = l.object;
    r.offset = l.chunk_offset(c);
    r.length = l.chunk_length(c);
    r.priority = fault ? FetchPriority::fault : FetchPriority::prefetch;
    // The fetcher ends the request when the chunk's oldest waiter has waited
    // the fetch deadline, so a store that hangs fails it then, not when a
    // transfer times out.
    r.deadline = epoch_ + std::chrono::milliseconds(l.chunks[c].waiting_since_ms) + options_.fetch_deadline;
    r.done = [this, layer, c](uint64_t, const S3Result<std::span<const std::byte>>& bytes) { fetched(layer, c, bytes); };
    auto ticket = fetcher_->submit(std::move(r));
    if (!ticket) return ticket.error().message;
    l.chunks[c].ticket = *ticket;
    l.chunks[c].fault = fault;
    stats_.fetches++;
    return {};
}

void ChunkCache::request(std::span<const ChunkRef> chunks, bool fault, std::shared_ptr<FetchSink> sink,
                         uint64_t cookie) {
    auto req = std::make_shared<Request>();
    req->sink = std::move(sink);
    req->cookie = cookie;
    {
        std::lock_guard lock(mu_);
        stats_.requests++;
        for (const ChunkRef& ref : chunks) {
            Chunk& ch = layers_[ref.layer]->chunks[ref.chunk];
            if (ch.ready.load(std::memory_order_acquire)) continue;
            // Before a fetch starts: its deadline counts from the first waiter.
            if (ch.waiters.empty()) ch.waiting_since_ms = now_ms();
            if (ch.ticket != 0) {   // under way: wait on it
                stats_.attached++;
                if (fault && !ch.fault) {
                    ch.fault = true;
                    if (fetcher_->promote(ch.ticket)) stats_.promoted++;
                }
            } else if (auto e = start_fetch(ref.layer, ref.chunk, fault); !e.empty()) {
                if (req->error.empty()) req->error = e;
                continue;
            }
            ch.waiters.push_back(req);
            req->pending++;
        }
        if (req->pending != 0) return;
    }
    req->sink->fetched(req->cookie, req->error);
}

void ChunkCache::fetched(int layer, uint64_t c, const S3Result<std::span<const std::byte>>& bytes) {
    Layer& l = *layers_[layer];
    Chunk& ch = l.chunks[c];
    std::string error;
    bool bad_checksum = false, passing = false;
    if (!bytes) {
        error = bytes.error().message;
        passing = bytes.error().retryable();
        if (bytes.error().kind == S3Error::Kind::deadline) error = deadline_message(error);
    } else if (error = check_chunk(l, c, *bytes); !error.empty()) {
        bad_checksum = true;
    } else if (auto e = pwrite_all(l.file.get(), *bytes, l.chunk_offset(c), l.path); !e.empty()) {
        error = e;
    } else {
        ch.ready.store(true, std::memory_order_release);
    }
    std::vector<std::shared_ptr<Request>> done;
    {
        std::lock_guard lock(mu_);
        ch.ticket = 0;
        if (bad_checksum && ch.attempts == 0) {
            ch.attempts = 1;   // once more; a second mismatch fails the waiters
            stats_.refetches++;
            if (start_fetch(layer, c, ch.fault).empty()) return changed_.notify_all();
        }
        if (passing) {
            const uint64_t waited_ms = now_ms() - ch.waiting_since_ms;
            if (waited_ms < static_cast<uint64_t>(options_.fetch_deadline.count())) {
                stats_.restarts++;
                if (start_fetch(layer, c, ch.fault).empty()) return changed_.notify_all();
            } else {
                error = deadline_message(error);
            }
        }
        ch.attempts = 0;
        ch.fault = false;
        if (error.empty()) {
            stats_.bytes_fetched += bytes->size();
            stats_.cached_bytes += bytes->size();
            // At the back of the ring with its bit clear: the hand reaches it
            // after every older chunk, so its waiters read it before it can go.
            ch.referenced.store(false, std::memory_order_relaxed);
            ch.evicted_at_ms = -1;
            if (options_.capacity_bytes != 0) clock_.push_back({layer, c});
        } else {
            stats_.chunk_failures++;
        }
        for (auto& w : ch.waiters) {
            if (!error.empty() && w->error.empty()) w->error = error;
            if (--w->pending == 0) done.push_back(std::move(w));
        }
        ch.waiters.clear();
        if (error.empty()) evict_locked();
    }
    changed_.notify_all();
    for (auto& w : done) w->sink->fetched(w->cookie, w->error);
}

// mu_ held. Punches out chunks evicted at least punch_delay ago (unless
// fetched again since), then evicts ready chunks in CLOCK order until the
// cache fits its capacity. A chunk with waiters is being fetched, so it is
// never ready and never in the ring.
void ChunkCache::evict_locked() {
    if (options_.capacity_bytes == 0) return;
    const auto now = static_cast<int64_t>(now_ms());
    punch_due_locked(now);
    // Each turn evicts, or clears one bit and moves its chunk back: after
    // twice the ring's length every bit is clear and the front is taken.
    for (size_t turns = 2 * clock_.size() + 1; stats_.cached_bytes > options_.capacity_bytes && turns > 0; --turns) {
        if (clock_.empty()) return;
        const ChunkRef ref = clock_.front();
        clock_.pop_front();
        Layer& l = *layers_[ref.layer];
        Chunk& ch = l.chunks[ref.chunk];
        if (!ch.ready.load(std::memory_order_relaxed)) continue;   // not in the ring by rights; dropped
        if (ch.referenced.exchange(false, std::memory_order_relaxed)) {
            clock_.push_back(ref);   // second chance
            continue;
        }
        ch.ready.store(false, std::memory_order_release);
        ch.evicted_at_ms = now;
        to_punch_.push_back({ref, now});
        stats_.cached_bytes -= l.chunk_length(ref.chunk);
        stats_.evictions++;
    }
}

// mu_ held. Evictions are queued in time order, so the due ones are at the
// front. One evicted again since has a newer time (its older entry is
// dropped); one being fetched again is looked at once more later.
void ChunkCache::punch_due_locked(int64_t now) {
    for (size_t n = to_punch_.size(); n > 0 && now - to_punch_.front().at_ms >= options_.punch_delay.count(); --n) {
        const Evicted e = to_punch_.front();
        to_punch_.pop_front();
        Layer& l = *layers_[e.chunk.layer];
        Chunk& ch = l.chunks[e.chunk.chunk];
        if (ch.evicted_at_ms != e.at_ms || ch.ready.load(std::memory_order_relaxed)) continue;
        if (ch.ticket != 0) {
            to_punch_.push_back(e);
            continue;
        }
        punch(l, e.chunk.chunk);
        ch.evicted_at_ms = -1;
    }
}

bool ChunkCache::wait_until(const std::function<bool(const ChunkCacheStats&)>& done,
                            std::chrono::milliseconds timeout) const {
    std::unique_lock lock(mu_);
    return changed_.wait_for(lock, timeout, [&] { return done(stats_); });
}

ChunkCacheStats ChunkCache::stats() const {
    std::lock_guard lock(mu_);
    return stats_;
}

}  // namespace ringpager::remote
