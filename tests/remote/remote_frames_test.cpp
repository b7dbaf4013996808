// Pins serving compressed snapshots (format version 2, zstd and lz4 frames)
// from the object store: a pushed 3-layer chain is restored byte-exact to
// several simulated VMs, lazy and prefetch, from an empty chunk cache with
// exactly one range GET per stored frame the guests need, each frame
// decompressed once; a restart on the same cache directory reuses every
// frame and sends no GET; a frame corrupted on the way is fetched once more
// and served; a source destroyed while a frame fetch is in flight leaves the
// fetch's callback a working frame cache, and the fetch reports once. The
// decompressed frames are kept for the next engine on the directory, trusted
// only as far as their checksums go; a layer smaller than its blocks' plain
// bytes (guest memory compresses) is served; 2 MiB blocks to huge-page guests.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <condition_variable>
#include <cstring>
#include <fstream>
#include <mutex>

#include "remote_serve_fixture.hpp"
#include "source/frame_source.hpp"

using namespace ringpager;
using namespace ringpager::remote;
using namespace ringpager::testing;
using rgwtest::FaultProxy;
using rgwtest::MiB;
using rgwtest::rgw;

namespace {

// Frames of 256 KiB: the 16 MiB chain is stored in a few dozen of them.
class RemoteFrames : public rgwtest::RemoteServe, public ::testing::WithParamInterface<FrameCodec> {
protected:
    void SetUp() override {
        FrameOptions frames;
        frames.codec = GetParam();
        frames.frame_bytes = 256 << 10;
        set_up(4096, frames);
        if (HasFatalFailure()) return;
        ASSERT_TRUE(m_.compressed());
    }
};

TEST_P(RemoteFrames, ManyVmsFromAnEmptyCacheFetchEachFrameOnceThenARestartFetchesNothing) {
    for (ServeMode mode : {ServeMode::prefetch, ServeMode::lazy}) {
        SCOPED_TRACE(mode == ServeMode::lazy ? "lazy" : "prefetch");
        restore_cold_then_restarted(
            mode, 3,
            [&](ChunkCache& cache, const Source& source, RunningEngine& e) {
                EXPECT_NE(source.describe().find("frames fetched into chunk cache " + dir_.file("cache")),
                          std::string::npos)
                    << source.describe();
                EXPECT_EQ(cache.fetcher().stats().succeeded, referenced_chunks());
                const auto frames = frame_cache_stats(source);
                ASSERT_TRUE(frames);
                EXPECT_EQ(frames->frames_decompressed, referenced_chunks());   // each frame decompressed once
                EXPECT_EQ(frames->frame_failures, 0u);
                EXPECT_EQ(e.engine->stats().pages_poisoned, 0u);
            },
            // Every frame decompressed before is verified and reused: none again.
            [&](ChunkCache&, const Source& source, RunningEngine&) {
                EXPECT_EQ(frame_cache_stats(source)->frames_reused, referenced_chunks());
                EXPECT_EQ(frame_cache_stats(source)->frames_decompressed, 0u);
            });
    }
}

// The decompressed frames kept in the cache directory are trusted only as
// far as their blocks' checksums go: one byte changed on disk while no engine
// ran, and the next engine decompresses that frame again and serves it right.
TEST_P(RemoteFrames, AKeptDecompressedFrameChangedOnDiskIsDecompressedAgain) {
    {
        auto cache = open_cache(rgw().config());
        ASSERT_TRUE(cache);
        auto source = open_source(cache);
        ASSERT_TRUE(source);
        RunningEngine e = start_engine(dir_, "", ServeMode::prefetch, 2, std::chrono::seconds(30), source);
        restore(e, ServeMode::prefetch, 1, 0);
        ASSERT_EQ(frame_cache_stats(*source)->frames_decompressed, referenced_chunks());
    }
    const std::string kept = dir_.file("cache") + "/frames-" + layered::hex_id(m_.snapshot_id) + ".plain";
    {
        // The first byte of data in the file: the first decompressed frame's.
        FileDesc fd(::open(kept.c_str(), O_RDWR | O_CLOEXEC));
        ASSERT_TRUE(fd.valid()) << kept;
        const off_t data = ::lseek(fd.get(), 0, SEEK_DATA);
        ASSERT_GE(data, 0);
        unsigned char byte = 0;
        ASSERT_EQ(::pread(fd.get(), &byte, 1, data), 1);
        byte ^= 0x5a;
        ASSERT_EQ(::pwrite(fd.get(), &byte, 1, data), 1);
    }
    auto cache = open_cache(rgw().config());
    ASSERT_TRUE(cache);
    auto source = open_source(cache);
    ASSERT_TRUE(source);
    EXPECT_EQ(frame_cache_stats(*source)->frames_reused, referenced_chunks() - 1);
    RunningEngine e = start_engine(dir_, "", ServeMode::prefetch, 2, std::chrono::seconds(30), source);
    restore(e, ServeMode::prefetch, 1, 0);
    EXPECT_EQ(frame_cache_stats(*source)->frames_decompressed, 1u);
    EXPECT_EQ(cache->stats().fetches, 0u);   // the stored frame was fine: no GET
    EXPECT_EQ(e.engine->stats().pages_poisoned, 0u);
}

TEST_P(RemoteFrames, AFrameCorruptedOnTheWayIsFetchedAgainOnceAndServed) {
    auto source = restore_past_one_corrupt_answer();
    ASSERT_TRUE(source);
    EXPECT_EQ(frame_cache_stats(*source)->frame_failures, 0u);   // the bad bytes never reached a worker
}

// Records the one callback of a fetch.
class RecordingSink final : public FetchSink {
public:
    void fetched(uint64_t cookie, const std::string& error) override {
        std::lock_guard lock(mu_);
        calls_.push_back({cookie, error});
        done_.notify_all();
    }
    std::vector<std::pair<uint64_t, std::string>> wait_one() {
        std::unique_lock lock(mu_);
        done_.wait_for(lock, kWait, [&] { return !calls_.empty(); });
        return calls_;
    }

private:
    std::mutex mu_;
    std::condition_variable done_;
    std::vector<std::pair<uint64_t, std::string>> calls_;
};

TEST_P(RemoteFrames, ASourceDestroyedWhileAFetchIsInFlightLeavesTheCallbackAWorkingFrameCache) {
    auto cache = open_cache(proxied());
    ASSERT_TRUE(cache);
    auto source = open_source(cache);
    ASSERT_TRUE(source);
    // The store is away: the fetch of the first frame fails and is started
    // again while the source goes away.
    proxy->go_away();
    uint64_t offset = 0;
    while (source->plan(offset, 4096).kind != ReadPlan::Kind::fetch) offset += 4096;
    auto sink = std::make_shared<RecordingSink>();
    source->fetch(offset, 4096, sink, 42, FetchFor::fault);
    ASSERT_TRUE(cache->wait_until([](const ChunkCacheStats& s) { return s.restarts >= 1; }, kWait));
    source.reset();   // the source, its manifest and its frame cache's last owner but the fetch
    ASSERT_TRUE(proxy->come_back());
    const auto calls = sink->wait_one();
    ASSERT_EQ(calls.size(), 1u);
    EXPECT_EQ(calls[0].first, 42u);
    // Fetched and verified after the source was gone; then either decompressed
    // before the frame cache's last owner let go, or failed by its destructor
    // (nobody reads it any more): never a callback into a destroyed cache.
    EXPECT_TRUE(calls[0].second.empty() || calls[0].second == "the snapshot source was closed") << calls[0].second;
    EXPECT_EQ(cache->stats().chunk_failures, 0u);
}

// Guest memory compresses (a real guest's does: 0.59x with zstd), so a
// layer's file is smaller than the blocks it stores: the cache sizes and
// bounds a compressed layer by its frames, not by its blocks' plain bytes.
TEST_P(RemoteFrames, ALayerSmallerThanTheBlocksItStoresIsServed) {
    constexpr uint64_t kSize = 16 * MiB;
    const std::string mem = dir_.file("compressible.mem");
    {
        std::string bytes(kSize, '\0');
        for (uint64_t page = 0; page < kSize / 4096; page++) {
            char* p = bytes.data() + page * 4096;
            std::memset(p, static_cast<int>(1 + page % 7), 4096);
            std::memcpy(p, &page, sizeof page);  // every page its own: nothing is a duplicate
        }
        std::ofstream(mem, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    }
    SnapshotBuildOptions options;
    options.base_path = mem;
    options.manifest_path = dir_.file("compressible.rpm");
    options.frames = FrameOptions{};
    options.frames->codec = GetParam();
    options.frames->frame_bytes = 256 << 10;
    SnapshotBuildReport built;
    std::string error;
    ASSERT_TRUE(build_layered_snapshot(options, built, error)) << error;
    layered::Manifest m;
    ASSERT_EQ(layered::load_manifest(options.manifest_path, m), "");
    ASSERT_EQ(m.layers.size(), 1u);
    ASSERT_LT(m.layers[0].file_size_bytes, m.layers[0].block_count * m.block_size_bytes);  // the case at hand
    PushReport pushed;
    ASSERT_EQ(push_snapshot(*client, options.manifest_path, at("small"), PushOptions{}, pushed), "");
    auto cache = open_cache(rgw().config());
    ASSERT_TRUE(cache);
    std::shared_ptr<const Source> source = open_remote_source(*client, at("small"), cache, {}, error);
    ASSERT_TRUE(source) << error;
    RunningEngine e = start_engine(dir_, "", ServeMode::prefetch, 2, std::chrono::seconds(30), source);
    sim::Guest guest = make_guest(e.socket, {kSize});
    ASSERT_TRUE(guest.connect_and_send().ok());
    ASSERT_TRUE(e.engine->wait_until([](const EngineStats& s) { return s.vms_resident == 1; }, kWait));
    auto image = sim::ExpectedImage::open(mem);
    ASSERT_TRUE(image.ok());
    const sim::VerifyReport report = guest.verify(*image);
    EXPECT_EQ(report.pages_checked, kSize / 4096);
    EXPECT_EQ(report.mismatches, 0u) << report.describe();
    EXPECT_EQ(cache->stats().fetches, m.frames.size());
    EXPECT_EQ(e.engine->stats().pages_poisoned, 0u);
}

INSTANTIATE_TEST_SUITE_P(Codecs, RemoteFrames, ::testing::Values(FrameCodec::zstd, FrameCodec::lz4),
                         [](const ::testing::TestParamInfo<FrameCodec>& p) {
                             return p.param == FrameCodec::zstd ? "zstd" : "lz4";
                         });

// The same chain in 2 MiB blocks, two to a frame, served to guests with 2 MiB
// huge pages: from an empty cache, then from the warm directory after a restart.
class RemoteFramesHuge : public rgwtest::RemoteServe, public ::testing::WithParamInterface<FrameCodec> {
protected:
    void SetUp() override {
        ASSERT_EQ(sim::ensure_hugepages(64), "");
        FrameOptions frames;
        frames.codec = GetParam();
        frames.frame_bytes = 4 * MiB;
        set_up(2 * MiB, frames);
        if (HasFatalFailure()) return;
        ASSERT_TRUE(m_.compressed());
    }
};

TEST_P(RemoteFramesHuge, HugePageGuestsRestoreByteExactFromAnEmptyCacheThenAfterARestart) {
    for (ServeMode mode : {ServeMode::lazy, ServeMode::prefetch}) {
        SCOPED_TRACE(mode == ServeMode::lazy ? "lazy" : "prefetch");
        restore_cold_then_restarted(
            mode, 2,
            [&](ChunkCache&, const Source& source, RunningEngine&) {
                EXPECT_EQ(frame_cache_stats(source)->frames_decompressed, referenced_chunks());
            },
            [&](ChunkCache&, const Source& source, RunningEngine&) {
                EXPECT_EQ(frame_cache_stats(source)->frames_reused, referenced_chunks());
                EXPECT_EQ(frame_cache_stats(source)->frames_decompressed, 0u);
            });
    }
}

INSTANTIATE_TEST_SUITE_P(Codecs, RemoteFramesHuge, ::testing::Values(FrameCodec::zstd, FrameCodec::lz4),
                         [](const ::testing::TestParamInfo<FrameCodec>& p) {
                             return p.param == FrameCodec::zstd ? "zstd" : "lz4";
                         });

}  // namespace
