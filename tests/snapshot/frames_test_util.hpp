// Test data and readers for compressed layered snapshots (format version 2):
// a base plus two sparse diffs whose pages partly compress, built with frames,
// and a reader that rebuilds guest memory through a Source's plan() and
// fetch() the way the pager does, waiting on the fetch sink with a condition
// variable.
#pragma once

#include <xxhash.h>

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>

#include "snapshot_test_util.hpp"

namespace snaptest {

// Makes a page compressible about half the time, deterministically from its
// content: its second half repeats its first. Zero pages stay zero and
// duplicates stay duplicates.
inline void soften(Bytes& memory) {
    for (uint64_t at = 0; at < memory.size(); at += page_bytes) {
        std::byte* p = memory.data() + at;
        if ((static_cast<uint8_t>(p[8]) & 1) == 0) std::memcpy(p + page_bytes / 2, p, page_bytes / 2);
    }
}

// A base plus two sparse diffs on disk and the memory they flatten to.
struct FramedChain {
    std::string base;
    std::vector<std::string> diffs;
    Bytes flat;
};

inline FramedChain make_framed_chain(const TempDir& dir, uint64_t pages, uint64_t seed) {
    FramedChain c;
    PageGen gen(seed, 0.5, 0.1);
    c.flat.resize(pages * page_bytes);
    gen.fill(c.flat, 0, pages);
    soften(c.flat);
    c.base = dir.file("mem.base");
    write_file(c.base, c.flat);
    for (int i = 1; i <= 2; ++i) {
        auto changed = change_pages(c.flat, gen, i == 1 ? 0.10 : 0.05);
        soften(c.flat);
        c.diffs.push_back(dir.file("mem.diff" + std::to_string(i)));
        write_sparse_diff(c.diffs.back(), c.flat, changed);
    }
    return c;
}

inline ringpager::SnapshotBuildReport build_framed(const FramedChain& c, const std::string& manifest,
                                                   uint64_t block_size, ringpager::FrameOptions frames) {
    ringpager::SnapshotBuildOptions options;
    options.base_path = c.base;
    options.diff_paths = c.diffs;
    options.manifest_path = manifest;
    options.block_size_bytes = block_size;
    options.sync = false;
    options.frames = frames;
    ringpager::SnapshotBuildReport report;
    std::string error;
    EXPECT_TRUE(ringpager::build_layered_snapshot(options, report, error)) << error;
    return report;
}

inline ringpager::FrameOptions frame_options(ringpager::FrameCodec codec, uint64_t frame_bytes = 2 << 20) {
    ringpager::FrameOptions f;
    f.codec = codec;
    f.frame_bytes = frame_bytes;
    return f;
}

// A FetchSink that records each fetch's outcome and lets a test wait for it.
class WaitingSink final : public ringpager::FetchSink {
public:
    void fetched(uint64_t cookie, const std::string& error) override {
        std::lock_guard lock(mu_);
        done_[cookie].push_back(error);
        changed_.notify_all();
    }
    // The outcome of fetch `cookie`; "timed out" if it never came.
    std::string wait(uint64_t cookie) {
        std::unique_lock lock(mu_);
        if (!changed_.wait_for(lock, std::chrono::seconds(30), [&] { return done_.count(cookie) != 0; })) {
            return "timed out";
        }
        return done_[cookie].front();
    }
    // Waits until `count` callbacks came in all; false if they did not within 30 s.
    bool wait_for_calls(size_t count) {
        std::unique_lock lock(mu_);
        return changed_.wait_for(lock, std::chrono::seconds(30), [&] { return calls_locked() >= count; });
    }
    size_t calls() {
        std::lock_guard lock(mu_);
        return calls_locked();
    }
    // Callbacks per cookie: each fetch must be answered exactly once.
    std::map<uint64_t, std::vector<std::string>> outcomes() {
        std::lock_guard lock(mu_);
        return done_;
    }

private:
    size_t calls_locked() const {
        size_t n = 0;
        for (const auto& [cookie, v] : done_) n += v.size();
        return n;
    }
    std::mutex mu_;
    std::condition_variable changed_;
    std::map<uint64_t, std::vector<std::string>> done_;
};

struct PlanReadStats {
    uint64_t fetches = 0;
    uint64_t ready_reads = 0;
    std::string error;   // the first fetch that failed
};

// Rebuilds guest memory as the pager would: plan each piece of at most
// `max_length_bytes`; zero -> zeros, ready -> pread of that file, fetch ->
// fetch() and wait, then plan again.
inline Bytes read_through_plans(const ringpager::Source& source, uint64_t max_length_bytes, PlanReadStats& stats) {
    Bytes out(source.size_bytes());
    auto fds = source.file_fds();
    auto sink = std::make_shared<WaitingSink>();
    uint64_t cookie = 0;
    uint64_t offset = 0;
    while (offset < source.size_bytes()) {
        ringpager::ReadPlan plan = source.plan(offset, max_length_bytes);
        EXPECT_GT(plan.length_bytes, 0u) << "at " << offset;
        EXPECT_LE(plan.length_bytes, max_length_bytes);
        EXPECT_LE(offset + plan.length_bytes, source.size_bytes());
        if (plan.length_bytes == 0) break;
        if (plan.kind == ringpager::ReadPlan::Kind::fetch) {
            ++stats.fetches;
            source.fetch(offset, plan.length_bytes, sink, ++cookie);
            std::string error = sink->wait(cookie);
            if (!error.empty()) {
                stats.error = error;
                break;
            }
            ringpager::ReadPlan again = source.plan(offset, max_length_bytes);
            EXPECT_NE(again.kind, ringpager::ReadPlan::Kind::fetch) << "still not ready after its fetch, at " << offset;
            if (again.kind == ringpager::ReadPlan::Kind::fetch) break;
            continue;
        }
        if (plan.kind == ringpager::ReadPlan::Kind::ready) {
            ++stats.ready_reads;
            EXPECT_LT(plan.file_index, fds.size());
            ssize_t n = ::pread(fds[plan.file_index], out.data() + offset, plan.length_bytes,
                                static_cast<off_t>(plan.file_offset));
            EXPECT_EQ(n, static_cast<ssize_t>(plan.length_bytes)) << "pread at file offset " << plan.file_offset;
        }
        offset += plan.length_bytes;
    }
    return out;
}

inline uint64_t xxh3(const Bytes& b) { return XXH3_64bits(b.data(), b.size()); }

}  // namespace snaptest
