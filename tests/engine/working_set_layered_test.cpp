// Pins working sets on layered snapshots (issue 11): their identity comes
// from the manifest's block checksums without reading a layer file, so the
// uncompressed, zstd and lz4 builds of one guest share it; a set recorded on
// the zstd build replays on the lz4 build byte exact, its frames fetched
// through the source's asynchronous path and installed before the rest.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <mutex>

#include "common/engine_fixture.hpp"
#include "reactor/test_hooks.hpp"
#include "snapshot/working_set.hpp"
#include "source/frame_source.hpp"

using namespace ringpager;
using namespace ringpager::testing;

namespace {

constexpr uint64_t MiB = 1024 * 1024;

// Builds `mem` into a snapshot at `name` (no frames: format version 1).
std::string build(const TempDir& dir, const std::string& mem, const std::string& name,
                  std::optional<FrameCodec> codec) {
    SnapshotBuildOptions options;
    options.base_path = mem;
    options.manifest_path = dir.file(name);
    if (codec) {
        FrameOptions f;
        f.codec = *codec;
        f.frame_bytes = 256 << 10;   // 16 frames in 4 MiB
        options.frames = f;
    }
    SnapshotBuildReport report;
    std::string error;
    EXPECT_TRUE(build_layered_snapshot(options, report, error)) << error;
    return options.manifest_path;
}


// "p*" for set pages, in order: what a failed ordering check prints.
std::string describe(const std::vector<uint64_t>& starts, const std::vector<bool>& in_set) {
    std::string out;
    for (uint64_t p : starts) out += std::to_string(p) + (in_set[p] ? "* " : " ");
    return out;
}

SnapshotIdentity identity_of(const Source& source) {
    SnapshotIdentity id;
    std::string error;
    EXPECT_TRUE(snapshot_identity(source, id, error)) << error;
    return id;
}

TEST(WorkingSetLayered, IdentityIsTheManifestsAndSharedByEveryBuildOfOneGuest) {
    TempDir dir;
    const std::string mem = make_image(dir, "mem", 4 * MiB, 0.3, 9);
    const std::string other = make_image(dir, "other", 4 * MiB, 0.3, 10);
    std::vector<std::shared_ptr<const Source>> builds;
    for (auto [name, codec] : {std::pair<const char*, std::optional<FrameCodec>>{"plain.rpm", std::nullopt},
                               {"zstd.rpm", FrameCodec::zstd},
                               {"lz4.rpm", FrameCodec::lz4}}) {
        const std::string manifest = build(dir, mem, name, codec);
        builds.push_back(open_layered(dir, manifest));
        ASSERT_TRUE(builds.back());
        // The layer files are emptied under the open source: an identity
        // that read (or decompressed) a byte of them would fail or differ.
        ASSERT_EQ(::truncate((manifest + ".layer0.rpl").c_str(), 0), 0);
    }
    const SnapshotIdentity plain = identity_of(*builds[0]);
    EXPECT_EQ(plain.size_bytes, 4 * MiB);
    EXPECT_EQ(identity_of(*builds[1]), plain);
    EXPECT_EQ(identity_of(*builds[2]), plain);
    for (size_t i : {1, 2}) {
        const auto stats = frame_cache_stats(*builds[i]);
        ASSERT_TRUE(stats);
        EXPECT_EQ(stats->requests, 0u);
        EXPECT_EQ(stats->frames_queued, 0u);
    }
    // Other bytes: another identity, in every build.
    auto other_zstd = open_layered(dir, build(dir, other, "other.rpm", FrameCodec::zstd));
    ASSERT_TRUE(other_zstd);
    EXPECT_NE(identity_of(*other_zstd).fingerprint, plain.fingerprint);
    // The raw memory file keeps its identity of sampled bytes: another one.
    std::string error;
    auto raw = open_raw_source(mem, error);
    ASSERT_TRUE(raw) << error;
    EXPECT_NE(identity_of(*raw).fingerprint, plain.fingerprint);
}

TEST(WorkingSetLayered, RecordedOnZstdReplaysOnLz4ByteExact) {
    TempDir dir;
    const std::string mem = make_image(dir, "mem", 4 * MiB, 0.2, 9);
    auto image = sim::ExpectedImage::open(mem);
    ASSERT_TRUE(image.ok());
    const std::vector<uint64_t> plan = sim::plan_pages(sim::Pattern::random, 1024, 0.1, 44);
    const std::string path = dir.file("set.ws");

    // Record: lazy on the zstd build, the guest touches the plan in order.
    auto zstd = open_layered(dir, build(dir, mem, "zstd.rpm", FrameCodec::zstd));
    ASSERT_TRUE(zstd);
    const SnapshotIdentity id = identity_of(*zstd);
    {
        RunningEngine e = start_engine(dir, "", ServeMode::lazy, 1, std::chrono::seconds(30), zstd,
                                       [&](EngineConfig& c) {
                                           c.listeners[0].record_ws = std::make_shared<WorkingSetRecording>(
                                               WorkingSetRecording{path, id.size_bytes, id.fingerprint});
                                       });
        sim::Guest guest = make_guest(e.socket, {4 * MiB});
        ASSERT_TRUE(guest.connect_and_send().ok());
        guest.touch_pages(plan, 1);
        const sim::VerifyReport report = guest.verify(*image, sim::VerifyScope::touched_pages);
        EXPECT_EQ(report.mismatches, 0u) << report.describe();
        guest.disconnect();
        ASSERT_TRUE(e.engine->wait_released(1, kWait));
        EXPECT_EQ(e.engine->reports().at(0).ws_recorded, plan.size());
    }

    // Replay on the lz4 build: the same identity, so the set loads.
    auto lz4 = open_layered(dir, build(dir, mem, "lz4.rpm", FrameCodec::lz4));
    ASSERT_TRUE(lz4);
    WorkingSet set;
    std::string error;
    ASSERT_TRUE(load_working_set_for(path, identity_of(*lz4), set, error)) << error;
    EXPECT_EQ(pages_from_runs(set.runs), plan);
    std::mutex mu;
    std::vector<uint64_t> installs;
    test_hooks::arm(test_hooks::Point::before_copy, [&](uint64_t, uint64_t first_page) {
        std::lock_guard lock(mu);
        installs.push_back(first_page);
    });
    std::vector<uint64_t> fetches;
    test_hooks::arm(test_hooks::Point::before_fetch, [&](uint64_t, uint64_t first_page) {
        std::lock_guard lock(mu);
        fetches.push_back(first_page);
    });
    struct Disarm {
        ~Disarm() {
            test_hooks::disarm(test_hooks::Point::before_copy);
            test_hooks::disarm(test_hooks::Point::before_fetch);
        }
    } disarm;
    RunningEngine e = start_engine(dir, "", ServeMode::prefetch, 1, std::chrono::seconds(30), lz4, replaying(set));
    sim::Guest guest = make_guest(e.socket, {4 * MiB});
    ASSERT_TRUE(guest.connect_and_send().ok());
    ASSERT_TRUE(e.engine->wait_until([](const EngineStats& s) { return s.vms_resident == 1; }, kWait));
    guest.touch_pages(plan, 1);
    const sim::VerifyReport report = guest.verify(*image);
    EXPECT_EQ(report.pages_checked, guest.page_count());
    EXPECT_EQ(report.mismatches, 0u) << report.describe();
    {
        // The set first: a replay read or fetch starts at a set page still
        // missing, the rest's at a page outside the set (the set's are all
        // in by then). So the reads, and the fetches of frames, that start
        // at set pages come first, and none after the rest has begun.
        std::lock_guard lock(mu);
        std::vector<bool> in_set(1024, false);
        for (uint64_t p : plan) in_set[p] = true;
        for (const auto* starts : {&installs, &fetches}) {
            ASSERT_FALSE(starts->empty());
            const auto rest = std::find_if(starts->begin(), starts->end(), [&](uint64_t p) { return !in_set[p]; });
            EXPECT_NE(rest, starts->begin());
            EXPECT_EQ(std::count_if(rest, starts->end(), [&](uint64_t p) { return in_set[p]; }), 0)
                << "a set page was read or fetched after the rest had begun: reads " << describe(installs, in_set)
                << "; fetches " << describe(fetches, in_set);
        }
    }
    guest.disconnect();
    ASSERT_TRUE(e.engine->wait_released(1, kWait));
    const VmReport r = e.engine->reports().at(0);
    EXPECT_EQ(r.ws_pages, plan.size());
    EXPECT_GT(r.ws_saved, 0u);
    EXPECT_EQ(r.ws_saved + r.ws_missed, plan.size());
    EXPECT_GT(r.ws_read_bytes, 0u);
    EXPECT_EQ(e.engine->stats().vms_failed, 0u);
    const auto stats = frame_cache_stats(*lz4);
    ASSERT_TRUE(stats);
    EXPECT_EQ(stats->frames_queued, stats->frames_decompressed);   // each frame once
}

}  // namespace
