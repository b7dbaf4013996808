// Pins the `ringpager snapshot` command line: build/inspect/verify run
// in-process through snapshot_main, with exit codes 0 ok, 1 runtime failure,
// 2 usage error, and --help on every subcommand.
#include <nlohmann/json.hpp>

#include "frames_test_util.hpp"
#include "snapshot/layered/format.hpp"
#include "snapshot_cli.hpp"
#include "snapshot_test_util.hpp"

namespace {

using namespace snaptest;
constexpr uint64_t P = page_bytes;

using snaptest::CliRun;
CliRun run(std::vector<std::string> args) { return snaptest::run_snapshot(std::move(args)); }

class SnapshotCli : public ::testing::Test {
protected:
    void SetUp() override {
        memory_.resize(512 * P);
        PageGen gen(41, 0.6, 0.1);
        gen.fill(memory_, 0, 512);
        write_file(dir_.file("base"), memory_);
        auto changed = change_pages(memory_, gen, 0.1);
        write_sparse_diff(dir_.file("diff1"), memory_, changed);
        changed = change_pages(memory_, gen, 0.1);
        write_sparse_diff(dir_.file("diff2"), memory_, changed);
    }

    CliRun build_ok() {
        CliRun r = run({"build", "--base", dir_.file("base"), "--diff", dir_.file("diff1"), "--diff", dir_.file("diff2"),
                     "--out", manifest(), "--no-sync"});
        EXPECT_EQ(r.code, 0) << r.err;
        return r;
    }
    std::string manifest() const { return dir_.file("snap.rpm"); }

    TempDir dir_;
    Bytes memory_;
};

TEST_F(SnapshotCli, BuildPrintsASummaryAndTheSnapshotServesTheFlattenedMemory) {
    CliRun r = build_ok();
    EXPECT_NE(r.out.find("built " + manifest() + ": 3 layers, 2 MiB guest, 4 KiB blocks"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("blocks: "), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(" zero, "), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(" duplicate, "), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(" stored"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(" written, "), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(" saved"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("GiB/s"), std::string::npos) << r.out;
    EXPECT_EQ(r.err, "");   // stderr is not a terminal here: no progress bar
    std::string error;
    auto source = ringpager::open_layered_source(manifest(), true, error);
    ASSERT_TRUE(source) << error;
    EXPECT_EQ(first_different_page(read_through_source(*source, 1 << 20), memory_), -1);
}

TEST_F(SnapshotCli, InspectPrintsTextAndJson) {
    build_ok();
    CliRun text = run({"inspect", manifest()});
    EXPECT_EQ(text.code, 0) << text.err;
    EXPECT_NE(text.out.find("format version 1"), std::string::npos) << text.out;
    EXPECT_NE(text.out.find("512 blocks of 4 KiB"), std::string::npos) << text.out;
    EXPECT_NE(text.out.find("snap.rpm.layer2.rpl"), std::string::npos) << text.out;

    CliRun json = run({"inspect", manifest(), "--json"});
    ASSERT_EQ(json.code, 0) << json.err;
    auto j = nlohmann::json::parse(json.out);
    EXPECT_EQ(j["version"], 1);
    EXPECT_EQ(j["block_size_bytes"], 4096);
    EXPECT_EQ(j["guest_size_bytes"], 512 * P);
    EXPECT_EQ(j["blocks"]["total"], 512);
    EXPECT_EQ(j["blocks"]["zero"].get<uint64_t>() + j["blocks"]["data"].get<uint64_t>(), 512u);
    ASSERT_EQ(j["layers"].size(), 3u);
    uint64_t referenced = 0;
    for (const auto& layer : j["layers"]) {
        EXPECT_EQ(layer["status"], "ok");
        EXPECT_EQ(layer["id"].get<std::string>().size(), 32u);
        referenced += layer["referenced_blocks"].get<uint64_t>();
    }
    EXPECT_EQ(referenced, j["blocks"]["data"].get<uint64_t>());
    EXPECT_EQ(j["extents"]["total"].get<uint64_t>(),
              j["extents"]["zero"].get<uint64_t>() + j["extents"]["data"].get<uint64_t>());
    EXPECT_EQ(j["ok"], true);
}

TEST_F(SnapshotCli, InspectReportsABadLayerAndExitsOne) {
    build_ok();
    std::string layer = manifest() + ".layer1.rpl";
    ASSERT_EQ(::truncate(layer.c_str(), static_cast<off_t>(file_size(layer) + P)), 0);
    CliRun r = run({"inspect", manifest(), "--json"});
    EXPECT_EQ(r.code, 1);
    auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["ok"], false);
    EXPECT_NE(j["layers"][1]["status"].get<std::string>().find("resized"), std::string::npos);
    EXPECT_NE(r.err.find(layer), std::string::npos) << r.err;
}

TEST_F(SnapshotCli, VerifyExitsZeroWhenIntactAndOneNamingTheFirstBadBlock) {
    build_ok();
    CliRun ok = run({"verify", manifest()});
    EXPECT_EQ(ok.code, 0) << ok.err;
    EXPECT_NE(ok.out.find("intact"), std::string::npos) << ok.out;

    std::string layer = manifest() + ".layer0.rpl";
    auto f = ringpager::FileDesc::open(layer.c_str(), O_RDWR);
    ASSERT_TRUE(f.ok());
    std::byte b{};
    ASSERT_EQ(::pread(f->get(), &b, 1, P + 100), 1);
    b ^= std::byte{0x80};
    ASSERT_EQ(::pwrite(f->get(), &b, 1, P + 100), 1);
    CliRun bad = run({"verify", manifest()});
    EXPECT_EQ(bad.code, 1);
    EXPECT_NE(bad.err.find("ringpager snapshot verify: layer " + layer + " block at guest offset 0x"),
              std::string::npos) << bad.err;
    EXPECT_NE(bad.err.find("checksum mismatch"), std::string::npos) << bad.err;
    EXPECT_EQ(std::count(bad.err.begin(), bad.err.end(), '\n'), 1) << bad.err;
}

TEST_F(SnapshotCli, HugeBlockSizeBuildsAndVerifies) {
    Bytes memory(4 << 20);
    PageGen gen(42, 0.5, 0.0);
    gen.fill(memory, 0, memory.size() / P);
    write_file(dir_.file("huge"), memory);
    CliRun r = run({"build", "--base", dir_.file("huge"), "--out", manifest(), "--block-size", "2M", "--no-sync"});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("2 MiB blocks"), std::string::npos) << r.out;
    EXPECT_EQ(run({"verify", manifest()}).code, 0);
}

TEST_F(SnapshotCli, RuntimeFailuresExitOneWithOneLine) {
    CliRun r = run({"build", "--base", dir_.file("missing"), "--out", manifest()});
    EXPECT_EQ(r.code, 1);
    EXPECT_EQ(r.err, "ringpager snapshot build: base " + dir_.file("missing") + ": open: No such file or directory\n");
    r = run({"verify", dir_.file("base")});
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("wrong magic"), std::string::npos) << r.err;
    r = run({"inspect", dir_.file("missing.rpm")});
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find(dir_.file("missing.rpm")), std::string::npos) << r.err;
}

TEST_F(SnapshotCli, CompressedBuildInspectAndVerify) {
    for (const char* codec : {"zstd", "lz4", "none"}) {
        CliRun r = run({"build", "--base", dir_.file("base"), "--diff", dir_.file("diff1"), "--diff",
                        dir_.file("diff2"), "--out", manifest(), "--no-sync", "--compress", codec, "--frame-size",
                        "256K"});
        ASSERT_EQ(r.code, 0) << r.err;
        const std::string what = std::string(codec) + (std::string(codec) == "zstd" ? " level 1" : "");
        EXPECT_NE(r.out.find("frames: " + what + ", 256 KiB frames: "), std::string::npos) << r.out;

        CliRun text = run({"inspect", manifest()});
        EXPECT_EQ(text.code, 0) << text.err;
        EXPECT_NE(text.out.find("format version 2"), std::string::npos) << text.out;
        EXPECT_NE(text.out.find("frames       " + what + ", 256 KiB frames: "), std::string::npos) << text.out;
        CliRun json = run({"inspect", manifest(), "--json"});
        ASSERT_EQ(json.code, 0) << json.err;
        auto j = nlohmann::json::parse(json.out);
        EXPECT_EQ(j["version"], 2);
        EXPECT_EQ(j["frames"]["codec"], codec);
        EXPECT_EQ(j["frames"]["frame_bytes"], 256 << 10);
        EXPECT_GT(j["frames"]["count"].get<uint64_t>(), 0u);
        uint64_t frames = 0;
        for (const auto& layer : j["layers"]) frames += layer["frames"].get<uint64_t>();
        EXPECT_EQ(frames, j["frames"]["count"].get<uint64_t>());
        EXPECT_GT(j["stored"]["plain_bytes"].get<uint64_t>(), 0u);
        EXPECT_GT(j["stored"]["file_bytes"].get<uint64_t>(), 0u);

        CliRun ok = run({"verify", manifest()});
        EXPECT_EQ(ok.code, 0) << ok.err;
        EXPECT_NE(ok.out.find("stored blocks intact in " + std::to_string(frames) + " frames"), std::string::npos)
            << ok.out;

        std::string error;
        auto source = ringpager::open_layered_source(manifest(), true, error);
        ASSERT_TRUE(source) << error;
        PlanReadStats stats;
        EXPECT_EQ(first_different_page(read_through_plans(*source, 1 << 20, stats), memory_), -1) << codec;
    }
}

TEST_F(SnapshotCli, VerifyNamesABadFrameOfACompressedSnapshot) {
    CliRun r = run({"build", "--base", dir_.file("base"), "--out", manifest(), "--no-sync", "--compress", "zstd",
                    "--zstd-level", "3", "--frame-size", "64K"});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("frames: zstd level 3, 64 KiB frames: "), std::string::npos) << r.out;
    ringpager::layered::Manifest m;
    ASSERT_EQ(ringpager::layered::load_manifest(manifest(), m), "");
    ASSERT_GE(m.frames.size(), 2u);
    const auto& frame = m.frames[1];
    const std::string layer = manifest() + ".layer0.rpl";
    auto f = ringpager::FileDesc::open(layer.c_str(), O_RDWR);
    ASSERT_TRUE(f.ok());
    std::byte b{};
    ASSERT_EQ(::pread(f->get(), &b, 1, static_cast<off_t>(frame.offset + 10)), 1);
    b ^= std::byte{0x01};
    ASSERT_EQ(::pwrite(f->get(), &b, 1, static_cast<off_t>(frame.offset + 10)), 1);
    CliRun bad = run({"verify", manifest()});
    EXPECT_EQ(bad.code, 1);
    EXPECT_NE(bad.err.find("ringpager snapshot verify: layer 0 (" + layer + ") frame 1 at file offset " +
                           ringpager::layered::hex64(frame.offset) + " (" + std::to_string(frame.stored_bytes) +
                           " bytes): checksum mismatch (stored " + ringpager::layered::hex64(frame.checksum)),
              std::string::npos)
        << bad.err;
    EXPECT_NE(bad.err.find("; 1 bad frame(s) and 0 bad block(s) in total"), std::string::npos) << bad.err;
    EXPECT_EQ(std::count(bad.err.begin(), bad.err.end(), '\n'), 1) << bad.err;
}

TEST_F(SnapshotCli, Version1InspectSaysItHasNoFrames) {
    build_ok();
    CliRun text = run({"inspect", manifest()});
    EXPECT_NE(text.out.find("as they are (no frames)"), std::string::npos) << text.out;
    auto j = nlohmann::json::parse(run({"inspect", manifest(), "--json"}).out);
    EXPECT_TRUE(j["frames"].is_null());
    EXPECT_EQ(j["stored"]["plain_bytes"], j["stored"]["file_bytes"]);
}

TEST_F(SnapshotCli, UsageErrorsExitTwo) {
    EXPECT_EQ(run({}).code, 2);
    EXPECT_EQ(run({"frobnicate"}).code, 2);
    EXPECT_EQ(run({"build", "--base", dir_.file("base")}).code, 2);   // no --out
    CliRun r = run({"build", "--base", dir_.file("base"), "--out", manifest(), "--block-size", "3K"});
    EXPECT_EQ(r.code, 2);
    EXPECT_NE(r.err.find("4K or 2M"), std::string::npos) << r.err;
    EXPECT_EQ(run({"inspect"}).code, 2);
    EXPECT_EQ(run({"verify", manifest(), "extra"}).code, 2);
    const std::vector<std::string> base{"build", "--base", dir_.file("base"), "--out", manifest()};
    auto with = [&](std::vector<std::string> extra) {
        std::vector<std::string> args = base;
        args.insert(args.end(), extra.begin(), extra.end());
        return run(args);
    };
    EXPECT_EQ(with({"--compress", "gzip"}).code, 2);
    EXPECT_EQ(with({"--zstd-level", "3"}).code, 2);   // needs --compress
    EXPECT_EQ(with({"--compress", "zstd", "--zstd-level", "20"}).code, 2);
    EXPECT_EQ(with({"--compress", "zstd", "--frame-size", "3M"}).code, 2);
    EXPECT_EQ(with({"--compress", "zstd", "--frame-size", "128M"}).code, 2);
    r = with({"--compress", "zstd", "--frame-size", "64K", "--block-size", "2M"});
    EXPECT_EQ(r.code, 2);
    EXPECT_NE(r.err.find("--frame-size 64 KiB is not a multiple of the block size (2 MiB)"), std::string::npos)
        << r.err;
    EXPECT_FALSE(std::filesystem::exists(manifest()));
}

TEST_F(SnapshotCli, EverySubcommandHasHelp) {
    for (std::vector<std::string> args : {std::vector<std::string>{"--help"}, {"build", "--help"},
                                          {"inspect", "--help"}, {"verify", "--help"}}) {
        CliRun r = run(args);
        EXPECT_EQ(r.code, 0) << args.front();
        EXPECT_NE(r.out.find("Usage"), std::string::npos) << r.out;
    }
    EXPECT_NE(run({"build", "--help"}).out.find("--block-size"), std::string::npos);
    EXPECT_NE(run({"inspect", "--help"}).out.find("--json"), std::string::npos);
}

}  // namespace
