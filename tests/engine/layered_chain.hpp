// A layered snapshot chain for engine tests: a generated base image and two
// sparse diffs (each taken against the memory as the previous one left it),
// built into a manifest, plus the flattened image a restore must match.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/engine_fixture.hpp"
#include "ringpager/snapshot.hpp"

namespace ringpager::testing {

struct Chain {
    std::string manifest;
    std::string flat;
};

// With `frames`, the snapshot is format version 2 (frames, compressed or not).
inline Chain build_chain(const TempDir& dir, uint64_t size, uint64_t block_size,
                         std::optional<FrameOptions> frames = std::nullopt) {
    Chain chain;
    const std::string base = make_image(dir, "base", size, 0.6, 21);
    std::vector<std::string> diffs;
    for (int i = 0; i < 2; i++) {
        sim::DiffOptions options;
        options.changed_fraction = 0.1;
        options.seed = 100 + i;
        options.page_size_bytes = 4096;
        diffs.push_back(dir.file("diff" + std::to_string(i)));
        auto d = sim::generate_diff(i == 0 ? base : dir.file("flat0"), diffs.back(), options);
        EXPECT_TRUE(d.ok());
        // Each diff is taken against the memory as it was after the previous one.
        EXPECT_TRUE(sim::flatten(base, std::vector<std::string>(diffs.begin(), diffs.end()),
                                 dir.file("flat" + std::to_string(i))).ok());
    }
    chain.flat = dir.file("flat1");
    chain.manifest = dir.file("snap.rpm");
    SnapshotBuildOptions options;
    options.base_path = base;
    options.diff_paths = diffs;
    options.manifest_path = chain.manifest;
    options.block_size_bytes = block_size;
    options.frames = frames;
    SnapshotBuildReport report;
    std::string error;
    EXPECT_TRUE(build_layered_snapshot(options, report, error)) << error;
    // Zero pages are scattered at 4 KiB granularity: only small blocks are ever wholly zero.
    if (block_size == 4096) {
        EXPECT_GT(report.blocks_zero, 0u);
    }
    return chain;
}

}  // namespace ringpager::testing
