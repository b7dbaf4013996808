// Pins the frame codecs (snapshot format version 2): every codec round-trips a
// frame byte for byte, and decompression is bounded by the declared plain
// size: a frame that decodes to more or to fewer bytes, or is not valid data
// of its codec, is refused with one line and never overruns its buffer.
#include <xxhash.h>

#include "snapshot/layered/codec.hpp"
#include "snapshot_test_util.hpp"

namespace {

using namespace snaptest;
using ringpager::FrameCodec;
namespace layered = ringpager::layered;

// Half random, half text-like repeats: compressible, but not trivially.
Bytes sample_frame(uint64_t bytes, uint64_t seed) {
    Bytes out(bytes);
    PageGen gen(seed, 0, 0);
    for (uint64_t at = 0; at < bytes; at += page_bytes) {
        if ((at / page_bytes) % 2 == 0) {
            gen.random_page(out.data() + at);
        } else {
            for (uint64_t i = 0; i < page_bytes; ++i) out[at + i] = std::byte(static_cast<uint8_t>("ringpager "[i % 10]));
        }
    }
    return out;
}

class Codecs : public ::testing::TestWithParam<FrameCodec> {};

TEST_P(Codecs, RoundTripIsByteExactAndWithinTheBound) {
    const Bytes plain = sample_frame(2 << 20, 5);
    layered::FrameCompressor c(GetParam(), 3);
    Bytes stored;
    ASSERT_EQ(c.compress(plain, stored), "");
    EXPECT_LE(stored.size(), layered::stored_bound(GetParam(), plain.size()));
    if (GetParam() != FrameCodec::none) {
        EXPECT_LT(stored.size(), plain.size() * 6 / 10) << "half of the sample is repeats";
    }
    Bytes back(plain.size());
    layered::FrameDecompressor d(GetParam());
    ASSERT_EQ(d.decompress(stored, back), "");
    EXPECT_EQ(XXH3_64bits(back.data(), back.size()), XXH3_64bits(plain.data(), plain.size()));
}

TEST_P(Codecs, AFrameThatDecodesToMoreThanItsPlainSizeIsRefused) {
    const Bytes plain = sample_frame(64 << 10, 6);
    layered::FrameCompressor c(GetParam(), 1);
    Bytes stored;
    ASSERT_EQ(c.compress(plain, stored), "");
    // The declared size is one page short: the output buffer is exactly that big.
    Bytes short_buffer(plain.size() - page_bytes + 2 * page_bytes);
    std::span<std::byte> declared(short_buffer.data(), plain.size() - page_bytes);
    layered::FrameDecompressor d(GetParam());
    const std::string error = d.decompress(stored, declared);
    EXPECT_NE(error, "");
    EXPECT_EQ(error.find('\n'), std::string::npos) << error;
    if (GetParam() == FrameCodec::zstd) {
        EXPECT_EQ(error, "decompresses to more than its 61440 plain bytes");
    }
    // Nothing was written past the declared size.
    for (uint64_t i = declared.size(); i < short_buffer.size(); ++i) ASSERT_EQ(short_buffer[i], std::byte{0}) << i;
}

TEST_P(Codecs, AFrameThatDecodesToFewerBytesThanItsPlainSizeIsRefused) {
    const Bytes plain = sample_frame(64 << 10, 7);
    layered::FrameCompressor c(GetParam(), 1);
    Bytes stored;
    ASSERT_EQ(c.compress(plain, stored), "");
    Bytes bigger(plain.size() + page_bytes);
    layered::FrameDecompressor d(GetParam());
    const std::string error = d.decompress(stored, bigger);
    if (GetParam() == FrameCodec::none) {
        EXPECT_EQ(error, "decompresses to 65536 bytes, not its 69632 plain bytes");
    } else if (GetParam() == FrameCodec::zstd) {
        EXPECT_EQ(error, "decompresses to 65536 bytes, not its 69632 plain bytes");
    } else {
        EXPECT_NE(error, "");   // lz4 reads the block to its end and stops short of the buffer
    }
}

TEST_P(Codecs, GarbageIsRefusedWithoutOverrunningTheBuffer) {
    Bytes garbage(4096);
    PageGen gen(9, 0, 0);
    gen.random_page(garbage.data());
    Bytes out(64 << 10);
    layered::FrameDecompressor d(GetParam());
    const std::string error = d.decompress(garbage, out);
    EXPECT_NE(error, "");
    EXPECT_EQ(error.find('\n'), std::string::npos) << error;
}

INSTANTIATE_TEST_SUITE_P(Frames, Codecs, ::testing::Values(FrameCodec::none, FrameCodec::zstd, FrameCodec::lz4),
                         [](const ::testing::TestParamInfo<FrameCodec>& p) { return std::string(layered::codec_name(p.param)); });

TEST(CodecNames, NamesAndBounds) {
    EXPECT_STREQ(layered::codec_name(FrameCodec::zstd), "zstd");
    EXPECT_STREQ(layered::codec_name(static_cast<FrameCodec>(9)), "unknown");
    EXPECT_TRUE(layered::valid_codec(2));
    EXPECT_FALSE(layered::valid_codec(3));
    EXPECT_EQ(layered::stored_bound(FrameCodec::none, 4096), 4096u);
    EXPECT_GT(layered::stored_bound(FrameCodec::zstd, 4096), 4096u);
    EXPECT_GT(layered::stored_bound(FrameCodec::lz4, 4096), 4096u);
}

}  // namespace
