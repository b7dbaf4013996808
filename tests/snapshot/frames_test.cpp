// Pins compressed layered snapshots (format version 2) through their Source:
// a base plus two diffs built with zstd, lz4 or no codec, at 4 KiB and 2 MiB
// blocks, serves every block of the flattened memory through plan() and
// fetch() byte for byte; a frame is decompressed once however many fetches ask
// for it at once; a frame corrupted after open fails its fetch with one line
// and is never served; version 1 snapshots are still served as before.
#include <atomic>
#include <barrier>
#include <thread>

#include "frames_test_util.hpp"
#include "source/frame_source.hpp"

namespace {

using namespace snaptest;
using ringpager::FrameCodec;
using Kind = ringpager::ReadPlan::Kind;

struct Shape {
    FrameCodec codec;
    uint64_t block_size;
};

class FramedRoundTrip : public ::testing::TestWithParam<Shape> {};

TEST_P(FramedRoundTrip, EveryBlockOfTheFlattenedMemoryComesBackThroughPlanAndFetch) {
    const auto [codec, block_size] = GetParam();
    TempDir dir;
    const FramedChain chain = make_framed_chain(dir, 4096, 7);   // 16 MiB: 8 frames of 2 MiB a layer at most
    const std::string manifest = dir.file("snap.rpm");
    const auto report = build_framed(chain, manifest, block_size, frame_options(codec));
    EXPECT_EQ(report.files_written.size(), 4u);
    EXPECT_GT(report.frames, 0u);
    EXPECT_EQ(report.stored_plain_bytes, report.blocks_stored * block_size);
    if (codec == FrameCodec::none) {
        EXPECT_EQ(report.stored_frame_bytes, report.stored_plain_bytes);
    } else {
        // Half the pages repeat their first half.
        EXPECT_LT(report.stored_frame_bytes, report.stored_plain_bytes * 85 / 100);
    }
    uint64_t written = 0;
    for (const std::string& f : report.files_written) written += file_size(f);
    // Uncompressed 2 MiB slots start 2 MiB in: the gap after the header is a hole, not written.
    const uint64_t holes = codec == FrameCodec::none ? 3 * (block_size - std::min<uint64_t>(block_size, 4096)) : 0;
    EXPECT_EQ(report.bytes_written, written - holes);

    std::string error;
    auto source = ringpager::open_layered_source(manifest, true, error);
    ASSERT_TRUE(source) << error;
    EXPECT_EQ(source->size_bytes(), chain.flat.size());
    EXPECT_TRUE(source->verifies_reads());
    // Compressed: the layer files, then the decompressed-frame cache.
    EXPECT_EQ(source->file_fds().size(), codec == FrameCodec::none ? 3u : 4u);

    // Piece by piece (a page, three blocks and a bit, everything): the first
    // pass decompresses what it needs, the later ones find it ready.
    for (uint64_t max : {page_bytes, 3 * block_size + 100, uint64_t{1} << 40}) {
        PlanReadStats stats;
        const Bytes served = read_through_plans(*source, max, stats);
        EXPECT_EQ(stats.error, "");
        EXPECT_EQ(first_different_page(served, chain.flat), -1) << "max length " << max;
        EXPECT_EQ(xxh3(served), xxh3(chain.flat));
        if (max != page_bytes) {
            EXPECT_EQ(stats.fetches, 0u) << "every frame was decompressed by the first pass";
        } else if (codec != FrameCodec::none) {
            EXPECT_GT(stats.fetches, 0u);
        } else {
            EXPECT_EQ(stats.fetches, 0u);
        }
    }
    EXPECT_EQ(source->verify(0, chain.flat), "");
    if (auto stats = ringpager::frame_cache_stats(*source)) {
        EXPECT_EQ(stats->frame_failures, 0u);
        EXPECT_EQ(stats->frames_decompressed, stats->frames_queued);
        EXPECT_LE(stats->frames_decompressed, report.frames);
    } else {
        EXPECT_EQ(codec, FrameCodec::none);
    }
}

INSTANTIATE_TEST_SUITE_P(Frames, FramedRoundTrip,
                         ::testing::Values(Shape{FrameCodec::zstd, 4096}, Shape{FrameCodec::lz4, 4096},
                                           Shape{FrameCodec::none, 4096}, Shape{FrameCodec::zstd, 2 << 20},
                                           Shape{FrameCodec::lz4, 2 << 20}, Shape{FrameCodec::none, 2 << 20}),
                         [](const ::testing::TestParamInfo<Shape>& p) {
                             return std::string(p.param.codec == FrameCodec::zstd  ? "zstd"
                                                : p.param.codec == FrameCodec::lz4 ? "lz4"
                                                                                   : "none") +
                                    (p.param.block_size == 4096 ? "_4K" : "_2M");
                         });

TEST(FramedSnapshot, Version1AndVersion2ServeTheSameBytes) {
    TempDir dir;
    const FramedChain chain = make_framed_chain(dir, 2048, 8);
    build(chain.base, chain.diffs, dir.file("v1.rpm"));
    build_framed(chain, dir.file("v2.rpm"), 4096, frame_options(FrameCodec::zstd, 256 << 10));
    std::string error;
    auto v1 = ringpager::open_layered_source(dir.file("v1.rpm"), true, error);
    ASSERT_TRUE(v1) << error;
    auto v2 = ringpager::open_layered_source(dir.file("v2.rpm"), true, error);
    ASSERT_TRUE(v2) << error;
    PlanReadStats s1, s2;
    EXPECT_EQ(xxh3(read_through_plans(*v1, 64 << 10, s1)), xxh3(chain.flat));
    EXPECT_EQ(xxh3(read_through_plans(*v2, 64 << 10, s2)), xxh3(chain.flat));
    EXPECT_EQ(s1.fetches, 0u);
    EXPECT_GT(s2.fetches, 0u);
    EXPECT_FALSE(ringpager::frame_cache_stats(*v1));
}

// A compressed snapshot and the guest offset of a data block in it.
class OneFrame : public ::testing::Test {
protected:
    void SetUp() override {
        chain_ = make_framed_chain(dir_, 2048, 9);
        build_framed(chain_, manifest(), 4096, frame_options(FrameCodec::zstd, 1 << 20));
    }
    std::string manifest() const { return dir_.file("snap.rpm"); }
    std::unique_ptr<ringpager::Source> open(unsigned threads = 2) {
        ringpager::LayeredSourceOptions options;
        options.decompress_threads = threads;
        options.decompress_dir = dir_.path();
        std::string error;
        auto source = ringpager::open_layered_source(manifest(), options, error);
        EXPECT_TRUE(source) << error;
        return source;
    }
    static uint64_t first_data_offset(const ringpager::Source& source) {
        for (uint64_t off = 0; off < source.size_bytes(); off += page_bytes) {
            if (source.plan(off, page_bytes).kind != Kind::zero) return off;
        }
        ADD_FAILURE() << "no data block";
        return 0;
    }
    TempDir dir_;
    FramedChain chain_;
};

TEST_F(OneFrame, ManyConcurrentFetchesOfOneFrameDecompressItOnceAndAllComplete) {
    auto source = open();
    const uint64_t offset = first_data_offset(*source);
    ASSERT_EQ(source->plan(offset, page_bytes).kind, Kind::fetch);
    constexpr unsigned threads = 8, per_thread = 50;
    auto sink = std::make_shared<WaitingSink>();
    std::barrier start(threads);
    std::vector<std::thread> callers;
    for (unsigned t = 0; t < threads; ++t) {
        callers.emplace_back([&, t] {
            start.arrive_and_wait();
            for (unsigned i = 0; i < per_thread; ++i) source->fetch(offset, page_bytes, sink, t * per_thread + i);
        });
    }
    for (auto& c : callers) c.join();
    ASSERT_TRUE(sink->wait_for_calls(threads * per_thread));
    const auto outcomes = sink->outcomes();
    ASSERT_EQ(outcomes.size(), threads * per_thread);
    for (const auto& [cookie, calls] : outcomes) {
        ASSERT_EQ(calls.size(), 1u) << "fetch " << cookie << " answered " << calls.size() << " times";
        EXPECT_EQ(calls.front(), "") << "fetch " << cookie;
    }
    const auto stats = ringpager::frame_cache_stats(*source);
    ASSERT_TRUE(stats);
    EXPECT_EQ(stats->frames_decompressed, 1u);
    EXPECT_EQ(stats->frames_queued, 1u);
    EXPECT_EQ(stats->requests, threads * per_thread);
    const ringpager::ReadPlan ready = source->plan(offset, page_bytes);
    ASSERT_EQ(ready.kind, Kind::ready);
    Bytes page(page_bytes);
    const int cache = source->file_fds()[ready.file_index];
    ASSERT_EQ(::pread(cache, page.data(), page_bytes, static_cast<off_t>(ready.file_offset)),
              static_cast<ssize_t>(page_bytes));
    EXPECT_EQ(std::memcmp(page.data(), chain_.flat.data() + offset, page_bytes), 0);
}

TEST_F(OneFrame, FetchesOfEveryFrameFromSeveralThreadsDecompressEachOnce) {
    auto source = open();
    constexpr unsigned threads = 4;
    auto sink = std::make_shared<WaitingSink>();
    std::atomic<uint64_t> cookies{0};
    std::barrier start(threads);
    std::vector<std::thread> callers;
    for (unsigned t = 0; t < threads; ++t) {
        callers.emplace_back([&, t] {
            start.arrive_and_wait();
            // Each thread walks the whole guest in 64 KiB pieces from its own starting point.
            const uint64_t pieces = source->size_bytes() / (64 << 10);
            for (uint64_t i = 0; i < pieces; ++i) {
                const uint64_t offset = ((i + t * pieces / threads) % pieces) * (64 << 10);
                source->fetch(offset, 64 << 10, sink, ++cookies);
            }
        });
    }
    for (auto& c : callers) c.join();
    ASSERT_TRUE(sink->wait_for_calls(cookies.load()));
    for (const auto& [cookie, calls] : sink->outcomes()) {
        ASSERT_EQ(calls.size(), 1u);
        EXPECT_EQ(calls.front(), "");
    }
    const auto stats = ringpager::frame_cache_stats(*source);
    ASSERT_TRUE(stats);
    ringpager::layered::Manifest m;
    ASSERT_EQ(ringpager::layered::load_manifest(manifest(), m), "");
    EXPECT_EQ(stats->frames_queued, stats->frames_decompressed);
    EXPECT_LE(stats->frames_decompressed, m.frames.size());
    PlanReadStats read;
    EXPECT_EQ(xxh3(read_through_plans(*source, 1 << 20, read)), xxh3(chain_.flat));
    EXPECT_EQ(read.fetches, 0u);
}

TEST_F(OneFrame, AFrameCorruptedAfterOpenFailsItsFetchWithOneLineAndIsNeverServed) {
    auto source = open();
    const uint64_t offset = first_data_offset(*source);
    ringpager::layered::Manifest m;
    ASSERT_EQ(ringpager::layered::load_manifest(manifest(), m), "");
    // The data block's frame: which layer and which of its frames.
    const size_t e = m.find_extent(offset / page_bytes);
    const uint32_t layer = ringpager::layered::location_layer(m.extents[e].location);
    const uint64_t slot =
        ringpager::layered::location_slot(m.extents[e].location) + offset / page_bytes - m.extents[e].first_block;
    const uint64_t k = slot / m.frame_blocks;
    const auto& frame = m.frames[m.frame_base[layer] + k];
    const std::string layer_path = manifest() + ".layer" + std::to_string(layer) + ".rpl";
    {
        auto f = ringpager::FileDesc::open(layer_path.c_str(), O_RDWR);
        ASSERT_TRUE(f.ok());
        std::byte b{};
        const off_t at = static_cast<off_t>(frame.offset + frame.stored_bytes / 2);
        ASSERT_EQ(::pread(f->get(), &b, 1, at), 1);
        b ^= std::byte{0x20};
        ASSERT_EQ(::pwrite(f->get(), &b, 1, at), 1);
    }
    auto sink = std::make_shared<WaitingSink>();
    source->fetch(offset, page_bytes, sink, 1);
    const std::string error = sink->wait(1);
    const std::string where = "layer " + std::to_string(layer) + " (" + layer_path + ") frame " + std::to_string(k) +
                              " at file offset " + ringpager::layered::hex64(frame.offset) + " (" +
                              std::to_string(frame.stored_bytes) + " bytes): checksum mismatch (stored " +
                              ringpager::layered::hex64(frame.checksum) + ", read 0x";
    EXPECT_EQ(error.rfind(where, 0), 0u) << error;
    EXPECT_EQ(error.find('\n'), std::string::npos) << error;
    EXPECT_EQ(source->plan(offset, page_bytes).kind, Kind::fetch);   // never marked ready
    // It is tried again (and fails again) on the next fetch.
    source->fetch(offset, page_bytes, sink, 2);
    EXPECT_EQ(sink->wait(2).rfind(where, 0), 0u);
    const auto stats = ringpager::frame_cache_stats(*source);
    ASSERT_TRUE(stats);
    EXPECT_EQ(stats->frame_failures, 2u);
    EXPECT_EQ(stats->frames_decompressed, 0u);
}

TEST_F(OneFrame, ABlockWhoseChecksumDisagreesAfterDecompressionFailsTheFetchAndVerify) {
    // A manifest (and layer header) that says another checksum for layer 0's
    // slot 3: the frame itself is intact, its block is not what the table says.
    namespace layered = ringpager::layered;
    layered::Manifest m;
    ASSERT_EQ(layered::load_manifest(manifest(), m), "");
    m.checksums[m.checksum_base[0] + 3] ^= 1;
    m.layers[0].checksums_xxh3 = XXH3_64bits(m.checksums.data(), m.layers[0].block_count * 8);
    const auto bytes = layered::encode_manifest(m);
    write_file(manifest(), Bytes(bytes.begin(), bytes.end()));
    const std::string layer0 = manifest() + ".layer0.rpl";
    {
        auto f = ringpager::FileDesc::open(layer0.c_str(), O_RDWR);
        ASSERT_TRUE(f.ok());
        std::array<std::byte, layered::header_bytes> header;
        ASSERT_EQ(::pread(f->get(), header.data(), header.size(), 0), static_cast<ssize_t>(header.size()));
        layered::LayerHeader h;
        ASSERT_EQ(layered::decode_layer_header(header, h), "");
        h.checksums_xxh3 = m.layers[0].checksums_xxh3;
        header = layered::encode_layer_header(h);
        ASSERT_EQ(::pwrite(f->get(), header.data(), header.size(), 0), static_cast<ssize_t>(header.size()));
    }
    auto source = open();
    ASSERT_TRUE(source);
    // Fetch every frame: layer 0's first one fails, naming the slot.
    auto sink = std::make_shared<WaitingSink>();
    source->fetch(0, source->size_bytes(), sink, 1);
    const std::string error = sink->wait(1);
    EXPECT_EQ(error.rfind(layered::describe_frame(m, 0, 0) + ": slot 3 decompressed to checksum ", 0), 0u) << error;
    EXPECT_NE(error.find(", the manifest says " + layered::hex64(m.checksums[3])), std::string::npos) << error;

    ringpager::SnapshotVerifyReport report;
    std::string verify_error;
    EXPECT_FALSE(ringpager::verify_layered_snapshot(manifest(), report, verify_error));
    EXPECT_EQ(report.bad_blocks, 1u);
    EXPECT_EQ(report.bad_frames, 0u);
    EXPECT_EQ(report.frames_checked, m.frames.size());
    EXPECT_NE(verify_error.find("layer " + layer0 + " "), std::string::npos) << verify_error;
    EXPECT_NE(verify_error.find("(frame 0, decompressed): checksum mismatch (stored " + layered::hex64(m.checksums[3])),
              std::string::npos)
        << verify_error;
}

TEST_F(OneFrame, ClosingTheSourceAnswersEveryFetchStillWaiting) {
    auto source = open(1);
    auto sink = std::make_shared<WaitingSink>();
    const uint64_t pieces = source->size_bytes() / (64 << 10);
    for (uint64_t i = 0; i < pieces; ++i) source->fetch(i * (64 << 10), 64 << 10, sink, i + 1);
    source.reset();   // one worker: most frames are still queued
    EXPECT_EQ(sink->calls(), pieces);
    for (const auto& [cookie, calls] : sink->outcomes()) {
        ASSERT_EQ(calls.size(), 1u);
        EXPECT_TRUE(calls.front().empty() || calls.front() == "the snapshot source was closed") << calls.front();
    }
}

TEST_F(OneFrame, AMissingDecompressDirectoryIsRefusedAtOpen) {
    ringpager::LayeredSourceOptions options;
    options.decompress_dir = dir_.file("no-such-dir");
    std::string error;
    EXPECT_EQ(ringpager::open_layered_source(manifest(), options, error), nullptr);
    EXPECT_EQ(error, manifest() + ": decompressed-frame cache in " + dir_.file("no-such-dir") +
                         ": open(O_TMPFILE): No such file or directory");
}

TEST_F(OneFrame, TheCacheFileIsUnlinkedAndSparse) {
    auto source = open();
    const int fd = source->file_fds().back();
    struct stat st {};
    ASSERT_EQ(::fstat(fd, &st), 0);
    EXPECT_EQ(st.st_nlink, 0u);
    EXPECT_EQ(st.st_blocks, 0);   // nothing decompressed yet
    ringpager::layered::Manifest m;
    ASSERT_EQ(ringpager::layered::load_manifest(manifest(), m), "");
    EXPECT_EQ(static_cast<uint64_t>(st.st_size), m.checksums.size() * page_bytes);
}

}  // namespace
