// Pins that a layered snapshot built from a base and a chain of sparse diffs
// serves, through Source::lookup and plain preads, exactly the flattened
// memory (base with diffs applied in order), and that it stores little.
#include <xxhash.h>

#include <unordered_set>

#include "snapshot_test_util.hpp"

namespace {

using namespace snaptest;

struct Key128Hash {
    size_t operator()(const XXH128_hash_t& k) const { return static_cast<size_t>(k.low64); }
};
struct Key128Eq {
    bool operator()(const XXH128_hash_t& a, const XXH128_hash_t& b) const {
        return a.low64 == b.low64 && a.high64 == b.high64;
    }
};
using KeySet = std::unordered_set<XXH128_hash_t, Key128Hash, Key128Eq>;

// Adds the distinct non-zero pages among `pages` of `memory` to `keys`.
void add_distinct(KeySet& keys, const Bytes& memory, const std::vector<uint64_t>& pages) {
    static const Bytes zero(page_bytes);
    for (uint64_t p : pages) {
        const std::byte* page = memory.data() + p * page_bytes;
        if (std::memcmp(page, zero.data(), page_bytes) != 0) keys.insert(XXH3_128bits(page, page_bytes));
    }
}

std::vector<uint64_t> all_pages(const Bytes& memory) {
    std::vector<uint64_t> pages(memory.size() / page_bytes);
    for (uint64_t i = 0; i < pages.size(); ++i) pages[i] = i;
    return pages;
}

// A base plus two sparse diffs on disk, and the memory they flatten to.
struct Chain {
    Bytes flat;
    KeySet distinct_nonzero;   // over every page of every input
    std::vector<std::string> diffs;
    std::string base;
};

Chain make_chain(const TempDir& dir, uint64_t pages, double zero, double dup, uint64_t seed) {
    Chain c;
    PageGen gen(seed, zero, dup);
    c.flat.resize(pages * page_bytes);
    gen.fill(c.flat, 0, pages);
    c.base = dir.file("mem.base");
    write_file(c.base, c.flat);
    add_distinct(c.distinct_nonzero, c.flat, all_pages(c.flat));
    for (int i = 1; i <= 2; ++i) {
        auto changed = change_pages(c.flat, gen, i == 1 ? 0.10 : 0.05);
        std::string path = dir.file("mem.diff" + std::to_string(i));
        write_sparse_diff(path, c.flat, changed);
        add_distinct(c.distinct_nonzero, c.flat, changed);
        c.diffs.push_back(path);
    }
    return c;
}

TEST(LayeredRoundTrip, ThreeLayerChainServesEveryPageOfTheFlattenedMemory) {
    TempDir dir;
    Chain chain = make_chain(dir, 4096, 0.6, 0.1, 1);
    std::string manifest = dir.file("snap.rpm");
    auto report = build(chain.base, chain.diffs, manifest);
    EXPECT_EQ(report.files_written.size(), 4u);
    EXPECT_EQ(report.blocks_total,
              report.blocks_zero + report.blocks_duplicate + report.blocks_stored + report.blocks_shadowed);

    std::string error;
    auto source = ringpager::open_layered_source(manifest, true, error);
    ASSERT_TRUE(source) << error;
    EXPECT_EQ(source->size_bytes(), chain.flat.size());
    EXPECT_EQ(source->block_size_bytes(), 4096u);
    EXPECT_EQ(source->file_fds().size(), 3u);
    EXPECT_TRUE(source->verifies_reads());

    // Page by page, then whole extents, then odd-sized clipped pieces.
    for (uint64_t max : {page_bytes, uint64_t{1} << 40, uint64_t{3 * page_bytes + 100}}) {
        Bytes served = read_through_source(*source, max);
        EXPECT_EQ(first_different_page(served, chain.flat), -1) << "max length " << max;
    }
    EXPECT_EQ(source->verify(0, chain.flat), "");
}

TEST(LayeredRoundTrip, StorageIsAtMostTheDistinctNonZeroBlocksPlusTwoPercent) {
    TempDir dir;
    Chain chain = make_chain(dir, 16384, 0.6, 0.1, 2);   // 64 MiB
    std::string manifest = dir.file("snap.rpm");
    auto report = build(chain.base, chain.diffs, manifest);
    uint64_t written = 0;
    for (const std::string& f : report.files_written) written += file_size(f);
    uint64_t distinct_bytes = chain.distinct_nonzero.size() * page_bytes;
    uint64_t budget = distinct_bytes * 102 / 100;
    RecordProperty("written_bytes", std::to_string(written));
    RecordProperty("distinct_nonzero_bytes", std::to_string(distinct_bytes));
    EXPECT_LE(written, budget) << "distinct non-zero pages " << chain.distinct_nonzero.size();
    EXPECT_LE(report.blocks_stored, chain.distinct_nonzero.size());
    EXPECT_EQ(report.bytes_written, written);

    std::string error;
    auto source = ringpager::open_layered_source(manifest, false, error);
    ASSERT_TRUE(source) << error;
    EXPECT_FALSE(source->verifies_reads());
    EXPECT_EQ(first_different_page(read_through_source(*source, uint64_t{1} << 40), chain.flat), -1);
}

TEST(LayeredRoundTrip, BaseOnlyCountsZeroDuplicateAndStoredBlocksExactly) {
    TempDir dir;
    Bytes memory(2048 * page_bytes);
    PageGen gen(3, 0.5, 0.2);
    gen.fill(memory, 0, 2048);
    write_file(dir.file("base"), memory);
    KeySet distinct;
    add_distinct(distinct, memory, all_pages(memory));
    uint64_t zero_pages = 0;
    static const Bytes zero(page_bytes);
    for (uint64_t p = 0; p < 2048; ++p) zero_pages += std::memcmp(memory.data() + p * page_bytes, zero.data(), page_bytes) == 0;

    auto report = build(dir.file("base"), {}, dir.file("snap.rpm"));
    EXPECT_EQ(report.blocks_total, 2048u);
    EXPECT_EQ(report.blocks_zero, zero_pages);
    EXPECT_EQ(report.blocks_stored, distinct.size());
    EXPECT_EQ(report.blocks_duplicate, 2048 - zero_pages - distinct.size());
    EXPECT_EQ(report.blocks_shadowed, 0u);
    EXPECT_EQ(file_size(dir.file("snap.rpm.layer0.rpl")), 4096 + distinct.size() * page_bytes);
}

TEST(LayeredRoundTrip, DiffBlocksThatDuplicateStoredBlocksAreNotStoredAgain) {
    TempDir dir;
    Bytes memory(512 * page_bytes);
    PageGen gen(4, 0.0, 0.0);
    gen.fill(memory, 0, 512);
    write_file(dir.file("base"), memory);
    // Every changed page becomes a copy of its unchanged neighbour.
    std::vector<uint64_t> changed;
    for (uint64_t p = 0; p < 512; p += 4) {
        std::memcpy(memory.data() + p * page_bytes, memory.data() + (p + 1) * page_bytes, page_bytes);
        changed.push_back(p);
    }
    write_sparse_diff(dir.file("diff"), memory, changed);
    auto report = build(dir.file("base"), {dir.file("diff")}, dir.file("snap.rpm"));
    EXPECT_EQ(report.blocks_duplicate, changed.size());
    EXPECT_EQ(file_size(dir.file("snap.rpm.layer1.rpl")), 4096u);   // header only

    std::string error;
    auto source = ringpager::open_layered_source(dir.file("snap.rpm"), true, error);
    ASSERT_TRUE(source) << error;
    EXPECT_EQ(first_different_page(read_through_source(*source, page_bytes), memory), -1);
}

TEST(LayeredRoundTrip, BlocksALaterDiffReplacesEntirelyAreNotStored) {
    TempDir dir;
    Bytes memory(256 * page_bytes);
    PageGen gen(5, 0.0, 0.0);
    gen.fill(memory, 0, 256);
    write_file(dir.file("base"), memory);
    std::vector<uint64_t> changed;
    for (uint64_t p = 0; p < 128; ++p) changed.push_back(p);   // first half rewritten
    gen.fill(memory, 0, 128);
    write_sparse_diff(dir.file("diff"), memory, changed);
    auto report = build(dir.file("base"), {dir.file("diff")}, dir.file("snap.rpm"));
    EXPECT_EQ(report.blocks_shadowed, 128u);
    EXPECT_EQ(report.blocks_stored, 256u);
    EXPECT_EQ(file_size(dir.file("snap.rpm.layer0.rpl")), 4096 + 128 * page_bytes);

    std::string error;
    auto source = ringpager::open_layered_source(dir.file("snap.rpm"), true, error);
    ASSERT_TRUE(source) << error;
    EXPECT_EQ(first_different_page(read_through_source(*source, uint64_t{1} << 30), memory), -1);
}

TEST(LayeredRoundTrip, HugeBlocksRoundTripWithDiffsThatChangeSinglePages) {
    TempDir dir;
    constexpr uint64_t huge = 2 << 20;
    Chain chain = make_chain(dir, 16 * huge / page_bytes, 0.3, 0.1, 6);   // 32 MiB, 16 blocks
    // A whole zero huge block and a huge block that only a diff fills.
    std::string manifest = dir.file("snap.rpm");
    auto report = build(chain.base, chain.diffs, manifest, huge);
    EXPECT_EQ(report.block_size_bytes, huge);

    std::string error;
    auto source = ringpager::open_layered_source(manifest, true, error);
    ASSERT_TRUE(source) << error;
    EXPECT_EQ(source->block_size_bytes(), huge);
    for (uint64_t max : {huge, uint64_t{1} << 40, page_bytes}) {
        EXPECT_EQ(first_different_page(read_through_source(*source, max), chain.flat), -1) << "max length " << max;
    }
    EXPECT_EQ(source->verify(0, chain.flat), "");
    // Layer data starts block aligned, after a header page and a hole.
    for (int i = 0; i < 3; ++i) {
        std::string layer = manifest + ".layer" + std::to_string(i) + ".rpl";
        EXPECT_EQ((file_size(layer) - huge) % huge, 0u) << layer;
    }
}

TEST(LayeredRoundTrip, HugeBlocksMergeDiffPagesOverAZeroBaseBlock) {
    TempDir dir;
    constexpr uint64_t huge = 2 << 20;
    Bytes memory(4 * huge);   // all zero base: nothing stored
    write_file(dir.file("base"), memory);
    PageGen gen(7, 0.0, 0.0);
    gen.fill(memory, huge / page_bytes + 3, 2);   // two pages inside block 1
    write_sparse_diff(dir.file("diff"), memory, {huge / page_bytes + 3, huge / page_bytes + 4});
    auto report = build(dir.file("base"), {dir.file("diff")}, dir.file("snap.rpm"), huge);
    EXPECT_EQ(report.blocks_zero, 4u);
    EXPECT_EQ(report.blocks_stored, 1u);
    std::string error;
    auto source = ringpager::open_layered_source(dir.file("snap.rpm"), false, error);
    ASSERT_TRUE(source) << error;
    EXPECT_EQ(first_different_page(read_through_source(*source, huge), memory), -1);
}

TEST(LayeredRoundTrip, HolesInASparseBaseAreZeroBlocksAndAreNotRead) {
    TempDir dir;
    Bytes memory(1024 * page_bytes);
    PageGen gen(9, 0.0, 0.0);
    std::vector<uint64_t> written = {0, 1, 500, 1023};
    for (uint64_t p : written) gen.random_page(memory.data() + p * page_bytes);
    write_sparse_diff(dir.file("base"), memory, written);   // a sparse full memory file
    auto report = build(dir.file("base"), {}, dir.file("snap.rpm"));
    EXPECT_EQ(report.blocks_total, 4u);
    EXPECT_EQ(report.blocks_stored, 4u);
    EXPECT_EQ(report.bytes_in, 4 * page_bytes);
    EXPECT_LT(report.bytes_read, memory.size());
    std::string error;
    auto source = ringpager::open_layered_source(dir.file("snap.rpm"), true, error);
    ASSERT_TRUE(source) << error;
    auto e = source->lookup(2 * page_bytes, uint64_t{1} << 40);
    EXPECT_EQ(e.kind, ringpager::SourceExtent::Kind::zero);
    EXPECT_EQ(e.length_bytes, 498 * page_bytes);
    EXPECT_EQ(first_different_page(read_through_source(*source, uint64_t{1} << 40), memory), -1);
}

TEST(LayeredRoundTrip, AllHoleBaseIsOneZeroExtent) {
    TempDir dir;
    write_sparse_diff(dir.file("base"), Bytes(256 * page_bytes), {});
    auto report = build(dir.file("base"), {}, dir.file("snap.rpm"));
    EXPECT_EQ(report.blocks_total, 0u);
    EXPECT_EQ(report.extent_count, 1u);
    std::string error;
    auto source = ringpager::open_layered_source(dir.file("snap.rpm"), false, error);
    ASSERT_TRUE(source) << error;
    auto e = source->lookup(0, uint64_t{1} << 40);
    EXPECT_EQ(e.kind, ringpager::SourceExtent::Kind::zero);
    EXPECT_EQ(e.length_bytes, 256 * page_bytes);
    ringpager::SnapshotVerifyReport verify;
    EXPECT_TRUE(ringpager::verify_layered_snapshot(dir.file("snap.rpm"), verify, error)) << error;
    EXPECT_EQ(verify.blocks_checked, 0u);
}

TEST(LayeredRoundTrip, VerifyChecksEveryStoredBlock) {
    TempDir dir;
    Chain chain = make_chain(dir, 1024, 0.5, 0.1, 10);
    auto report = build(chain.base, chain.diffs, dir.file("snap.rpm"));
    ringpager::SnapshotVerifyReport verify;
    std::string error;
    uint64_t progress_total = 0, progress_done = 0;
    EXPECT_TRUE(ringpager::verify_layered_snapshot(dir.file("snap.rpm"), verify, error,
                                                   [&](uint64_t done, uint64_t total) {
                                                       progress_done = done;
                                                       progress_total = total;
                                                   }))
        << error;
    EXPECT_EQ(verify.blocks_checked, report.blocks_stored);
    EXPECT_EQ(verify.bytes_read, report.blocks_stored * page_bytes);
    EXPECT_EQ(verify.bad_blocks, 0u);
    EXPECT_EQ(progress_done, progress_total);
}

TEST(LayeredRoundTrip, SmallReadBuffersAndFewReadsInFlightGiveTheSameSnapshot) {
    TempDir dir;
    Chain chain = make_chain(dir, 2048, 0.4, 0.2, 8);
    ringpager::SnapshotBuildOptions options;
    options.base_path = chain.base;
    options.diff_paths = chain.diffs;
    options.manifest_path = dir.file("small.rpm");
    options.sync = true;
    options.reads_in_flight = 3;
    options.read_buffer_bytes = 5 * page_bytes;
    uint64_t last_done = 0, calls = 0, total_seen = 0;
    options.progress = [&](uint64_t done, uint64_t total) {
        EXPECT_GT(done, last_done);
        last_done = done;
        total_seen = total;
        ++calls;
    };
    ringpager::SnapshotBuildReport report;
    std::string error;
    ASSERT_TRUE(ringpager::build_layered_snapshot(options, report, error)) << error;
    EXPECT_EQ(last_done, total_seen);
    EXPECT_EQ(last_done, report.bytes_read);
    EXPECT_GT(calls, 100u);
    auto source = ringpager::open_layered_source(options.manifest_path, true, error);
    ASSERT_TRUE(source) << error;
    EXPECT_EQ(first_different_page(read_through_source(*source, page_bytes), chain.flat), -1);
}

}  // namespace
