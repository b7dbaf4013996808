#include "source/frame_cache.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cstdlib>
#include <system_error>

#include "snapshot/layered/codec.hpp"
#include "snapshot/layered/file_io.hpp"

namespace ringpager {

using namespace layered;

namespace {

constexpr unsigned kMaxThreads = 64;

// An unlinked temporary file in `directory`: O_TMPFILE where the filesystem
// has it, else a named file removed at once. Nobody else can open it by name,
// and it goes away with its last fd.
std::string open_unlinked(const std::string& directory, FileDesc& out) {
    FileDesc fd(::open(directory.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
    if (fd.valid()) {
        out = std::move(fd);
        return {};
    }
    if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL) return errno_text("open(O_TMPFILE)");
    std::string name = directory + "/ringpager-frames-XXXXXX";
    const int raw = ::mkostemp(name.data(), O_CLOEXEC);
    if (raw < 0) return errno_text("mkostemp");
    out = FileDesc(raw);
    if (::unlink(name.c_str()) != 0) return errno_text("unlink") + " (" + name + ")";
    return {};
}

}  // namespace

FrameCache::FrameCache(std::shared_ptr<const Manifest> m, std::span<const int> layer_fds)
    : manifest_(std::move(m)), m_(*manifest_), layer_fds_(layer_fds.begin(), layer_fds.end()) {}

std::string FrameCache::create(std::shared_ptr<const Manifest> manifest, std::span<const int> layer_fds,
                               std::string directory, unsigned threads, bool keep, std::shared_ptr<FrameCache>& out) {
    const Manifest& m = *manifest;
    if (directory.empty()) {
        const char* tmp = std::getenv("TMPDIR");
        directory = tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
    }
    const std::string kept_path = directory + "/frames-" + hex_id(m.snapshot_id) + ".plain";
    const std::string name = keep ? "decompressed-frame cache " + kept_path : "decompressed-frame cache in " + directory;
    std::shared_ptr<FrameCache> c(new FrameCache(std::move(manifest), layer_fds));
    c->directory_ = directory;
    // Sparse: a frame takes space only once it is written.
    const uint64_t size = m.checksums.size() * m.block_size_bytes;
    struct stat st {};
    if (!keep) {
        if (auto e = open_unlinked(directory, c->file_); !e.empty()) return name + ": " + e;
    } else {
        c->file_ = FileDesc(::open(kept_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
        if (!c->file_.valid()) return name + ": " + errno_text("open");
        if (::fstat(c->file_.get(), &st) != 0) return name + ": " + errno_text("fstat");
        if (!S_ISREG(st.st_mode)) return name + ": not a regular file";
    }
    if (static_cast<uint64_t>(st.st_size) != size && ::ftruncate(c->file_.get(), static_cast<off_t>(size)) != 0)
        return name + ": " + errno_text("ftruncate");
    const uint64_t words = m.frames.size() / 64 + 1;
    c->bits_ = std::make_unique<std::atomic<uint64_t>[]>(words);
    for (uint64_t i = 0; i < words; ++i) c->bits_[i].store(0, std::memory_order_relaxed);
    // Buffers are sized from the validated frame table, once, here.
    uint64_t most_stored = 0;
    for (const FrameRecord& f : m.frames) most_stored = std::max<uint64_t>(most_stored, f.stored_bytes);
    threads = std::clamp(threads, 1u, kMaxThreads);
    c->buffers_.resize(threads);
    for (Buffers& b : c->buffers_) {
        b.stored.resize(most_stored);
        b.plain.resize(m.frame_blocks * m.block_size_bytes);
        b.decompressor = std::make_unique<FrameDecompressor>(m.codec);
    }
    // A file kept by an earlier engine (it had the same size: same snapshot).
    if (keep && static_cast<uint64_t>(st.st_size) == size) c->reuse_kept_frames(c->buffers_[0].plain);
    for (unsigned i = 0; i < threads; ++i) {
        try {
            c->workers_.emplace_back([cache = c.get(), &b = c->buffers_[i]] { cache->run(b); });
        } catch (const std::system_error& e) {
            return name + ": cannot start a decompression thread: " + e.what();   // the destructor joins the others
        }
    }
    out = std::move(c);
    return {};
}

FrameCache::~FrameCache() {
    {
        std::lock_guard lock(mu_);
        stopping_ = true;
    }
    work_.notify_all();
    for (std::thread& t : workers_) t.join();
    for (auto& [index, requests] : waiting_) {
        for (auto& r : requests) {
            if (--r->pending == 0) r->sink->fetched(r->cookie, "the snapshot source was closed");
        }
    }
}

void FrameCache::request(std::span<const uint64_t> frames, std::shared_ptr<FetchSink> sink, uint64_t cookie) {
    auto r = std::make_shared<Request>();
    r->sink = std::move(sink);
    r->cookie = cookie;
    size_t queued = 0;
    {
        std::lock_guard lock(mu_);
        stats_.requests++;
        for (uint64_t index : frames) {
            // Under the lock, a frame is either ready, waiting, or neither:
            // finish() sets the bit and drops the waiters in one step.
            if (ready(index)) continue;
            auto [it, inserted] = waiting_.try_emplace(index);
            it->second.push_back(r);
            r->pending++;
            if (inserted) {
                queue_.push_back(index);
                stats_.frames_queued++;
                queued++;
            } else {
                stats_.frames_attached++;
            }
        }
        if (r->pending != 0) r.reset();   // the workers have it now
    }
    for (size_t i = 0; i < queued; ++i) work_.notify_one();
    if (r) r->sink->fetched(r->cookie, "");
}

FrameCacheStats FrameCache::stats() const {
    std::lock_guard lock(mu_);
    return stats_;
}

void FrameCache::run(Buffers& buffers) {
    std::unique_lock lock(mu_);
    for (;;) {
        work_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (stopping_) return;
        const uint64_t index = queue_.front();
        queue_.pop_front();
        lock.unlock();
        const std::string error = decompress(index, buffers);
        finish(index, error);
        lock.lock();
    }
}

void FrameCache::finish(uint64_t index, const std::string& error) {
    std::vector<std::shared_ptr<Request>> done;
    {
        std::lock_guard lock(mu_);
        if (error.empty()) {
            bits_[index / 64].fetch_or(uint64_t{1} << (index % 64), std::memory_order_release);
            stats_.frames_decompressed++;
        } else {
            stats_.frame_failures++;
        }
        auto it = waiting_.find(index);
        if (it != waiting_.end()) {
            for (auto& r : it->second) {
                if (!error.empty() && r->error.empty()) r->error = error;
                if (--r->pending == 0) done.push_back(std::move(r));
            }
            waiting_.erase(it);
        }
    }
    // Outside the lock: a sink may call request() again.
    for (auto& r : done) r->sink->fetched(r->cookie, r->error);
}

uint32_t FrameCache::layer_of(uint64_t index) const {
    // The last layer whose first frame is at or before `index`.
    auto it = std::upper_bound(m_.frame_base.begin(), m_.frame_base.end(), index);
    return static_cast<uint32_t>(it - m_.frame_base.begin()) - 1;
}

std::string FrameCache::decompress(uint64_t index, Buffers& buffers) {
    const FrameRecord& f = m_.frames[index];
    const uint32_t layer = layer_of(index);
    const uint64_t k = index - m_.frame_base[layer];
    const std::string where = describe_frame(m_, layer, k);
    // SAFETY: open validated every frame record: stored_bytes fits the buffer
    // sized from the largest one, plain_bytes is at most frame_blocks blocks.
    std::span<std::byte> stored(buffers.stored.data(), f.stored_bytes);
    std::span<std::byte> plain(buffers.plain.data(), f.plain_bytes);
    if (auto e = pread_exact(layer_fds_[layer], stored, f.offset, where); !e.empty()) return e;
    const uint64_t read = XXH3_64bits(stored.data(), stored.size());
    if (read != f.checksum) {
        return where + ": checksum mismatch (stored " + hex64(f.checksum) + ", read " + hex64(read) + ")";
    }
    if (auto e = buffers.decompressor->decompress(stored, plain); !e.empty()) return where + ": " + e;
    const uint64_t bs = m_.block_size_bytes;
    const uint64_t first_slot = k * m_.frame_blocks;
    for (uint64_t at = 0; at < plain.size(); at += bs) {
        const uint64_t slot = first_slot + at / bs;
        const uint64_t want = m_.block_checksum(layer, slot);
        const uint64_t got = XXH3_64bits(plain.data() + at, bs);
        if (want != got) {
            return where + ": slot " + std::to_string(slot) + " decompressed to checksum " + hex64(got) +
                   ", the manifest says " + hex64(want);
        }
    }
    return pwrite_all(file_.get(), plain, cache_offset(index), "decompressed-frame cache in " + directory_);
}

uint64_t FrameCache::cache_offset(uint64_t index) const {
    const uint32_t layer = layer_of(index);
    const uint64_t first_slot = (index - m_.frame_base[layer]) * m_.frame_blocks;
    return (m_.checksum_base[layer] + first_slot) * m_.block_size_bytes;
}

// Before any worker starts: only this thread touches the file and the bits.
// A frame is reused only if every one of its blocks matches the manifest: a
// frame an engine was writing when it died, or bytes changed on disk since,
// are decompressed again. Holes (frames never written) are skipped unread.
void FrameCache::reuse_kept_frames(std::vector<std::byte>& buffer) {
    const uint64_t bs = m_.block_size_bytes;
    for (uint64_t index = 0; index < m_.frames.size(); ++index) {
        const FrameRecord& f = m_.frames[index];
        const uint64_t offset = cache_offset(index);
        const off_t data = ::lseek(file_.get(), static_cast<off_t>(offset), SEEK_DATA);
        if (data < 0 || static_cast<uint64_t>(data) != offset) continue;   // a hole, or nothing after it
        std::span<std::byte> plain(buffer.data(), f.plain_bytes);   // plain_bytes <= the buffer (validated)
        if (!pread_exact(file_.get(), plain, offset, "").empty()) continue;
        const uint32_t layer = layer_of(index);
        const uint64_t first_slot = (index - m_.frame_base[layer]) * m_.frame_blocks;
        bool intact = true;
        for (uint64_t at = 0; at < plain.size() && intact; at += bs)
            intact = XXH3_64bits(plain.data() + at, bs) == m_.block_checksum(layer, first_slot + at / bs);
        if (!intact) continue;
        bits_[index / 64].fetch_or(uint64_t{1} << (index % 64), std::memory_order_relaxed);
        stats_.frames_reused++;
    }
}

}  // namespace ringpager
