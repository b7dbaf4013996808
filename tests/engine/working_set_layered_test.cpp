// Pins working sets on layered snapshots (issue 11): their identity comes
// from the manifest's block checksums without reading a layer file, so the
// uncompressed, zstd and lz4 builds of one guest share it.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>

#include "common/engine_fixture.hpp"
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

std::shared_ptr<const Source> open_snapshot(const TempDir& dir, const std::string& manifest) {
    LayeredSourceOptions options;
    options.decompress_dir = dir.file("");
    std::string error;
    std::shared_ptr<const Source> source = open_layered_source(manifest, options, error);
    EXPECT_TRUE(source) << error;
    return source;
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
        builds.push_back(open_snapshot(dir, manifest));
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
    auto other_zstd = open_snapshot(dir, build(dir, other, "other.rpm", FrameCodec::zstd));
    ASSERT_TRUE(other_zstd);
    EXPECT_NE(identity_of(*other_zstd).fingerprint, plain.fingerprint);
    // The raw memory file keeps its identity of sampled bytes: another one.
    std::string error;
    auto raw = open_raw_source(mem, error);
    ASSERT_TRUE(raw) << error;
    EXPECT_NE(identity_of(*raw).fingerprint, plain.fingerprint);
}

}  // namespace
