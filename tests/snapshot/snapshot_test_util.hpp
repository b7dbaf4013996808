// Test data for the layered snapshot tests: pseudo-random guest memory with a
// chosen share of zero and duplicate pages, full memory files, sparse diff
// files holding only the changed pages, and a reader that rebuilds guest
// memory through a Source's extents.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "ringpager/file_desc.hpp"
#include "ringpager/snapshot.hpp"

namespace snaptest {

inline constexpr uint64_t page_bytes = 4096;
using Bytes = std::vector<std::byte>;

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it.
class TempDir {
public:
    TempDir() {
        const char* base = std::getenv("TMPDIR");
        std::string pattern = std::string(base && *base ? base : "/tmp") + "/rp-snapshot-test-XXXXXX";
        std::vector<char> buf(pattern.begin(), pattern.end());
        buf.push_back('\0');
        if (::mkdtemp(buf.data()) == nullptr) ADD_FAILURE() << "mkdtemp " << pattern << ": " << std::strerror(errno);
        path_ = buf.data();
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;

    std::string file(const std::string& name) const { return path_ + "/" + name; }
    const std::string& path() const { return path_; }

private:
    std::string path_;
};

// Deterministic page contents: kinds come in runs (as in real guest memory),
// each run zero, a copy of earlier non-zero pages, or fresh random bytes.
class PageGen {
public:
    PageGen(uint64_t seed, double zero_fraction, double dup_fraction)
        : rng_(seed), zero_(zero_fraction), dup_(dup_fraction) {}

    // Fills pages [first, first + count) of `memory` (page-indexed).
    void fill(Bytes& memory, uint64_t first, uint64_t count) {
        uint64_t page = first;
        while (page < first + count) {
            uint64_t run = std::min<uint64_t>(1 + rng_() % 8, first + count - page);
            double pick = std::uniform_real_distribution<double>(0, 1)(rng_);
            for (uint64_t i = 0; i < run; ++i, ++page) {
                std::byte* p = memory.data() + page * page_bytes;
                if (pick < zero_) {
                    std::memset(p, 0, page_bytes);
                } else if (pick < zero_ + dup_ && !pool_.empty()) {
                    std::memcpy(p, pool_[rng_() % pool_.size()].data(), page_bytes);
                } else {
                    random_page(p);
                    pool_.emplace_back(p, p + page_bytes);
                }
            }
        }
    }

    void random_page(std::byte* p) {
        for (uint64_t i = 0; i < page_bytes; i += 8) {
            uint64_t v = rng_();
            std::memcpy(p + i, &v, 8);
        }
    }

    std::mt19937_64& rng() { return rng_; }

private:
    std::mt19937_64 rng_;
    double zero_;
    double dup_;
    std::vector<Bytes> pool_;   // every random page made so far: the duplicates' sources
};

inline void write_file(const std::string& path, const Bytes& bytes) {
    auto f = ringpager::FileDesc::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT_TRUE(f.ok()) << path << ": " << f.error().message();
    size_t done = 0;
    while (done < bytes.size()) {
        ssize_t n = ::pwrite(f->get(), bytes.data() + done, bytes.size() - done, static_cast<off_t>(done));
        ASSERT_GT(n, 0) << path << ": " << std::strerror(errno);
        done += static_cast<size_t>(n);
    }
}

inline Bytes read_file(const std::string& path) {
    Bytes out;
    auto f = ringpager::FileDesc::open(path.c_str(), O_RDONLY);
    EXPECT_TRUE(f.ok()) << path;
    if (!f.ok()) return out;
    struct stat st {};
    EXPECT_EQ(::fstat(f->get(), &st), 0);
    out.resize(static_cast<size_t>(st.st_size));
    EXPECT_EQ(::pread(f->get(), out.data(), out.size(), 0), static_cast<ssize_t>(out.size()));
    return out;
}

// Writes a Firecracker-style diff: a sparse file of the memory's size whose
// only data are the changed pages (runs of changed pages written together).
inline void write_sparse_diff(const std::string& path, const Bytes& memory, const std::vector<uint64_t>& changed) {
    auto f = ringpager::FileDesc::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT_TRUE(f.ok()) << path;
    ASSERT_EQ(::ftruncate(f->get(), static_cast<off_t>(memory.size())), 0);
    for (uint64_t page : changed) {
        const std::byte* p = memory.data() + page * page_bytes;
        ASSERT_EQ(::pwrite(f->get(), p, page_bytes, static_cast<off_t>(page * page_bytes)),
                  static_cast<ssize_t>(page_bytes));
    }
}

// Changes `fraction` of the pages of `memory` (in runs) with new contents from
// `gen` and returns the changed page indices, sorted and unique.
inline std::vector<uint64_t> change_pages(Bytes& memory, PageGen& gen, double fraction) {
    uint64_t pages = memory.size() / page_bytes;
    std::set<uint64_t> changed;
    uint64_t target = static_cast<uint64_t>(static_cast<double>(pages) * fraction);
    while (changed.size() < target) {
        uint64_t first = gen.rng()() % pages;
        uint64_t run = std::min<uint64_t>(1 + gen.rng()() % 6, pages - first);
        gen.fill(memory, first, run);
        for (uint64_t i = 0; i < run; ++i) changed.insert(first + i);
    }
    return {changed.begin(), changed.end()};
}

// Rebuilds guest memory by asking `source` for extents of at most
// `max_length_bytes` and reading data extents with pread.
inline Bytes read_through_source(const ringpager::Source& source, uint64_t max_length_bytes) {
    Bytes out(source.size_bytes());
    auto fds = source.file_fds();
    uint64_t offset = 0;
    while (offset < source.size_bytes()) {
        ringpager::SourceExtent e = source.lookup(offset, max_length_bytes);
        EXPECT_GT(e.length_bytes, 0u) << "at " << offset;
        EXPECT_LE(e.length_bytes, max_length_bytes);
        EXPECT_LE(offset + e.length_bytes, source.size_bytes());
        if (e.length_bytes == 0) break;
        if (e.kind == ringpager::SourceExtent::Kind::data) {
            EXPECT_LT(e.file_index, fds.size());
            ssize_t n = ::pread(fds[e.file_index], out.data() + offset, e.length_bytes, static_cast<off_t>(e.file_offset));
            EXPECT_EQ(n, static_cast<ssize_t>(e.length_bytes)) << "pread at file offset " << e.file_offset;
        }
        offset += e.length_bytes;
    }
    return out;
}

// Index of the first differing page, or -1.
inline int64_t first_different_page(const Bytes& a, const Bytes& b) {
    if (a.size() != b.size()) return 0;
    for (uint64_t p = 0; p * page_bytes < a.size(); ++p) {
        if (std::memcmp(a.data() + p * page_bytes, b.data() + p * page_bytes, page_bytes) != 0) {
            return static_cast<int64_t>(p);
        }
    }
    return -1;
}

// Builds with test defaults (no fsync) and asserts success.
inline ringpager::SnapshotBuildReport build(const std::string& base, const std::vector<std::string>& diffs,
                                            const std::string& manifest, uint64_t block_size = 4096) {
    ringpager::SnapshotBuildOptions options;
    options.base_path = base;
    options.diff_paths = diffs;
    options.manifest_path = manifest;
    options.block_size_bytes = block_size;
    options.sync = false;
    ringpager::SnapshotBuildReport report;
    std::string error;
    EXPECT_TRUE(ringpager::build_layered_snapshot(options, report, error)) << error;
    return report;
}

inline uint64_t file_size(const std::string& path) {
    struct stat st {};
    EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
    return static_cast<uint64_t>(st.st_size);
}

}  // namespace snaptest
