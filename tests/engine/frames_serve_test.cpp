// Pins serving compressed layered snapshots (format version 2) to VMs through
// the real engine: a base plus two diffs, zstd or lz4, restores byte-exact in
// lazy and prefetch mode (4 KiB and 2 MiB pages); a second restore from the
// same engine decompresses nothing (every frame is in the cache); a frame
// corrupted after open fails the fetch and, with --kill-on-failure, kills the
// VM with the frame named in the log.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include "common/engine_fixture.hpp"
#include "common/process.hpp"
#include "engine/layered_chain.hpp"
#include "snapshot/layered/format.hpp"
#include "source/frame_source.hpp"

using namespace ringpager;
using namespace ringpager::testing;

namespace {

constexpr uint64_t MiB = 1024 * 1024;

FrameOptions frames(FrameCodec codec) {
    FrameOptions f;
    f.codec = codec;
    f.frame_bytes = 256 << 10;   // several frames per layer even at 16 MiB
    return f;
}


// One VM touches all of its memory (lazy) or is prefetched to resident; every
// page must match the flattened image.
void restore_once(RunningEngine& e, const sim::ExpectedImage& image, ServeMode mode, uint64_t page_size,
                  std::vector<uint64_t> regions, uint64_t vms_before) {
    sim::Guest guest = make_guest(e.socket, std::move(regions), page_size);
    ASSERT_TRUE(guest.connect_and_send().ok());
    if (mode == ServeMode::lazy) {
        guest.touch(sim::Pattern::random, 2, 1.0, 4 + vms_before);
    } else {
        ASSERT_TRUE(e.engine->wait_until([&](const EngineStats& s) { return s.vms_resident == vms_before + 1; }, kWait));
    }
    const sim::VerifyReport report = guest.verify(image);
    EXPECT_EQ(report.pages_checked, guest.page_count());
    EXPECT_EQ(report.mismatches, 0u) << report.describe();
}

struct Case {
    FrameCodec codec;
    ServeMode mode;
};

class FramesServe : public ::testing::TestWithParam<Case> {};

TEST_P(FramesServe, ChainRestoresByteExactAndTheSecondRestoreDecompressesNothing) {
    const auto [codec, mode] = GetParam();
    TempDir dir;
    const Chain chain = build_chain(dir, 16 * MiB, 4096, frames(codec));
    auto image = sim::ExpectedImage::open(chain.flat);
    ASSERT_TRUE(image.ok());
    std::shared_ptr<const Source> source = open_layered(dir, chain.manifest);
    ASSERT_TRUE(source);
    RunningEngine e = start_engine(dir, "", mode, 2, std::chrono::seconds(30), source);
    restore_once(e, *image, mode, 4096, {8 * MiB, 8 * MiB}, 0);
    const auto cold = frame_cache_stats(*source);
    ASSERT_TRUE(cold);
    EXPECT_GT(cold->frames_decompressed, 0u);
    EXPECT_EQ(cold->frames_queued, cold->frames_decompressed);   // each once, none failed
    layered::Manifest m;
    ASSERT_EQ(layered::load_manifest(chain.manifest, m), "");
    EXPECT_LE(cold->frames_decompressed, m.frames.size());
    EXPECT_GT(e.engine->stats().pages_zeroed, 0u);   // manifest zero blocks go by ZEROPAGE, never fetched
    ASSERT_TRUE(e.engine->wait_released(1, kWait));

    // Warm: the same engine, a new VM, every frame already in the cache.
    restore_once(e, *image, mode, 4096, {8 * MiB, 8 * MiB}, 1);
    const auto warm = frame_cache_stats(*source);
    EXPECT_EQ(warm->frames_queued, cold->frames_queued);
    EXPECT_EQ(warm->requests, cold->requests);   // no fetch at all
    EXPECT_EQ(e.engine->stats().vms_failed, 0u);
}

INSTANTIATE_TEST_SUITE_P(Frames, FramesServe,
                         ::testing::Values(Case{FrameCodec::zstd, ServeMode::lazy},
                                           Case{FrameCodec::zstd, ServeMode::prefetch},
                                           Case{FrameCodec::lz4, ServeMode::lazy},
                                           Case{FrameCodec::lz4, ServeMode::prefetch}),
                         [](const ::testing::TestParamInfo<Case>& p) {
                             return std::string(p.param.codec == FrameCodec::zstd ? "zstd" : "lz4") +
                                    (p.param.mode == ServeMode::lazy ? "_lazy" : "_prefetch");
                         });

TEST(FramesServeHuge, HugePageChainRestoresByteExact) {
    TempDir dir;
    ASSERT_EQ(sim::ensure_hugepages(64), "");
    FrameOptions f = frames(FrameCodec::zstd);
    f.frame_bytes = 2 * MiB;   // one 2 MiB block per frame
    const Chain chain = build_chain(dir, 32 * MiB, 2 * MiB, f);
    auto image = sim::ExpectedImage::open(chain.flat);
    ASSERT_TRUE(image.ok());
    std::shared_ptr<const Source> source = open_layered(dir, chain.manifest);
    ASSERT_TRUE(source);
    for (ServeMode mode : {ServeMode::lazy, ServeMode::prefetch}) {
        RunningEngine e = start_engine(dir, "", mode, 2, std::chrono::seconds(30), source);
        restore_once(e, *image, mode, 2 * MiB, {32 * MiB}, 0);
        EXPECT_EQ(e.engine->stats().vms_failed, 0u);
    }
}

TEST(FramesServeCorrupt, AFrameCorruptedAfterOpenFailsTheFetchAndKillsTheVm) {
    TempDir dir;
    const std::string guestsim = tool_path("RP_GUESTSIM");
    ASSERT_FALSE(guestsim.empty());
    const Chain chain = build_chain(dir, 8 * MiB, 4096, frames(FrameCodec::zstd));
    std::shared_ptr<const Source> source = open_layered(dir, chain.manifest);
    ASSERT_TRUE(source);
    // Flip one byte in the middle of layer 0's first frame, after the source checked the files.
    layered::Manifest m;
    ASSERT_EQ(layered::load_manifest(chain.manifest, m), "");
    const layered::FrameRecord frame = m.frames[0];
    const std::string layer = chain.manifest + ".layer0.rpl";
    {
        FileDesc fd = std::move(FileDesc::open(layer.c_str(), O_RDWR).value());
        const off_t at = static_cast<off_t>(frame.offset + frame.stored_bytes / 2);
        uint8_t byte = 0;
        ASSERT_EQ(pread(fd.get(), &byte, 1, at), 1);
        byte ^= 0x10;
        ASSERT_EQ(pwrite(fd.get(), &byte, 1, at), 1);
    }
    RunningEngine e = start_engine(dir, "", ServeMode::lazy, 1, std::chrono::seconds(30), source,
                                   [](EngineConfig& c) { c.kill_on_failure = true; });
    ASSERT_TRUE(e.engine);
    ::testing::internal::CaptureStderr();
    Child vm = spawn(guestsim, {"run", "--socket", e.socket, "--mem-file", chain.flat, "--regions", "8M",
                                "--pattern", "sequential"});
    const int status = vm.wait();
    ASSERT_TRUE(e.engine->wait_released(1, kWait));
    const std::string log = ::testing::internal::GetCapturedStderr();
    ASSERT_TRUE(WIFSIGNALED(status)) << log;
    EXPECT_EQ(WTERMSIG(status), SIGKILL);
    EXPECT_NE(log.find("cannot fetch the snapshot's pages "), std::string::npos) << log;
    const std::string line = "layer 0 (" + layer + ") frame 0 at file offset " + layered::hex64(frame.offset) + " (" +
                             std::to_string(frame.stored_bytes) + " bytes): checksum mismatch (stored " +
                             layered::hex64(frame.checksum) + ", read 0x";
    EXPECT_NE(log.find(line), std::string::npos) << log;
    EXPECT_EQ(e.engine->stats().vms_failed, 1u);
    EXPECT_GE(frame_cache_stats(*source)->frame_failures, 1u);
}

}  // namespace
