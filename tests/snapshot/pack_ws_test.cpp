// Pins `ringpager snapshot pack-ws` (the packed working-set layer): the packed
// manifest serves every guest byte the original serves, passes verify, and its
// last layer holds exactly the set's non-zero pages in touch order; bad sets
// and bad snapshots are refused in one line; the parser refuses unknown flags
// and a packed marker on a layer that is not a packed working set.
#include <xxhash.h>

#include <algorithm>
#include <random>
#include <set>

#include "snapshot/layered/format.hpp"
#include "snapshot/working_set.hpp"
#include "snapshot_cli.hpp"
#include "snapshot_test_util.hpp"

namespace {

using namespace snaptest;
namespace layered = ringpager::layered;
constexpr uint64_t P = page_bytes;
constexpr uint64_t kPages = 512;

std::vector<uint64_t> page_hashes(const Bytes& memory) {
    std::vector<uint64_t> out;
    for (uint64_t at = 0; at < memory.size(); at += P) out.push_back(XXH3_64bits(memory.data() + at, P));
    return out;
}

bool zero_page(const Bytes& memory, uint64_t page) {
    return std::all_of(memory.begin() + static_cast<long>(page * P), memory.begin() + static_cast<long>((page + 1) * P),
                       [](std::byte b) { return b == std::byte{0}; });
}

class PackWs : public ::testing::Test {
protected:
    void SetUp() override {
        memory_.resize(kPages * P);
        PageGen gen(33, 0.3, 0.1);
        gen.fill(memory_, 0, kPages);
        write_file(dir_.file("base"), memory_);
        auto changed = change_pages(memory_, gen, 0.1);
        write_sparse_diff(dir_.file("diff"), memory_, changed);
        build(dir_.file("base"), {dir_.file("diff")}, manifest());
        // A set of 60 pages in a shuffled order, in runs of 1-3 pages, some zero.
        std::mt19937_64 rng(7);
        std::vector<uint64_t> starts;
        for (uint64_t p = 0; p + 3 < kPages; p += 8) starts.push_back(p);
        std::shuffle(starts.begin(), starts.end(), rng);
        for (uint64_t i = 0; i < 30; i++)
            for (uint64_t k = 0; k < 1 + rng() % 3; k++) touch_.push_back(starts[i] + k);
        ASSERT_GT(std::count_if(touch_.begin(), touch_.end(), [&](uint64_t p) { return zero_page(memory_, p); }), 0);
        write_set(set_path(), touch_, identity_of(manifest()));
    }

    std::string manifest() const { return dir_.file("snap.rpm"); }
    std::string packed() const { return dir_.file("packed.rpm"); }
    std::string set_path() const { return dir_.file("set.ws"); }

    static ringpager::SnapshotIdentity identity_of(const std::string& m) {
        std::string error;
        auto source = ringpager::open_layered_source(m, false, error);
        EXPECT_NE(source, nullptr) << error;
        ringpager::SnapshotIdentity id;
        if (source) {
            EXPECT_TRUE(ringpager::snapshot_identity(*source, id, error)) << error;
        }
        return id;
    }

    static void write_set(const std::string& path, const std::vector<uint64_t>& pages,
                          ringpager::SnapshotIdentity identity) {
        ringpager::WorkingSet set;
        set.identity = identity;
        set.runs = ringpager::runs_from_pages(pages);
        std::string error;
        ASSERT_TRUE(ringpager::write_working_set_file(path, set, error)) << error;
    }

    CliRun pack(const std::string& set) const {
        return run_snapshot({"pack-ws", manifest(), "--working-set", set, "--out", packed(), "--no-sync"});
    }

    void expect_one_line_failure(const CliRun& r, const std::string& cause) {
        EXPECT_EQ(r.code, 1) << r.out << r.err;
        EXPECT_NE(r.err.find(cause), std::string::npos) << r.err;
        EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
        EXPECT_FALSE(std::filesystem::exists(packed()));
    }

    TempDir dir_;
    Bytes memory_;
    std::vector<uint64_t> touch_;   // the set's pages in touch order
};

TEST_F(PackWs, PackedManifestServesTheSameBytesAndStoresTheSetInTouchOrder) {
    const CliRun r = pack(set_path());
    ASSERT_EQ(r.code, 0) << r.err;
    std::vector<uint64_t> non_zero;
    for (uint64_t p : touch_)
        if (!zero_page(memory_, p)) non_zero.push_back(p);
    EXPECT_NE(r.out.find("packed " + packed() + ": " + std::to_string(non_zero.size()) + " of " +
                         std::to_string(touch_.size()) + " working-set pages"),
              std::string::npos)
        << r.out;

    // Every guest byte, read through the packed manifest's Source, is the original's.
    std::string error;
    auto source = ringpager::open_layered_source(packed(), true, error);
    ASSERT_NE(source, nullptr) << error;
    EXPECT_EQ(page_hashes(read_through_source(*source, 64 * 1024)), page_hashes(memory_));

    // verify checks every stored block, the packed layer's too.
    ringpager::SnapshotVerifyReport report;
    ASSERT_TRUE(ringpager::verify_layered_snapshot(packed(), report, error)) << error;
    layered::Manifest m;
    ASSERT_EQ(layered::load_manifest(packed(), m), "");
    EXPECT_EQ(report.blocks_checked, m.checksums.size());
    ASSERT_EQ(m.layers.size(), 3u);
    EXPECT_TRUE(m.packed_ws());
    // The blocks the packed layer supersedes are unreferenced slots of the
    // older layers now: loaded, verified (blocks_checked above), not served.
    std::set<std::pair<uint32_t, uint64_t>> referenced;
    for (size_t i = 0; i < m.extents.size(); i++) {
        const layered::Extent& e = m.extents[i];
        if (layered::is_zero_location(e.location)) continue;
        for (uint64_t b = e.first_block; b < m.extent_end_block(i); b++)
            referenced.insert({layered::location_layer(e.location), layered::location_slot(e.location) + b - e.first_block});
    }
    uint64_t unreferenced = 0;
    for (uint32_t l = 0; l < 2; l++)
        for (uint64_t slot = 0; slot < m.layers[l].block_count; slot++) unreferenced += !referenced.count({l, slot});
    EXPECT_GT(unreferenced, 0u);

    // The packed layer holds exactly the set's non-zero pages, in touch order.
    const Bytes layer = read_file(dir_.file("packed.rpm.layer2.rpl"));
    ASSERT_EQ(layer.size(), 4096 + non_zero.size() * P);
    for (size_t i = 0; i < non_zero.size(); i++) {
        EXPECT_EQ(XXH3_64bits(layer.data() + 4096 + i * P, P), XXH3_64bits(memory_.data() + non_zero[i] * P, P))
            << "slot " << i << " should hold page " << non_zero[i];
    }
    // The packed order names the whole set in touch order, zero pages too.
    std::vector<uint64_t> named;
    for (const ringpager::GuestRange& g : source->packed_working_set())
        for (uint64_t at = g.offset; at < g.offset + g.length_bytes; at += P) named.push_back(at / P);
    EXPECT_EQ(named, touch_);
    // Zero pages of the set stay zero extents: no storage.
    for (uint64_t p : touch_) {
        if (!zero_page(memory_, p)) continue;
        EXPECT_EQ(source->lookup(p * P, P).kind, ringpager::SourceExtent::Kind::zero) << p;
    }
    // The original is untouched and still carries no packed layer.
    auto original = ringpager::open_layered_source(manifest(), true, error);
    ASSERT_NE(original, nullptr) << error;
    EXPECT_TRUE(original->packed_working_set().empty());
}

TEST_F(PackWs, InspectShowsThePackedLayerAndItsPageCount) {
    ASSERT_EQ(pack(set_path()).code, 0);
    ringpager::SnapshotInfo info;
    std::string error;
    ASSERT_TRUE(ringpager::inspect_layered_snapshot(packed(), info, error)) << error;
    ASSERT_EQ(info.layers.size(), 3u);
    EXPECT_TRUE(info.layers[2].packed_ws);
    EXPECT_FALSE(info.layers[0].packed_ws);
    EXPECT_EQ(info.packed_ws_blocks, info.layers[2].stored_blocks);
    EXPECT_EQ(info.layers[2].referenced_blocks, info.layers[2].stored_blocks);
    const CliRun text = run_snapshot({"inspect", packed()});
    EXPECT_EQ(text.code, 0) << text.err;
    EXPECT_EQ(info.packed_ws_pages, touch_.size());
    EXPECT_NE(text.out.find("working set  packed: " + std::to_string(touch_.size()) + " pages in touch order, " +
                            std::to_string(info.packed_ws_blocks) + " stored in layer 2"),
              std::string::npos)
        << text.out;
    EXPECT_NE(text.out.find("packed working set (slots in touch order)"), std::string::npos) << text.out;
    const CliRun verify = run_snapshot({"verify", packed(), "--no-progress"});
    EXPECT_EQ(verify.code, 0) << verify.err;
}

// The identity is the guest bytes': a set recorded against either snapshot
// loads against the other.
TEST_F(PackWs, WorkingSetIdentityHoldsAcrossPacking) {
    ASSERT_EQ(pack(set_path()).code, 0);
    const ringpager::SnapshotIdentity plain = identity_of(manifest()), packed_id = identity_of(packed());
    EXPECT_EQ(plain, packed_id);
    ringpager::WorkingSet set;
    std::string error;
    EXPECT_TRUE(ringpager::load_working_set_for(set_path(), packed_id, set, error)) << error;
    write_set(dir_.file("from-packed.ws"), {5, 6, 7, 100}, packed_id);
    EXPECT_TRUE(ringpager::load_working_set_for(dir_.file("from-packed.ws"), plain, set, error)) << error;
}

TEST_F(PackWs, SetOfAnotherSnapshotIsRefused) {
    ringpager::SnapshotIdentity other = identity_of(manifest());
    other.fingerprint ^= 1;
    write_set(dir_.file("other.ws"), touch_, other);
    expect_one_line_failure(pack(dir_.file("other.ws")), "ringpager snapshot pack-ws: working set " +
                                                             dir_.file("other.ws") +
                                                             ": recorded from another snapshot (content fingerprint "
                                                             "differs)\n");
}

TEST_F(PackWs, TruncatedSetIsRefused) {
    Bytes bytes = read_file(set_path());
    bytes.resize(bytes.size() - 3);
    write_file(dir_.file("short.ws"), bytes);
    expect_one_line_failure(pack(dir_.file("short.ws")), "ringpager snapshot pack-ws: working set " +
                                                             dir_.file("short.ws") + ": truncated");
}

TEST_F(PackWs, CorruptSetIsRefused) {
    Bytes bytes = read_file(set_path());
    bytes.back() ^= std::byte{0x40};
    write_file(dir_.file("bad.ws"), bytes);
    expect_one_line_failure(pack(dir_.file("bad.ws")), "ringpager snapshot pack-ws: working set " +
                                                           dir_.file("bad.ws") + ": corrupt: checksum mismatch\n");
}

TEST_F(PackWs, OutputInAnotherDirectoryIsRefused) {
    std::filesystem::create_directory(dir_.file("elsewhere"));
    const CliRun r = run_snapshot(
        {"pack-ws", manifest(), "--working-set", set_path(), "--out", dir_.file("elsewhere/p.rpm"), "--no-sync"});
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("--out must be in the manifest's directory"), std::string::npos) << r.err;
    EXPECT_FALSE(std::filesystem::exists(dir_.file("elsewhere/p.rpm")));
}

TEST_F(PackWs, OutputOverTheSnapshotOrOneOfItsLayersIsRefused) {
    for (const std::string& out : {manifest(), manifest() + ".layer1.rpl"}) {
        const Bytes before = read_file(out);
        const CliRun r = run_snapshot({"pack-ws", manifest(), "--working-set", set_path(), "--out", out, "--no-sync"});
        EXPECT_EQ(r.code, 1) << out;
        EXPECT_NE(r.err.find("--out"), std::string::npos) << r.err;
        EXPECT_EQ(read_file(out), before);
    }
}

TEST_F(PackWs, PackedSnapshotIsNotPackedAgain) {
    ASSERT_EQ(pack(set_path()).code, 0);
    const CliRun r = run_snapshot(
        {"pack-ws", packed(), "--working-set", set_path(), "--out", dir_.file("again.rpm"), "--no-sync"});
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("already has a packed working-set layer"), std::string::npos) << r.err;
}

TEST_F(PackWs, CompressedSnapshotIsRefused) {
    ringpager::SnapshotBuildOptions options;
    options.base_path = dir_.file("base");
    options.manifest_path = dir_.file("z.rpm");
    options.sync = false;
    options.frames = ringpager::FrameOptions{};
    ringpager::SnapshotBuildReport report;
    std::string error;
    ASSERT_TRUE(ringpager::build_layered_snapshot(options, report, error)) << error;
    // (A compressed snapshot has no identity yet: the version is refused first.)
    write_set(dir_.file("z.ws"), touch_, identity_of(manifest()));
    const CliRun r = run_snapshot(
        {"pack-ws", dir_.file("z.rpm"), "--working-set", dir_.file("z.ws"), "--out", dir_.file("zp.rpm")});
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("pack-ws packs format version 1 snapshots only"), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

// ---- the parser -------------------------------------------------------------

class PackedManifest : public PackWs {
protected:
    void SetUp() override {
        PackWs::SetUp();
        ASSERT_EQ(pack(set_path()).code, 0);
    }

    void expect_refused(const Bytes& bytes, const std::string& cause) {
        write_file(packed(), bytes);
        std::string error;
        EXPECT_EQ(ringpager::open_layered_source(packed(), false, error), nullptr);
        EXPECT_NE(error.find(packed() + ": "), std::string::npos) << error;
        EXPECT_NE(error.find(cause), std::string::npos) << error;
        EXPECT_EQ(error.find('\n'), std::string::npos) << error;
        layered::Manifest loaded, decoded;
        EXPECT_EQ(layered::decode_manifest(bytes, packed(), decoded), layered::load_manifest(packed(), loaded));
    }

    static void set_flags(Bytes& m, uint32_t flags) {
        std::memcpy(m.data() + 44, &flags, 4);
        layered::reseal_manifest(m);
    }
};

TEST_F(PackedManifest, UnknownFlagIsRefused) {
    Bytes m = read_file(packed());
    set_flags(m, layered::manifest_flag_packed_ws | 0x4);
    expect_refused(m, "invalid header: unknown flags 0x0000000000000004");
}

TEST_F(PackedManifest, PackedLayerWithAnUnreferencedSlotIsRefused) {
    layered::Manifest m;
    ASSERT_EQ(layered::load_manifest(packed(), m), "");
    // The packed layer's first slot is now served as zeros instead.
    for (layered::Extent& e : m.extents) {
        if (!layered::is_zero_location(e.location) && layered::location_layer(e.location) == 2 &&
            layered::location_slot(e.location) == 0) {
            e.location = layered::zero_location;
            break;
        }
    }
    expect_refused(layered::encode_manifest(m), "is marked a packed working set, but its slot 0 is not referenced");
}

TEST_F(PackedManifest, PackedLayerWithASlotReferencedTwiceIsRefused) {
    layered::Manifest m;
    ASSERT_EQ(layered::load_manifest(packed(), m), "");
    // A zero extent now points at the packed layer's slot 0, already referenced.
    for (size_t i = 0; i < m.extents.size(); i++) {
        if (layered::is_zero_location(m.extents[i].location) && m.extent_end_block(i) - m.extents[i].first_block == 1) {
            m.extents[i].location = layered::make_location(2, 0);
            break;
        }
    }
    expect_refused(layered::encode_manifest(m), "is marked a packed working set, but its slot 0 is referenced twice");
}

TEST_F(PackedManifest, PackedOrderNamingABlockTwiceIsRefused) {
    layered::Manifest m;
    ASSERT_EQ(layered::load_manifest(packed(), m), "");
    m.packed_order.push_back(m.packed_order.front());
    expect_refused(layered::encode_manifest(m), "packed order run " + std::to_string(m.packed_order.size() - 1) +
                                                    " names guest block " +
                                                    std::to_string(m.packed_order.front().first_block) + " twice");
}

TEST_F(PackedManifest, PackedOrderOutOfSlotOrderIsRefused) {
    layered::Manifest m;
    ASSERT_EQ(layered::load_manifest(packed(), m), "");
    // Two runs holding data swapped: the order no longer reads the layer front to back.
    std::vector<size_t> data_runs;
    for (size_t i = 0; i < m.packed_order.size(); i++) {
        const layered::Extent& e = m.extents[m.find_extent(m.packed_order[i].first_block)];
        if (!layered::is_zero_location(e.location)) data_runs.push_back(i);
    }
    ASSERT_GE(data_runs.size(), 2u);
    std::swap(m.packed_order[data_runs[0]], m.packed_order[data_runs[1]]);
    expect_refused(layered::encode_manifest(m), "(the packed layer is in touch order)");
}

TEST_F(PackedManifest, PackedOrderNamingABlockOfAnotherLayerIsRefused) {
    layered::Manifest m;
    ASSERT_EQ(layered::load_manifest(packed(), m), "");
    uint64_t other = m.block_count;
    for (uint64_t b = 0; b < m.block_count && other == m.block_count; b++) {
        const layered::Extent& e = m.extents[m.find_extent(b)];
        if (!layered::is_zero_location(e.location) && layered::location_layer(e.location) != 2) other = b;
    }
    ASSERT_LT(other, m.block_count);
    m.packed_order.push_back({other, 1});
    expect_refused(layered::encode_manifest(m), "names guest block " + std::to_string(other) +
                                                    ", which is not in the packed layer");
}

TEST_F(PackedManifest, PackedMarkerInAFramedManifestIsRefused) {
    Bytes m = read_file(packed());
    const uint32_t version = 2, frame_blocks = 512;
    std::memcpy(m.data() + 8, &version, 4);
    std::memcpy(m.data() + 100, &frame_blocks, 4);
    layered::reseal_manifest(m);
    expect_refused(m, "invalid header: a packed working-set layer needs format version 1");
}

TEST_F(PackedManifest, PackedMarkerWithOneLayerIsRefused) {
    layered::Manifest m;
    ASSERT_EQ(layered::load_manifest(packed(), m), "");
    Bytes bytes = layered::encode_manifest(m);
    const uint32_t one = 1;
    std::memcpy(bytes.data() + 40, &one, 4);
    layered::reseal_manifest(bytes);
    expect_refused(bytes, "invalid header: a packed working-set layer needs a layer before it");
}

}  // namespace
