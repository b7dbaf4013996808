// Pins working sets on snapshots served from the object store (issue 11): a
// set recorded on an s3:// snapshot (plain chunks, or zstd and lz4 frames)
// loads against it without a fetch (the identity is the manifest's), and its
// replay from an empty chunk cache serves the VM byte exact with one range
// GET per chunk, asking for the set's chunks before any other: when the rest
// of memory asks for its first fetch, every set page's bytes are ready.
#include <gtest/gtest.h>

#include <filesystem>
#include <mutex>
#include <set>

#include "ringpager/snapshot.hpp"

#include "reactor/test_hooks.hpp"
#include "remote_serve_fixture.hpp"
#include "snapshot/working_set.hpp"

using namespace ringpager;
using namespace ringpager::remote;
using namespace ringpager::testing;
using rgwtest::kChunkBytes;
using rgwtest::MiB;
using rgwtest::rgw;

namespace {

constexpr uint64_t kPages = 16 * MiB / 4096;

// One VM on `e` (prefetch) made resident, then its vCPU touches `plan`;
// every page must be the snapshot's, and the VM is released.
void replay_touch_and_verify(RunningEngine& e, const std::vector<uint64_t>& plan, const sim::ExpectedImage& image) {
    sim::Guest guest = make_guest(e.socket, {8 * MiB, 8 * MiB});
    ASSERT_TRUE(guest.connect_and_send().ok());
    ASSERT_TRUE(e.engine->wait_until([](const EngineStats& s) { return s.vms_resident == 1; }, kWait));
    guest.touch_pages(plan, 1);
    const sim::VerifyReport report = guest.verify(image);
    EXPECT_EQ(report.pages_checked, guest.page_count());
    EXPECT_EQ(report.mismatches, 0u) << report.describe();
    guest.disconnect();
    ASSERT_TRUE(e.engine->wait_released(1, kWait));
}

// Every chunk the guest needs was fetched exactly once, none failed.
void expect_each_chunk_fetched_once(const ChunkCache& cache, uint64_t chunks) {
    EXPECT_EQ(cache.stats().fetches, chunks);
    EXPECT_EQ(cache.stats().refetches, 0u);
    EXPECT_EQ(cache.stats().chunk_failures, 0u);
}

// The VM's fetches (first page of each, in order) begin with the set's, and
// none of the set's comes after the first of the rest. `rest`: where the
// rest begins (end: the set was all there was).
void expect_set_fetched_first(const std::vector<uint64_t>& fetches, const std::vector<bool>& in_set,
                              std::vector<uint64_t>::const_iterator& rest) {
    ASSERT_FALSE(fetches.empty());
    rest = std::find_if(fetches.begin(), fetches.end(), [&](uint64_t p) { return !in_set[p]; });
    EXPECT_NE(rest, fetches.begin());
    EXPECT_EQ(std::count_if(rest, fetches.end(), [&](uint64_t p) { return in_set[p]; }), 0);
}

class RemoteWorkingSet : public rgwtest::RemoteServe,
                         public ::testing::WithParamInterface<std::optional<FrameCodec>> {
protected:
    void SetUp() override {
        if (!GetParam()) return set_up(4096);
        FrameOptions frames;
        frames.codec = *GetParam();
        frames.frame_bytes = 256 << 10;
        set_up(4096, frames);
    }

    SnapshotIdentity identity_of(const Source& source) {
        SnapshotIdentity id;
        std::string error;
        EXPECT_TRUE(snapshot_identity(source, id, error)) << error;
        return id;
    }

    // Serves one VM lazily from an empty cache while recording; it touches
    // `plan` in order. Returns the set's path.
    std::string record(const std::vector<uint64_t>& plan, const sim::ExpectedImage& image) {
        std::filesystem::remove_all(dir_.file("cache"));
        auto cache = open_cache(rgw().config());
        auto source = open_source(cache);
        EXPECT_TRUE(source);
        if (!source) return {};
        const SnapshotIdentity id = identity_of(*source);
        const std::string path = dir_.file("set.ws");
        RunningEngine e = start_engine(dir_, "", ServeMode::lazy, 1, std::chrono::seconds(30), source,
                                       [&](EngineConfig& c) {
                                           c.listeners[0].record_ws = std::make_shared<WorkingSetRecording>(
                                               WorkingSetRecording{path, id.size_bytes, id.fingerprint});
                                       });
        sim::Guest guest = make_guest(e.socket, {8 * MiB, 8 * MiB});
        EXPECT_TRUE(guest.connect_and_send().ok());
        guest.touch_pages(plan, 1);
        const sim::VerifyReport report = guest.verify(image, sim::VerifyScope::touched_pages);
        EXPECT_EQ(report.mismatches, 0u) << report.describe();
        guest.disconnect();
        EXPECT_TRUE(e.engine->wait_released(1, kWait));
        EXPECT_EQ(e.engine->reports().at(0).ws_recorded, plan.size());
        return path;
    }
};

TEST_P(RemoteWorkingSet, RecordedThenReplayedFromAnEmptyCacheTheSetsChunksFirstEachOnce) {
    auto image = sim::ExpectedImage::open(chain_.flat);
    ASSERT_TRUE(image.ok());
    // 10% of the first region: the second region's chunks are the rest's.
    const std::vector<uint64_t> plan = sim::plan_pages(sim::Pattern::random, kPages / 2, 0.1, 45);
    const std::string path = record(plan, *image);
    ASSERT_FALSE(path.empty());

    // Replay from an empty cache: loading the set fetches nothing.
    std::filesystem::remove_all(dir_.file("cache"));
    auto cache = open_cache(rgw().config());
    ASSERT_TRUE(cache);
    auto source = open_source(cache);
    ASSERT_TRUE(source);
    WorkingSet set;
    std::string error;
    ASSERT_TRUE(load_working_set_for(path, identity_of(*source), set, error)) << error;
    EXPECT_EQ(cache->fetcher().stats().submitted, 0u);
    ASSERT_EQ(pages_from_runs(set.runs), plan);

    std::vector<bool> in_set(kPages, false);
    for (uint64_t p : plan) in_set[p] = true;
    std::mutex mu;
    std::vector<uint64_t> fetches;   // first page of each fetch the VM asked for, in order
    uint64_t set_pages_not_ready = UINT64_MAX;   // when the rest asked for its first fetch
    test_hooks::arm(test_hooks::Point::before_fetch, [&](uint64_t, uint64_t first_page) {
        std::lock_guard lock(mu);
        if (!in_set[first_page] && set_pages_not_ready == UINT64_MAX) {
            // On the reactor, before the fetch is asked: plan() reads the
            // cache's ready bits (lock free), as the fault path does.
            set_pages_not_ready = 0;
            for (uint64_t p : plan)
                set_pages_not_ready += source->plan(p * 4096, 4096).kind == ReadPlan::Kind::fetch;
        }
        fetches.push_back(first_page);
    });
    struct Disarm {
        ~Disarm() { test_hooks::disarm(test_hooks::Point::before_fetch); }
    } disarm;
    RunningEngine e = start_engine(dir_, "", ServeMode::prefetch, 1, std::chrono::seconds(30), source, replaying(set));
    ASSERT_NO_FATAL_FAILURE(replay_touch_and_verify(e, plan, *image));

    // Each chunk (frame) the guest needs, fetched once.
    expect_each_chunk_fetched_once(*cache, referenced_chunks());
    {
        std::lock_guard lock(mu);
        // The set's fetches first, then the rest's; by the rest's first, the
        // set's bytes were all in.
        std::vector<uint64_t>::const_iterator rest;
        ASSERT_NO_FATAL_FAILURE(expect_set_fetched_first(fetches, in_set, rest));
        ASSERT_NE(rest, fetches.cend());
        EXPECT_EQ(set_pages_not_ready, 0u);
    }
    const VmReport r = e.engine->reports().at(0);
    EXPECT_EQ(r.ws_pages, plan.size());
    EXPECT_GT(r.ws_saved, 0u);
    EXPECT_EQ(r.ws_saved + r.ws_missed, plan.size());
    EXPECT_EQ(e.engine->stats().vms_failed, 0u);
}

// A packed working set pushed with its snapshot (`snapshot pack-ws`, then
// `snapshot push`): served from s3:// with no set named, the engine replays
// the manifest's packed order, so the packed layer's chunks are fetched
// first, front to back, every chunk of the packed snapshot once, and the VM
// is byte exact.
class RemotePackedWorkingSet : public rgwtest::RemoteServe {};

TEST_F(RemotePackedWorkingSet, APushedPackedSetIsFetchedFirstFrontToBackAndReplayed) {
    auto image = sim::ExpectedImage::open(chain_.flat);
    ASSERT_TRUE(image.ok());
    // The set: 10% of the guest in a fixed random order, recorded against
    // the local snapshot (the identity is the manifest's either way).
    const std::vector<uint64_t> plan = sim::plan_pages(sim::Pattern::random, kPages, 0.1, 46);
    std::string error;
    auto local = open_layered_source(chain_.manifest, true, error);
    ASSERT_TRUE(local) << error;
    WorkingSet set;
    ASSERT_TRUE(snapshot_identity(*local, set.identity, error)) << error;
    set.runs = runs_from_pages(plan);
    const std::string set_path = dir_.file("set.ws");
    ASSERT_TRUE(write_working_set_file(set_path, set, error)) << error;
    PackWorkingSetOptions pack;
    pack.manifest_path = chain_.manifest;
    pack.working_set_path = set_path;
    pack.out_path = std::filesystem::path(chain_.manifest).parent_path() / "packed";
    pack.sync = false;
    PackWorkingSetReport packed;
    ASSERT_TRUE(pack_working_set(pack, packed, error)) << error;
    ASSERT_GT(packed.packed_pages, 0u);
    PushReport pushed;
    ASSERT_EQ(push_snapshot(*client, pack.out_path, at("packed"), PushOptions{}, pushed), "");
    EXPECT_EQ(pushed.layers_uploaded, 1u);   // the chain's three are in the bucket already
    layered::Manifest m;
    ASSERT_EQ(layered::load_manifest(pack.out_path, m), "");
    auto local_packed = open_layered_source(pack.out_path, true, error);   // where each page's bytes are
    ASSERT_TRUE(local_packed) << error;
    const uint32_t packed_layer = static_cast<uint32_t>(m.layers.size() - 1);

    std::filesystem::remove_all(dir_.file("cache"));
    auto cache = open_cache(rgw().config());
    ASSERT_TRUE(cache);
    std::shared_ptr<const Source> source = open_remote_source(*client, at("packed"), cache, {}, error);
    ASSERT_TRUE(source) << error;
    ASSERT_EQ(source->packed_working_set().size(), m.packed_order.size());
    std::vector<bool> in_set(kPages, false);
    for (uint64_t p : plan) in_set[p] = true;
    std::mutex mu;
    std::vector<uint64_t> fetches;   // first page of each fetch the VM asked for, in order
    test_hooks::arm(test_hooks::Point::before_fetch, [&](uint64_t, uint64_t first_page) {
        std::lock_guard lock(mu);
        fetches.push_back(first_page);
    });
    struct Disarm {
        ~Disarm() { test_hooks::disarm(test_hooks::Point::before_fetch); }
    } disarm;
    RunningEngine e = start_engine(dir_, "", ServeMode::prefetch, 1, std::chrono::seconds(30), source);
    ASSERT_NO_FATAL_FAILURE(replay_touch_and_verify(e, plan, *image));

    expect_each_chunk_fetched_once(*cache, chunks_referenced_by(m));  // what the packed snapshot's guest needs
    {
        std::lock_guard lock(mu);
        // The set's fetches first; they are the packed layer's chunks, asked
        // for in its file order.
        std::vector<uint64_t>::const_iterator rest;
        ASSERT_NO_FATAL_FAILURE(expect_set_fetched_first(fetches, in_set, rest));
        uint64_t last_chunk = 0;
        for (auto it = fetches.begin(); it != rest; ++it) {
            const ReadPlan where = local_packed->plan(*it * 4096, 4096);
            ASSERT_EQ(where.kind, ReadPlan::Kind::ready);
            EXPECT_EQ(where.file_index, packed_layer) << "page " << *it;
            const uint64_t chunk = (where.file_offset - m.layers[packed_layer].data_offset_bytes) / kChunkBytes;
            EXPECT_GE(chunk, last_chunk) << "page " << *it;
            last_chunk = chunk;
        }
    }
    const VmReport r = e.engine->reports().at(0);
    EXPECT_EQ(r.ws_pages, plan.size());
    EXPECT_GT(r.ws_saved, 0u);
    EXPECT_EQ(e.engine->stats().vms_failed, 0u);
}

INSTANTIATE_TEST_SUITE_P(Sources, RemoteWorkingSet,
                         ::testing::Values(std::nullopt, std::optional<FrameCodec>(FrameCodec::zstd),
                                           std::optional<FrameCodec>(FrameCodec::lz4)),
                         [](const ::testing::TestParamInfo<std::optional<FrameCodec>>& p) {
                             return std::string(!p.param ? "chunks" : *p.param == FrameCodec::zstd ? "zstd" : "lz4");
                         });

}  // namespace
