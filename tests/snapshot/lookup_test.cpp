// Pins LayeredSource::lookup: extents are maximal runs, a lookup starts at the
// asked offset (aligned or not), is clipped to max_length_bytes, and agrees
// with the per-block answers at every boundary.
#include "snapshot_test_util.hpp"

namespace {

using namespace snaptest;
using Kind = ringpager::SourceExtent::Kind;
constexpr uint64_t P = page_bytes;
constexpr uint64_t unlimited = uint64_t{1} << 50;

// Pages: Z Z A B C Z A B D Z  (Z zero; A, B, C, D distinct random pages).
class HandmadeSnapshot : public ::testing::Test {
protected:
    void SetUp() override {
        Bytes memory(10 * P);
        PageGen gen(11, 0, 0);
        for (uint64_t page : {2, 3, 4, 8}) gen.random_page(memory.data() + page * P);
        std::memcpy(memory.data() + 6 * P, memory.data() + 2 * P, P);
        std::memcpy(memory.data() + 7 * P, memory.data() + 3 * P, P);
        write_file(dir_.file("base"), memory);
        build(dir_.file("base"), {}, dir_.file("snap.rpm"));
        std::string error;
        source_ = ringpager::open_layered_source(dir_.file("snap.rpm"), false, error);
        ASSERT_TRUE(source_) << error;
    }

    void expect_zero(uint64_t offset, uint64_t max, uint64_t length) {
        auto e = source_->lookup(offset, max);
        EXPECT_EQ(e.kind, Kind::zero) << "offset " << offset;
        EXPECT_EQ(e.length_bytes, length) << "offset " << offset;
    }
    void expect_data(uint64_t offset, uint64_t max, uint64_t file_offset, uint64_t length) {
        auto e = source_->lookup(offset, max);
        EXPECT_EQ(e.kind, Kind::data) << "offset " << offset;
        EXPECT_EQ(e.file_index, 0u) << "offset " << offset;
        EXPECT_EQ(e.file_offset, file_offset) << "offset " << offset;
        EXPECT_EQ(e.length_bytes, length) << "offset " << offset;
    }

    TempDir dir_;
    std::unique_ptr<ringpager::Source> source_;
};

TEST_F(HandmadeSnapshot, ExtentsAreTheMaximalRuns) {
    // Slots: A=0, B=1, C=2, D=3, stored from file offset 4096 on.
    expect_zero(0, unlimited, 2 * P);
    expect_data(2 * P, unlimited, P, 3 * P);
    expect_zero(5 * P, unlimited, P);
    expect_data(6 * P, unlimited, P, 2 * P);   // A B again: slots 0..1, one extent
    expect_data(8 * P, unlimited, 4 * P, P);
    expect_zero(9 * P, unlimited, P);
    ringpager::SnapshotInfo info;
    std::string error;
    ASSERT_TRUE(ringpager::inspect_layered_snapshot(dir_.file("snap.rpm"), info, error)) << error;
    EXPECT_EQ(info.extent_count, 6u);
    EXPECT_EQ(info.zero_extents, 3u);
    EXPECT_EQ(info.data_extents, 3u);
    EXPECT_EQ(info.zero_blocks, 4u);
    EXPECT_EQ(info.data_blocks, 6u);
    ASSERT_EQ(info.layers.size(), 1u);
    EXPECT_EQ(info.layers[0].stored_blocks, 4u);
    EXPECT_EQ(info.layers[0].referenced_blocks, 6u);
    EXPECT_EQ(info.layers[0].status, "ok");
}

TEST_F(HandmadeSnapshot, LookupsStartAtTheOffsetAndAreClippedToTheMaximum) {
    expect_zero(P + 10, unlimited, P - 10);
    expect_zero(0, 100, 100);
    expect_data(2 * P, 5000, P, 5000);
    expect_data(3 * P + 7, unlimited, 2 * P + 7, 2 * P - 7);
    expect_data(5 * P - 1, unlimited, 4 * P - 1, 1);   // last byte of an extent
    expect_data(7 * P, 1, 2 * P, 1);
    expect_zero(10 * P - 1, 10, 1);                     // last byte of the guest
}

// Every lookup at random offsets and maxima agrees with the single-block
// answers, and ends either at the maximum or where the next block is not contiguous.
TEST(LayeredLookup, RandomLookupsAgreeWithPerBlockAnswersAndAreMaximal) {
    TempDir dir;
    constexpr uint64_t pages = 4096;
    Bytes memory(pages * P);
    PageGen gen(12, 0.5, 0.2);
    gen.fill(memory, 0, pages);
    write_file(dir.file("base"), memory);
    auto changed = change_pages(memory, gen, 0.2);
    write_sparse_diff(dir.file("diff"), memory, changed);
    build(dir.file("base"), {dir.file("diff")}, dir.file("snap.rpm"));
    std::string error;
    auto source = ringpager::open_layered_source(dir.file("snap.rpm"), false, error);
    ASSERT_TRUE(source) << error;

    std::vector<ringpager::SourceExtent> block(pages);
    for (uint64_t b = 0; b < pages; ++b) {
        block[b] = source->lookup(b * P, P);
        ASSERT_EQ(block[b].length_bytes, P);
    }
    auto continues = [&](uint64_t b) {   // block b+1 continues block b's extent
        const auto &x = block[b], &y = block[b + 1];
        if (x.kind != y.kind) return false;
        if (x.kind == Kind::zero) return true;
        return x.file_index == y.file_index && x.file_offset + P == y.file_offset;
    };
    std::mt19937_64 rng(13);
    for (int i = 0; i < 20000; ++i) {
        uint64_t offset = rng() % (pages * P);
        uint64_t max = 1 + rng() % (64 * P);
        auto e = source->lookup(offset, max);
        uint64_t b = offset / P;
        ASSERT_EQ(e.kind, block[b].kind) << offset;
        if (e.kind == Kind::data) {
            ASSERT_EQ(e.file_index, block[b].file_index);
            ASSERT_EQ(e.file_offset, block[b].file_offset + offset % P) << offset;
        }
        uint64_t end = offset + e.length_bytes;
        ASSERT_LE(e.length_bytes, max);
        for (uint64_t k = b; (k + 1) * P < end; ++k) ASSERT_TRUE(continues(k)) << "extent crosses a break at block " << k;
        if (e.length_bytes < max && end < pages * P) {
            ASSERT_EQ(end % P, 0u);
            ASSERT_FALSE(continues(end / P - 1)) << "extent ends early at " << end;
        }
    }
    // And the walk with no maximum visits maximal, non-mergeable extents.
    uint64_t offset = 0, previous_end_block = 0;
    while (offset < pages * P) {
        auto e = source->lookup(offset, unlimited);
        if (offset > 0) {
            EXPECT_FALSE(continues(previous_end_block - 1)) << "extents at " << offset << " could merge";
        }
        offset += e.length_bytes;
        previous_end_block = offset / P;
    }
}

TEST(LayeredLookup, DescribeNamesTheManifestAndSize) {
    TempDir dir;
    Bytes memory(8 * P);
    write_file(dir.file("base"), memory);
    build(dir.file("base"), {}, dir.file("snap.rpm"));
    std::string error;
    auto source = ringpager::open_layered_source(dir.file("snap.rpm"), false, error);
    ASSERT_TRUE(source) << error;
    EXPECT_NE(source->describe().find(dir.file("snap.rpm")), std::string::npos) << source->describe();
    EXPECT_NE(source->describe().find("32 KiB"), std::string::npos) << source->describe();
    auto e = source->lookup(0, unlimited);
    EXPECT_EQ(e.kind, Kind::zero);
    EXPECT_EQ(e.length_bytes, 8 * P);
}

}  // namespace
