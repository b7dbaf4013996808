// Pins every bad-input row of format version 2 (docs/snapshot-format.md,
// "What a reader checks"): each frame field of the manifest header, layer
// records, frame table and layer headers that is corrupt or inconsistent is
// refused at open with one line naming the file and the cause, even when the
// manifest is sealed (its checksums recomputed), and decode_manifest agrees.
#include <functional>

#include "frames_test_util.hpp"
#include "snapshot/layered/codec.hpp"
#include "snapshot/layered/format.hpp"

namespace {

using namespace snaptest;
using ringpager::FrameCodec;
namespace layered = ringpager::layered;

// A base plus two diffs, zstd frames of 64 KiB (so each layer has several).
class FramesBadInput : public ::testing::TestWithParam<FrameCodec> {
protected:
    void SetUp() override {
        const FramedChain chain = make_framed_chain(dir_, 512, 31);
        build_framed(chain, manifest(), 4096, frame_options(GetParam(), 64 << 10));
        ASSERT_EQ(layered::load_manifest(manifest(), m_), "");
        ASSERT_EQ(m_.version, 2u);
        ASSERT_GE(m_.layers.size(), 3u);
        ASSERT_GE(m_.layers[0].frame_count, 2u);
        ASSERT_GE(m_.layers[2].frame_count, 1u);
    }

    std::string manifest() const { return dir_.file("snap.rpm"); }
    std::string layer(int i) const { return manifest() + ".layer" + std::to_string(i) + ".rpl"; }

    // Edits the decoded manifest, then writes it back sealed: the frame list
    // hashes of the layer records, the table and header checksums are all
    // recomputed, so only the edit itself can be refused.
    void rewrite(const std::function<void(layered::Manifest&)>& edit) {
        layered::Manifest m = m_;
        edit(m);
        for (size_t i = 0; i < m.layers.size(); ++i) {
            auto slice = std::span(m.frames).subspan(std::min(m.frames.size(), m.frame_base[i]));
            m.layers[i].frames_xxh3 =
                layered::hash_frames(slice.first(std::min<uint64_t>(slice.size(), m.layers[i].frame_count)));
        }
        write_file(manifest(), to_bytes(layered::encode_manifest(m)));
    }
    // Edits manifest bytes (header fields), then reseals.
    void patch(uint64_t offset, const void* value, size_t size) {
        Bytes bytes = read_file(manifest());
        std::memcpy(bytes.data() + offset, value, size);
        layered::reseal_manifest(bytes);
        write_file(manifest(), bytes);
    }
    template <typename T>
    void patch_value(uint64_t offset, T value) {
        patch(offset, &value, sizeof value);
    }

    static Bytes to_bytes(const std::vector<std::byte>& v) { return Bytes(v.begin(), v.end()); }

    void expect_refused(const std::string& file, const std::string& cause) {
        std::string error;
        EXPECT_EQ(ringpager::open_layered_source(manifest(), false, error), nullptr);
        expect_line(error, file, cause);
        ringpager::SnapshotVerifyReport report;
        EXPECT_FALSE(ringpager::verify_layered_snapshot(manifest(), report, error));
        expect_line(error, file, cause);
        layered::Manifest loaded, decoded;
        EXPECT_EQ(layered::decode_manifest(read_file(manifest()), manifest(), decoded),
                  layered::load_manifest(manifest(), loaded));
    }
    static void expect_line(const std::string& error, const std::string& file, const std::string& cause) {
        EXPECT_NE(error.find(file), std::string::npos) << error;
        EXPECT_NE(error.find(cause), std::string::npos) << error;
        EXPECT_EQ(error.find('\n'), std::string::npos) << error;
    }
    uint64_t frames_offset() const {
        return layered::header_bytes + m_.layers.size() * layered::layer_record_bytes +
               m_.extents.size() * layered::extent_record_bytes + m_.checksums.size() * layered::checksum_record_bytes;
    }

    TempDir dir_;
    layered::Manifest m_;
};

TEST_P(FramesBadInput, TheIntactSnapshotOpens) {
    std::string error;
    EXPECT_TRUE(ringpager::open_layered_source(manifest(), false, error)) << error;
}

TEST_P(FramesBadInput, UnknownCodec) {
    patch_value<uint32_t>(96, 7);
    expect_refused(manifest(), "invalid header: unknown frame codec 7");
}

TEST_P(FramesBadInput, CodecLevelTheCodecDoesNotHave) {
    patch_value<uint32_t>(112, 99);
    expect_refused(manifest(), std::string("invalid header: codec level 99 is not one ") +
                                   layered::codec_name(GetParam()) + " has");
}

TEST_P(FramesBadInput, FrameSizeNotAPowerOfTwo) {
    patch_value<uint32_t>(100, 3);
    expect_refused(manifest(), "invalid header: frame size of 3 blocks is not a power of two of at most 64 MiB");
}

TEST_P(FramesBadInput, FrameSizeAbove64MiB) {
    patch_value<uint32_t>(100, 32768);   // 128 MiB of 4 KiB blocks
    expect_refused(manifest(), "frame size of 32768 blocks is not a power of two of at most 64 MiB");
}

TEST_P(FramesBadInput, FrameCountAboveTheStoredBlocks) {
    patch_value<uint64_t>(104, m_.checksums.size() + 1);
    expect_refused(manifest(), "invalid header: frame count " + std::to_string(m_.checksums.size() + 1) +
                                   " exceeds the stored block count");
}

TEST_P(FramesBadInput, FrameCountThatDoesNotMatchTheTableSize) {
    patch_value<uint64_t>(104, m_.frames.size() - 1);
    expect_refused(manifest(), "invalid header: table size");
}

TEST_P(FramesBadInput, ReservedHeaderFieldSet) {
    patch_value<uint32_t>(116, 1);
    expect_refused(manifest(), "invalid header: reserved field is not zero");
}

TEST_P(FramesBadInput, CorruptFrameTableFailsTheTableChecksum) {
    Bytes bytes = read_file(manifest());
    bytes[frames_offset() + 3] ^= std::byte{0x40};
    write_file(manifest(), bytes);
    expect_refused(manifest(), "block table checksum mismatch");
}

TEST_P(FramesBadInput, FrameListHashThatDoesNotMatch) {
    Bytes bytes = read_file(manifest());
    bytes[layered::header_bytes + 56] ^= std::byte{0x01};   // layer 0's frames_xxh3
    layered::reseal_manifest(bytes);
    write_file(manifest(), bytes);
    expect_refused(manifest(), "layer 0 record: its frame list hashes to ");
}

TEST_P(FramesBadInput, LayerClaimingMoreFramesThanTheTableHolds) {
    const uint64_t last = m_.layers.size() - 1;
    rewrite([&](layered::Manifest& m) { m.layers[last].frame_count += 1000; });
    const uint64_t has = m_.layers[last].frame_count;
    expect_refused(manifest(), "layer " + std::to_string(last) + " record: " + std::to_string(has + 1000) +
                                   " frames, but the frame table has " + std::to_string(has) + " left");
}

TEST_P(FramesBadInput, LayerWithTheWrongNumberOfFramesForItsBlocks) {
    rewrite([&](layered::Manifest& m) {
        m.layers[0].frame_count += 1;
        m.layers[1].frame_count -= 1;
    });
    const uint64_t expected = m_.layers[0].frame_count;
    expect_refused(manifest(), "layer 0 record: " + std::to_string(expected + 1) + " frames for " +
                                   std::to_string(m_.layers[0].block_count) + " blocks of 16 per frame (expected " +
                                   std::to_string(expected) + ")");
}

TEST_P(FramesBadInput, FrameTableWithAFrameNoLayerOwns) {
    Bytes bytes = read_file(manifest());
    bytes.resize(bytes.size() + layered::frame_record_bytes);
    const uint64_t frames = m_.frames.size() + 1;
    std::memcpy(bytes.data() + 104, &frames, 8);
    uint64_t table = 0;
    std::memcpy(&table, bytes.data() + 64, 8);
    table += layered::frame_record_bytes;
    std::memcpy(bytes.data() + 64, &table, 8);
    layered::reseal_manifest(bytes);
    write_file(manifest(), bytes);
    expect_refused(manifest(), "layer frame counts do not add up to the frame table");
}

TEST_P(FramesBadInput, FrameNotStoredRightAfterThePreviousOne) {
    rewrite([&](layered::Manifest& m) { m.frames[1].offset += 1; });
    expect_refused(manifest(), "layer 0 frame 1: offset " + std::to_string(m_.frames[1].offset + 1) + ", expected " +
                                   std::to_string(m_.frames[1].offset) +
                                   " (frames are stored back to back from the data offset)");
}

TEST_P(FramesBadInput, FirstFrameNotAtTheDataOffset) {
    rewrite([&](layered::Manifest& m) { m.frames[0].offset = 0; });
    expect_refused(manifest(), "layer 0 frame 0: offset 0, expected " + std::to_string(m_.layers[0].data_offset_bytes));
}

TEST_P(FramesBadInput, FramePlainSizeThatIsNotItsBlocks) {
    rewrite([&](layered::Manifest& m) { m.frames[0].plain_bytes += 4096; });
    expect_refused(manifest(), "layer 0 frame 0: plain size 69632, expected 65536 (16 blocks)");
}

TEST_P(FramesBadInput, FrameWithNoStoredBytesOrMoreThanTheCodecCanMake) {
    const uint64_t bound = layered::stored_bound(GetParam(), 65536);
    for (uint32_t stored : {uint32_t{0}, static_cast<uint32_t>(bound + 1)}) {
        rewrite([&](layered::Manifest& m) { m.frames[0].stored_bytes = stored; });
        if (GetParam() == FrameCodec::none) {
            expect_refused(manifest(), "layer 0 frame 0: stored size " + std::to_string(stored) +
                                           " is not its plain size 65536");
        } else {
            expect_refused(manifest(), "layer 0 frame 0: stored size " + std::to_string(stored) +
                                           " is not between 1 and " + std::to_string(bound) + " (the most " +
                                           layered::codec_name(GetParam()) + " makes of 65536 bytes)");
        }
    }
}

TEST_P(FramesBadInput, FramesThatEndBeforeTheFile) {
    const uint64_t last = m_.frame_base[1] - 1;   // layer 0's last frame
    rewrite([&](layered::Manifest& m) { m.frames[last].stored_bytes -= 1; });
    if (GetParam() == FrameCodec::none) {   // without a codec every stored size is its plain size
        return expect_refused(manifest(), "layer 0 frame " + std::to_string(last) + ": stored size " +
                                              std::to_string(m_.frames[last].stored_bytes - 1) +
                                              " is not its plain size");
    }
    const uint64_t size = m_.layers[0].file_size_bytes;
    expect_refused(manifest(), "layer 0 record: its frames end at " + std::to_string(size - 1) +
                                   ", the file size is " + std::to_string(size));
}

TEST_P(FramesBadInput, FrameThatRunsPastTheEndOfTheFile) {
    const uint64_t last = m_.frame_base[1] - 1;
    rewrite([&](layered::Manifest& m) { m.frames[last].stored_bytes += 1; });
    if (GetParam() == FrameCodec::none) {
        return expect_refused(manifest(), "layer 0 frame " + std::to_string(last) + ": stored size " +
                                              std::to_string(m_.frames[last].stored_bytes + 1) +
                                              " is not its plain size");
    }
    expect_refused(manifest(), "layer 0 frame " + std::to_string(last) + ": runs past the end of the file (" +
                                   std::to_string(m_.layers[0].file_size_bytes) + " bytes)");
}

TEST_P(FramesBadInput, LayerWhoseFileSizeIsBelowItsDataOffset) {
    rewrite([&](layered::Manifest& m) { m.layers[0].file_size_bytes = 100; });
    // Without a codec the file size is the data offset plus the blocks, as in version 1.
    expect_refused(manifest(), GetParam() == FrameCodec::none
                                   ? "layer 0 record: file size 100 does not match data offset"
                                   : "layer 0 record: file size 100 is below its data offset 4096");
}

TEST_P(FramesBadInput, LayerHeaderThatDisagreesWithTheFrameList) {
    // A layer file from a build of the same inputs with another codec carries
    // its own frame list (and identity): refused either way.
    auto f = ringpager::FileDesc::open(layer(1).c_str(), O_RDWR);
    ASSERT_TRUE(f.ok());
    std::array<std::byte, layered::header_bytes> header;
    ASSERT_EQ(::pread(f->get(), header.data(), header.size(), 0), static_cast<ssize_t>(header.size()));
    layered::LayerHeader h;
    ASSERT_EQ(layered::decode_layer_header(header, h), "");
    EXPECT_EQ(h.version, 2u);
    EXPECT_EQ(h.codec, GetParam());
    h.frames_xxh3 ^= 1;
    header = layered::encode_layer_header(h);
    ASSERT_EQ(::pwrite(f->get(), header.data(), header.size(), 0), static_cast<ssize_t>(header.size()));
    expect_refused(layer(1), "header disagrees with the manifest");
}

TEST_P(FramesBadInput, Version1LayerHeaderInAVersion2Snapshot) {
    auto f = ringpager::FileDesc::open(layer(0).c_str(), O_RDWR);
    ASSERT_TRUE(f.ok());
    std::array<std::byte, layered::header_bytes> header;
    ASSERT_EQ(::pread(f->get(), header.data(), header.size(), 0), static_cast<ssize_t>(header.size()));
    layered::LayerHeader h;
    ASSERT_EQ(layered::decode_layer_header(header, h), "");
    h.version = 1;
    header = layered::encode_layer_header(h);
    ASSERT_EQ(::pwrite(f->get(), header.data(), header.size(), 0), static_cast<ssize_t>(header.size()));
    expect_refused(layer(0), "header disagrees with the manifest");
}

TEST_P(FramesBadInput, TruncatedLayerFile) {
    ASSERT_EQ(::truncate(layer(2).c_str(), static_cast<off_t>(file_size(layer(2)) - 1)), 0);
    expect_refused(layer(2), "resized or truncated");
}

INSTANTIATE_TEST_SUITE_P(Frames, FramesBadInput, ::testing::Values(FrameCodec::zstd, FrameCodec::lz4, FrameCodec::none),
                         [](const ::testing::TestParamInfo<FrameCodec>& p) {
                             return std::string(layered::codec_name(p.param));
                         });

TEST(FramesBadBuild, FrameOptionsAreCheckedBeforeAnythingIsWritten) {
    TempDir dir;
    const FramedChain chain = make_framed_chain(dir, 64, 3);
    auto error_of = [&](ringpager::FrameOptions f, uint64_t block_size = 4096) {
        ringpager::SnapshotBuildOptions options;
        options.base_path = chain.base;
        options.manifest_path = dir.file("snap.rpm");
        options.block_size_bytes = block_size;
        options.frames = f;
        ringpager::SnapshotBuildReport report;
        std::string error;
        EXPECT_FALSE(ringpager::build_layered_snapshot(options, report, error));
        EXPECT_FALSE(std::filesystem::exists(dir.file("snap.rpm")));
        return error;
    };
    auto f = frame_options(FrameCodec::zstd);
    f.zstd_level = 0;
    EXPECT_EQ(error_of(f), "zstd level 0 is not between 1 and 19");
    f.zstd_level = 20;
    EXPECT_EQ(error_of(f), "zstd level 20 is not between 1 and 19");
    EXPECT_EQ(error_of(frame_options(FrameCodec::lz4, 3 << 20)),
              "frame size 3145728 is not a power of two between the block size (4 KiB) and 64 MiB");
    EXPECT_EQ(error_of(frame_options(FrameCodec::lz4, 128 << 20)),
              "frame size 134217728 is not a power of two between the block size (4 KiB) and 64 MiB");
    EXPECT_EQ(error_of(frame_options(FrameCodec::lz4, 2048)),
              "frame size 2048 is not a power of two between the block size (4 KiB) and 64 MiB");
    EXPECT_EQ(error_of(frame_options(static_cast<FrameCodec>(5))), "unknown frame codec 5");
}

}  // namespace
