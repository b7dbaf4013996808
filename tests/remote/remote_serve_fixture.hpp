// The fixture of the remote serving tests: a 3-layer chain built locally and
// pushed to a fresh bucket, a chunk cache on a directory of the test's own,
// the remote source, and restores of simulated VMs checked page by page.
// With frame options the chain is format version 2 (zstd or lz4 frames), and
// a chunk of the cache is one stored frame.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <optional>
#include <set>
#include <thread>

#include "common/engine_fixture.hpp"
#include "common/process.hpp"
#include "engine/layered_chain.hpp"
#include "remote/chunk_cache.hpp"
#include "remote/snapshot_store.hpp"
#include "snapshot/layered/format.hpp"
#include "source/remote_source.hpp"
#include "test_util.hpp"

namespace rgwtest {

using namespace ringpager;
using namespace ringpager::remote;
using namespace ringpager::testing;

constexpr uint64_t MiB = 1024 * 1024;
constexpr uint64_t kChunkBytes = 256 << 10;

// A 3-layer chain built locally and pushed to a fresh bucket as "snap".
class RemoteServe : public rgwtest::ProxyFixture {
protected:
    void SetUp() override { set_up(4096); }
    void set_up(uint64_t block_size, std::optional<FrameOptions> frames = std::nullopt) {
        ProxyFixture::SetUp();
        if (HasFatalFailure()) return;
        block_size_ = block_size;
        chain_ = build_chain(dir_, 16 * MiB, block_size, frames);
        PushReport report;
        ASSERT_EQ(push_snapshot(*client, chain_.manifest, at("snap"), PushOptions{}, report), "");
        ASSERT_EQ(report.layers_uploaded, 3u);
        ASSERT_EQ(layered::load_manifest(chain_.manifest, m_), "");
    }

    std::shared_ptr<ChunkCache> open_cache(S3Config config, std::string* error_out = nullptr,
                                           const std::function<void(ChunkCacheOptions&)>& tweak = {}) {
        ChunkCacheOptions options;
        options.directory = dir_.file("cache");
        options.chunk_bytes = kChunkBytes;
        if (tweak) tweak(options);
        std::shared_ptr<ChunkCache> cache;
        const std::string error = ChunkCache::open(std::move(config), options, cache);
        if (error_out) *error_out = error;
        else EXPECT_EQ(error, "");
        return cache;
    }

    std::shared_ptr<const Source> open_source(const std::shared_ptr<ChunkCache>& cache) {
        std::string error;
        std::shared_ptr<const Source> source = open_remote_source(*client, at("snap"), cache, {}, error);
        EXPECT_TRUE(source) << error;
        return source;
    }

    // Chunks (of a compressed snapshot: frames) holding at least one block a
    // guest block maps to: what a VM made resident needs, each exactly once.
    uint64_t referenced_chunks() const { return chunks_referenced_by(m_); }
    static uint64_t chunks_referenced_by(const layered::Manifest& m) {
        std::set<std::pair<uint32_t, uint64_t>> chunks;
        const uint64_t slots = m.compressed() ? m.frame_blocks : std::max<uint64_t>(1, kChunkBytes / m.block_size_bytes);
        for (size_t i = 0; i < m.extents.size(); ++i) {
            const auto& e = m.extents[i];
            if (layered::is_zero_location(e.location)) continue;
            const uint64_t first = layered::location_slot(e.location);
            const uint64_t count = m.extent_end_block(i) - e.first_block;
            for (uint64_t s = first; s < first + count; ++s) chunks.insert({layered::location_layer(e.location), s / slots});
        }
        return chunks.size();
    }

    // Serves `vms` VMs in `mode` from an empty cache directory, then one VM
    // from an engine started again on that (now warm) directory. Each phase
    // checks what every kind of snapshot shares: one range GET per chunk (of
    // a compressed snapshot: frame) the guests need, however many VMs wait,
    // and none after the restart; nothing failed. `cold` and `restarted` add
    // what is the caller's own.
    using PhaseCheck = std::function<void(ChunkCache&, const Source&, RunningEngine&)>;
    void restore_cold_then_restarted(ServeMode mode, unsigned vms, const PhaseCheck& cold,
                                     const PhaseCheck& restarted) {
        std::filesystem::remove_all(dir_.file("cache"));
        {
            auto cache = open_cache(rgw().config());
            ASSERT_TRUE(cache);
            auto source = open_source(cache);
            ASSERT_TRUE(source);
            RunningEngine e = start_engine(dir_, "", mode, 2, std::chrono::seconds(30), source);
            restore(e, mode, vms, 0);
            EXPECT_EQ(cache->stats().fetches, referenced_chunks());
            EXPECT_EQ(cache->stats().refetches, 0u);
            EXPECT_EQ(cache->stats().chunk_failures, 0u);
            EXPECT_EQ(e.engine->stats().vms_failed, 0u);
            if (cold) cold(*cache, *source, e);
            ASSERT_TRUE(e.engine->wait_released(vms, kWait));
        }
        auto cache = open_cache(rgw().config());
        ASSERT_TRUE(cache);
        auto source = open_source(cache);
        ASSERT_TRUE(source);
        EXPECT_EQ(cache->stats().reused_chunks, referenced_chunks());   // every chunk verified and reused
        EXPECT_EQ(cache->stats().discarded_chunks, 0u);
        RunningEngine e = start_engine(dir_, "", mode, 2, std::chrono::seconds(30), source);
        restore(e, mode, 1, 0);
        EXPECT_EQ(cache->stats().fetches, 0u);
        EXPECT_EQ(cache->fetcher().stats().submitted, 0u);
        if (restarted) restarted(*cache, *source, e);
    }

    // Serves one VM on `e` (prefetch) until some of its pages are poisoned,
    // and returns what the engine logged meanwhile: without
    // --kill-on-failure the pages of a fetch that failed are poisoned (the
    // guest would get a memory error there, never wrong bytes), and neither
    // the VM nor the engine fails.
    std::string serve_until_poisoned(RunningEngine& e) {
        ::testing::internal::CaptureStderr();
        {
            sim::Guest guest = make_guest(e.socket, {8 * MiB, 8 * MiB});
            EXPECT_TRUE(guest.connect_and_send().ok());
            EXPECT_TRUE(e.engine->wait_until([](const EngineStats& s) { return s.pages_poisoned > 0; }, kWait));
        }
        EXPECT_TRUE(e.engine->wait_released(e.engine->stats().vms_accepted, kWait));
        std::string log = ::testing::internal::GetCapturedStderr();
        EXPECT_EQ(e.engine->stats().vms_failed, 0u);
        return log;
    }

    // One VM (prefetch) served through the fault proxy with one byte of the
    // next answer flipped: the bad chunk (of a compressed snapshot: frame) is
    // fetched once more and the VM is served byte-exact, nothing failed or
    // poisoned. Returns the source, for what else a caller checks.
    std::shared_ptr<const Source> restore_past_one_corrupt_answer() {
        auto cache = open_cache(proxied());
        EXPECT_TRUE(cache);
        if (!cache) return nullptr;
        auto source = open_source(cache);
        if (!source) return nullptr;
        proxy->set(FaultProxy::Mode::corrupt, 1);
        RunningEngine e = start_engine(dir_, "", ServeMode::prefetch, 2, std::chrono::seconds(30), source);
        restore(e, ServeMode::prefetch, 1, 0);
        const ChunkCacheStats s = cache->stats();
        EXPECT_EQ(s.refetches, 1u);
        EXPECT_EQ(s.fetches, referenced_chunks() + 1);
        EXPECT_EQ(s.chunk_failures, 0u);
        EXPECT_EQ(e.engine->stats().vms_failed, 0u);
        EXPECT_EQ(e.engine->stats().pages_poisoned, 0u);
        return source;
    }

    // `vms` guests connect at once; each touches all of its memory (lazy) or is
    // prefetched to resident; every page must match the flattened image.
    void restore(RunningEngine& e, ServeMode mode, unsigned vms, uint64_t vms_before) {
        auto image = sim::ExpectedImage::open(chain_.flat);
        ASSERT_TRUE(image.ok());
        std::vector<sim::Guest> guests;
        guests.reserve(vms);   // a connected guest is never moved
        for (unsigned i = 0; i < vms; ++i) {
            guests.push_back(make_guest(e.socket, {8 * MiB, 8 * MiB}, block_size_));
            ASSERT_TRUE(guests.back().connect_and_send().ok());
        }
        if (mode == ServeMode::lazy) {
            std::vector<std::thread> threads;
            for (unsigned i = 0; i < vms; ++i) {
                threads.emplace_back([&, i] { guests[i].touch(sim::Pattern::random, 2, 1.0, 4 + i); });
            }
            for (auto& t : threads) t.join();
        } else {
            ASSERT_TRUE(e.engine->wait_until(
                [&](const EngineStats& s) { return s.vms_resident == vms_before + vms; }, kWait));
        }
        for (auto& guest : guests) {
            const sim::VerifyReport report = guest.verify(*image);
            EXPECT_EQ(report.pages_checked, guest.page_count());
            EXPECT_EQ(report.mismatches, 0u) << report.describe();
        }
    }

    TempDir dir_;
    uint64_t block_size_ = 4096;
    Chain chain_;
    layered::Manifest m_;
};

}  // namespace rgwtest
