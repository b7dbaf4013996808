// The working-set file: encode/decode, the snapshot identity, and the atomic
// locked write (format in working_set.hpp).
#include "snapshot/working_set.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <optional>
#include <vector>

#include "common/regular_file.hpp"
#include "ringpager/file_desc.hpp"

namespace ringpager {
namespace {

constexpr uint64_t kSampleBytes = 4096;

void put_u32(std::string& out, uint32_t v) {
    for (int i = 0; i < 4; i++) out.push_back(static_cast<char>(v >> (8 * i)));
}
void put_u64(std::string& out, uint64_t v) {
    for (int i = 0; i < 8; i++) out.push_back(static_cast<char>(v >> (8 * i)));
}
uint64_t get_le(std::string_view bytes, size_t at, int width) {
    uint64_t v = 0;
    for (int i = 0; i < width; i++) v |= uint64_t{static_cast<uint8_t>(bytes[at + i])} << (8 * i);
    return v;
}
void put_varint(std::string& out, uint64_t v) {
    while (v >= 0x80) {
        out.push_back(static_cast<char>((v & 0x7f) | 0x80));
        v >>= 7;
    }
    out.push_back(static_cast<char>(v));
}
// False at the end of the bytes or on a varint longer than 10 bytes.
bool get_varint(std::string_view bytes, size_t& at, uint64_t& v) {
    v = 0;
    for (unsigned shift = 0; shift < 64 && at < bytes.size(); shift += 7) {
        const uint8_t b = static_cast<uint8_t>(bytes[at++]);
        v |= uint64_t{b & 0x7fu} << shift;
        if ((b & 0x80) == 0) return true;
    }
    return false;
}
uint64_t zigzag(int64_t v) { return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63); }
int64_t unzigzag(uint64_t v) { return static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1); }

bool fail(std::string& error, std::string why) {
    error = std::move(why);
    return false;
}

// Reads guest bytes [offset, offset + len) of `source` into `into`
// (zero extents as zeros).
bool read_guest(const Source& source, uint64_t offset, uint64_t len, uint8_t* into, std::string& error) {
    while (len > 0) {
        // Bytes fetched or decompressed on demand exist only once they are;
        // lookup() would name a hole in a cache. The layered sources that
        // have such bytes answer block_digest() and never come here.
        if (source.plan(offset, len).kind == ReadPlan::Kind::fetch)
            return fail(error, "its bytes are fetched or decompressed on demand and it keeps no block checksums");
        const SourceExtent e = source.lookup(offset, len);
        const uint64_t n = std::min(e.length_bytes, len);
        if (n == 0) return fail(error, "empty extent");
        if (e.kind == SourceExtent::Kind::zero) {
            memset(into, 0, n);
        } else {
            const ssize_t got = pread(source.file_fds()[e.file_index], into, n, static_cast<off_t>(e.file_offset));
            if (got != static_cast<ssize_t>(n))
                return fail(error, got < 0 ? std::string("pread: ") + strerror(errno) : "short read");
        }
        offset += n;
        len -= n;
        into += n;
    }
    return true;
}

// The sampled 4 KiB blocks: evenly spaced, first and last included.
uint64_t identity_sample_offset(uint64_t size_bytes, unsigned i) {
    const uint64_t blocks = size_bytes / kSampleBytes;
    const uint64_t b = kIdentitySamples == 1 ? 0 : (blocks - 1) * i / (kIdentitySamples - 1);
    return b * kSampleBytes;
}

// XXH3-64 of `block_size_bytes` zero bytes, what a stored zero block's
// checksum would be: a zero extent and a zero block some builder stored
// give the same identity.
uint64_t zero_block_xxh3(uint64_t block_size_bytes) {
    static const std::vector<uint8_t> zeros(64 * 1024, 0);
    XXH3_state_t* state = XXH3_createState();
    XXH3_64bits_reset(state);
    for (uint64_t done = 0; done < block_size_bytes;) {
        const uint64_t n = std::min<uint64_t>(zeros.size(), block_size_bytes - done);
        XXH3_64bits_update(state, zeros.data(), n);
        done += n;
    }
    const uint64_t h = XXH3_64bits_digest(state);
    XXH3_freeState(state);
    return h;
}

// The identity from the snapshot's block checksums (layered snapshots): no
// guest byte is read or fetched. False when `source` keeps no checksums.
bool digest_identity(const Source& source, SnapshotIdentity& out) {
    const uint64_t blocks = out.size_bytes / kSampleBytes;
    std::vector<uint64_t> values;
    uint64_t zero_value = 0, zero_block_bytes = 0;
    for (unsigned i = 0; i < kIdentitySamples && blocks > 0; i++) {
        const std::optional<BlockDigest> d = source.block_digest(identity_sample_offset(out.size_bytes, i));
        if (!d) return false;
        if (d->zero && zero_block_bytes != d->block_size_bytes) {
            zero_block_bytes = d->block_size_bytes;
            zero_value = zero_block_xxh3(zero_block_bytes);
        }
        values.push_back(d->zero ? zero_value : d->xxh3);
    }
    if (values.empty() && !source.block_digest(0)) return false;
    out.fingerprint = XXH3_64bits(values.data(), values.size() * sizeof(uint64_t));
    return true;
}

}  // namespace

bool snapshot_identity(const Source& source, SnapshotIdentity& out, std::string& error) {
    out.size_bytes = source.size_bytes();
    if (digest_identity(source, out)) return true;
    XXH3_state_t* state = XXH3_createState();
    XXH3_64bits_reset(state);
    uint8_t block[kSampleBytes];
    const uint64_t blocks = out.size_bytes / kSampleBytes;
    bool ok = true;
    for (unsigned i = 0; i < kIdentitySamples && blocks > 0 && ok; i++) {
        ok = read_guest(source, identity_sample_offset(out.size_bytes, i), kSampleBytes, block, error);
        if (ok) XXH3_64bits_update(state, block, sizeof block);
    }
    out.fingerprint = XXH3_64bits_digest(state);
    XXH3_freeState(state);
    if (!ok) error = "cannot read " + source.describe() + " for its identity: " + error;
    return ok;
}

uint64_t WorkingSet::pages() const {
    uint64_t n = 0;
    for (const PageRun& r : runs) n += r.pages;
    return n;
}

std::vector<PageRun> runs_from_pages(const std::vector<uint64_t>& pages_in_order) {
    std::vector<PageRun> runs;
    for (uint64_t p : pages_in_order) {
        if (!runs.empty() && runs.back().first_page + runs.back().pages == p) runs.back().pages++;
        else runs.push_back({p, 1});
    }
    return runs;
}

std::vector<PageRun> packed_working_set_runs(const Source& source, uint64_t page_size_bytes) {
    std::vector<PageRun> runs;
    if (page_size_bytes == 0) return runs;
    for (const GuestRange& r : source.packed_working_set()) {
        if (r.offset % page_size_bytes != 0 || r.length_bytes % page_size_bytes != 0 || r.length_bytes == 0) return {};
        runs.push_back({r.offset / page_size_bytes, r.length_bytes / page_size_bytes});
    }
    return runs;
}

std::vector<uint64_t> pages_from_runs(const std::vector<PageRun>& runs) {
    std::vector<uint64_t> pages;
    for (const PageRun& r : runs)
        for (uint64_t p = r.first_page; p < r.first_page + r.pages; p++) pages.push_back(p);
    return pages;
}

std::string encode_working_set(const WorkingSet& set) {
    std::string body;
    uint64_t prev_end = 0;
    for (const PageRun& r : set.runs) {
        put_varint(body, zigzag(static_cast<int64_t>(r.first_page - prev_end)));
        put_varint(body, r.pages);
        prev_end = r.first_page + r.pages;
    }
    std::string out(kWorkingSetMagic, sizeof kWorkingSetMagic);
    put_u32(out, kWorkingSetVersion);
    put_u32(out, kWorkingSetHeaderBytes);
    put_u64(out, set.page_size_bytes);
    put_u64(out, set.identity.size_bytes);
    put_u64(out, set.identity.fingerprint);
    put_u64(out, set.pages());
    put_u64(out, set.runs.size());
    put_u32(out, static_cast<uint32_t>(body.size()));
    put_u32(out, 0);
    put_u64(out, XXH3_64bits(body.data(), body.size()));
    return out + body;
}

bool decode_working_set(std::string_view bytes, WorkingSet& out, std::string& error) {
    if (bytes.size() < kWorkingSetHeaderBytes)
        return fail(error, "truncated: " + std::to_string(bytes.size()) + " bytes, shorter than its header");
    if (memcmp(bytes.data(), kWorkingSetMagic, sizeof kWorkingSetMagic) != 0)
        return fail(error, "not a working-set file (bad magic)");
    if (const uint64_t v = get_le(bytes, 8, 4); v != kWorkingSetVersion)
        return fail(error, "version " + std::to_string(v) + " is not supported (expected 1)");
    if (get_le(bytes, 12, 4) != kWorkingSetHeaderBytes) return fail(error, "corrupt: bad header size");
    WorkingSet set;
    set.page_size_bytes = get_le(bytes, 16, 8);
    set.identity = {get_le(bytes, 24, 8), get_le(bytes, 32, 8)};
    const uint64_t pages = get_le(bytes, 40, 8), runs = get_le(bytes, 48, 8), body_bytes = get_le(bytes, 56, 4);
    const uint64_t checksum = get_le(bytes, kWorkingSetHeaderBytes - 8, 8);
    const std::string_view body = bytes.substr(kWorkingSetHeaderBytes);
    if (body.size() < body_bytes)
        return fail(error, "truncated: " + std::to_string(body.size()) + " of " + std::to_string(body_bytes) +
                               " body bytes");
    if (body.size() > body_bytes) return fail(error, "corrupt: bytes after the body");
    if (XXH3_64bits(body.data(), body.size()) != checksum) return fail(error, "corrupt: checksum mismatch");
    if (set.page_size_bytes == 0 || (set.page_size_bytes & (set.page_size_bytes - 1)) != 0)
        return fail(error, "corrupt: page size " + std::to_string(set.page_size_bytes));
    const uint64_t source_pages = set.identity.size_bytes / set.page_size_bytes;
    if (runs > body.size() / 2 || pages > source_pages) return fail(error, "corrupt: counts larger than possible");
    size_t at = 0;
    uint64_t prev_end = 0, total = 0;
    set.runs.reserve(runs);
    for (uint64_t i = 0; i < runs; i++) {
        uint64_t delta = 0, length = 0;
        if (!get_varint(body, at, delta) || !get_varint(body, at, length)) return fail(error, "corrupt: run " + std::to_string(i));
        const uint64_t first = prev_end + static_cast<uint64_t>(unzigzag(delta));
        if (length == 0 || first >= source_pages || length > source_pages - first)
            return fail(error, "corrupt: run " + std::to_string(i) + " passes the snapshot's end");
        set.runs.push_back({first, length});
        prev_end = first + length;
        total += length;
    }
    if (at != body.size() || total != pages) return fail(error, "corrupt: runs do not match the header");
    out = std::move(set);
    return true;
}

bool merge_working_sets(const std::vector<WorkingSet>& sets, unsigned min_count, WorkingSet& out, std::string& error) {
    if (sets.empty()) return fail(error, "nothing to merge");
    for (size_t i = 1; i < sets.size(); i++) {
        if (sets[i].identity != sets[0].identity)
            return fail(error, "recording " + std::to_string(i + 1) + " is of another snapshot than recording 1");
        if (sets[i].page_size_bytes != sets[0].page_size_bytes)
            return fail(error, "recording " + std::to_string(i + 1) + " has another page size than recording 1");
    }
    struct Seen {
        size_t last_set = SIZE_MAX;
        std::vector<uint64_t> ranks;  // its rank in each recording holding it
    };
    std::map<uint64_t, Seen> seen;
    for (size_t i = 0; i < sets.size(); i++) {
        uint64_t rank = 0;
        for (const PageRun& r : sets[i].runs)
            for (uint64_t p = r.first_page; p < r.first_page + r.pages; p++, rank++) {
                Seen& page = seen[p];
                if (page.last_set == i) continue;  // twice in one (hand-made) file: its first rank counts
                page.last_set = i;
                page.ranks.push_back(rank);
            }
    }
    struct Entry {
        uint64_t median, count, page;
    };
    std::vector<Entry> kept;
    for (auto& [page, p] : seen) {
        std::vector<uint64_t>& r = p.ranks;
        if (r.size() < std::max(1u, min_count)) continue;
        std::sort(r.begin(), r.end());
        kept.push_back({r[(r.size() - 1) / 2], r.size(), page});
    }
    std::sort(kept.begin(), kept.end(), [](const Entry& a, const Entry& b) {
        if (a.median != b.median) return a.median < b.median;
        if (a.count != b.count) return a.count > b.count;
        return a.page < b.page;
    });
    std::vector<uint64_t> pages;
    pages.reserve(kept.size());
    for (const Entry& e : kept) pages.push_back(e.page);
    out.page_size_bytes = sets[0].page_size_bytes;
    out.identity = sets[0].identity;
    out.runs = runs_from_pages(pages);
    return true;
}

bool write_working_set_file(const std::string& path, const WorkingSet& set, std::string& error) {
    const std::string bytes = encode_working_set(set);
    const std::string lock_path = path + ".lock", temp = path + ".tmp";
    FileDesc lock(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644));
    if (!lock.valid()) return fail(error, lock_path + ": open: " + strerror(errno));
    // Blocking: another recorder holds it only for one small write.
    if (::flock(lock.get(), LOCK_EX) != 0) return fail(error, lock_path + ": flock: " + strerror(errno));
    FileDesc fd(::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644));
    if (!fd.valid()) return fail(error, temp + ": open: " + strerror(errno));
    size_t done = 0;
    while (done < bytes.size()) {
        const ssize_t n = ::write(fd.get(), bytes.data() + done, bytes.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            const std::string why = temp + ": write: " + strerror(errno);
            ::unlink(temp.c_str());
            return fail(error, why);
        }
        done += static_cast<size_t>(n);
    }
    if (::fsync(fd.get()) != 0 || ::rename(temp.c_str(), path.c_str()) != 0) {
        const std::string why = path + ": " + strerror(errno);
        ::unlink(temp.c_str());
        return fail(error, why);
    }
    return true;  // the lock is released when `lock` closes
}

bool load_working_set_file(const std::string& path, WorkingSet& out, std::string& error) {
    struct stat st {};
    auto fd = open_regular_file(path, "working set", error, &st);
    if (!fd) return false;
    if (static_cast<uint64_t>(st.st_size) > kMaxWorkingSetFileBytes)
        return fail(error, "working set " + path + ": larger than " + std::to_string(kMaxWorkingSetFileBytes) + " bytes");
    std::string bytes(static_cast<size_t>(st.st_size), '\0');
    size_t done = 0;
    while (done < bytes.size()) {
        const ssize_t n = ::pread(fd->get(), bytes.data() + done, bytes.size() - done, static_cast<off_t>(done));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return fail(error, "working set " + path + ": read: " + strerror(errno));
        if (n == 0) break;
        done += static_cast<size_t>(n);
    }
    bytes.resize(done);
    if (!decode_working_set(bytes, out, error)) return fail(error, "working set " + path + ": " + error);
    return true;
}

bool load_working_set_for(const std::string& path, const SnapshotIdentity& expected, WorkingSet& out,
                          std::string& error) {
    WorkingSet set;
    if (!load_working_set_file(path, set, error)) return false;
    if (set.identity.size_bytes != expected.size_bytes)
        return fail(error, "working set " + path + ": recorded from another snapshot (" +
                               std::to_string(set.identity.size_bytes) + " bytes, this one has " +
                               std::to_string(expected.size_bytes) + ")");
    if (set.identity.fingerprint != expected.fingerprint)
        return fail(error, "working set " + path + ": recorded from another snapshot (content fingerprint differs)");
    out = std::move(set);
    return true;
}

}  // namespace ringpager
