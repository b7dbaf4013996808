// Pins every bad-input row of the layered format: each truncated, corrupt,
// missing, resized, swapped or inconsistent file is refused with one line
// naming the file (and the block, where there is one), never served; and
// decode_manifest (from bytes) answers exactly as load_manifest (from the file).
#include <xxhash.h>

#include <cinttypes>
#include <cstdio>

#include "snapshot/layered/format.hpp"
#include "snapshot_test_util.hpp"

namespace {

using namespace snaptest;
namespace layered = ringpager::layered;
constexpr uint64_t P = page_bytes;

std::string hex(uint64_t v) {
    char text[24];
    std::snprintf(text, sizeof text, "0x%016" PRIx64, v);
    return text;
}

// A base plus one sparse diff, built into `dir` as snap.rpm (two layers).
class BadInput : public ::testing::Test {
protected:
    void SetUp() override { make_snapshot(dir_, 21); }

    static void make_snapshot(const TempDir& dir, uint64_t seed) {
        Bytes memory(256 * P);
        PageGen gen(seed, 0.3, 0.1);
        gen.fill(memory, 0, 256);
        write_file(dir.file("base"), memory);
        auto changed = change_pages(memory, gen, 0.1);
        write_sparse_diff(dir.file("diff"), memory, changed);
        build(dir.file("base"), {dir.file("diff")}, dir.file("snap.rpm"));
    }

    std::string manifest() const { return dir_.file("snap.rpm"); }
    std::string layer(int i) const { return manifest() + ".layer" + std::to_string(i) + ".rpl"; }

    // Every way of opening the snapshot refuses it with one line containing
    // `file` and `cause`.
    void expect_refused(const std::string& file, const std::string& cause) {
        std::string error;
        EXPECT_EQ(ringpager::open_layered_source(manifest(), false, error), nullptr);
        expect_line(error, file, cause);
        ringpager::SnapshotVerifyReport report;
        EXPECT_FALSE(ringpager::verify_layered_snapshot(manifest(), report, error));
        expect_line(error, file, cause);
        EXPECT_EQ(report.bad_blocks, 0u);
        expect_decode_agrees();
    }

    // decode_manifest on the manifest's bytes says what load_manifest says.
    void expect_decode_agrees() const {
        layered::Manifest loaded, decoded;
        EXPECT_EQ(layered::decode_manifest(manifest_bytes(), manifest(), decoded),
                  layered::load_manifest(manifest(), loaded));
    }

    static void expect_line(const std::string& error, const std::string& file, const std::string& cause) {
        EXPECT_NE(error.find(file), std::string::npos) << error;
        EXPECT_NE(error.find(cause), std::string::npos) << error;
        EXPECT_EQ(error.find('\n'), std::string::npos) << error;
    }

    Bytes manifest_bytes() const { return read_file(manifest()); }
    void rewrite_manifest(const Bytes& bytes) const { write_file(manifest(), bytes); }

    // Offset of extent `i` in the manifest, given its layer count.
    uint64_t extent_offset(const Bytes& m, uint64_t i) const {
        uint32_t layers;
        std::memcpy(&layers, m.data() + 40, 4);
        return layered::header_bytes + layers * layered::layer_record_bytes + i * layered::extent_record_bytes;
    }

    TempDir dir_;
};

TEST_F(BadInput, DecodeManifestGivesWhatLoadManifestGives) {
    layered::Manifest loaded, decoded;
    ASSERT_EQ(layered::load_manifest(manifest(), loaded), "");
    ASSERT_EQ(layered::decode_manifest(manifest_bytes(), manifest(), decoded), "");
    EXPECT_EQ(decoded.path, loaded.path);
    EXPECT_EQ(decoded.directory, loaded.directory);
    EXPECT_EQ(decoded.block_count, loaded.block_count);
    EXPECT_EQ(decoded.guest_size_bytes, loaded.guest_size_bytes);
    EXPECT_EQ(decoded.snapshot_id, loaded.snapshot_id);
    ASSERT_EQ(decoded.layers.size(), 2u);
    for (size_t i = 0; i < decoded.layers.size(); i++) {
        EXPECT_EQ(decoded.layers[i].path, loaded.layers[i].path);
        EXPECT_EQ(decoded.layers[i].block_count, loaded.layers[i].block_count);
    }
    ASSERT_EQ(decoded.extents.size(), loaded.extents.size());
    for (size_t i = 0; i < decoded.extents.size(); i++) {
        EXPECT_EQ(decoded.extents[i].first_block, loaded.extents[i].first_block);
        EXPECT_EQ(decoded.extents[i].location, loaded.extents[i].location);
    }
    EXPECT_EQ(decoded.checksums, loaded.checksums);
    EXPECT_EQ(decoded.checksum_base, loaded.checksum_base);
    EXPECT_EQ(decoded.bucket_first_extent, loaded.bucket_first_extent);
}

TEST_F(BadInput, TruncatedManifestIsRefused) {
    Bytes m = manifest_bytes();
    m.resize(100);
    rewrite_manifest(m);
    expect_refused(manifest(), "truncated manifest (100 bytes");
}

TEST_F(BadInput, ManifestMissingItsLastTableBytesIsRefused) {
    Bytes m = manifest_bytes();
    m.resize(m.size() - 8);
    rewrite_manifest(m);
    expect_refused(manifest(), "truncated manifest");
}

TEST_F(BadInput, ManifestWithTrailingBytesIsRefused) {
    Bytes m = manifest_bytes();
    m.resize(m.size() + 16);
    rewrite_manifest(m);
    expect_refused(manifest(), "16 trailing bytes");
}

TEST_F(BadInput, WrongMagicIsRefused) {
    Bytes m = manifest_bytes();
    m[3] ^= std::byte{0x20};
    rewrite_manifest(m);
    expect_refused(manifest(), "wrong magic");
}

TEST_F(BadInput, UnsupportedVersionIsRefused) {
    Bytes m = manifest_bytes();
    uint32_t version = 7;
    std::memcpy(m.data() + 8, &version, 4);
    rewrite_manifest(m);
    expect_refused(manifest(), "unsupported manifest version 7");
}

TEST_F(BadInput, HeaderChecksumMismatchIsRefused) {
    Bytes m = manifest_bytes();
    m[25] ^= std::byte{0x01};   // inside guest_size_bytes
    rewrite_manifest(m);
    expect_refused(manifest(), "header checksum mismatch");
}

TEST_F(BadInput, BlockTableChecksumMismatchIsRefused) {
    Bytes m = manifest_bytes();
    m[extent_offset(m, 1) + 2] ^= std::byte{0x10};
    rewrite_manifest(m);
    expect_refused(manifest(), "block table checksum mismatch");
}

TEST_F(BadInput, CorruptBlockChecksumListIsRefused) {
    Bytes m = manifest_bytes();
    m.back() ^= std::byte{0x01};   // last stored block's checksum
    rewrite_manifest(m);
    expect_refused(manifest(), "block table checksum mismatch");
}

TEST_F(BadInput, MissingLayerFileIsRefused) {
    ASSERT_EQ(::unlink(layer(1).c_str()), 0);
    expect_refused(layer(1), "No such file or directory");
}

TEST_F(BadInput, GrownLayerFileIsRefused) {
    uint64_t size = file_size(layer(0));
    ASSERT_EQ(::truncate(layer(0).c_str(), static_cast<off_t>(size + P)), 0);
    expect_refused(layer(0), "resized or truncated");
}

TEST_F(BadInput, TruncatedLayerFileIsRefused) {
    uint64_t size = file_size(layer(1));
    ASSERT_EQ(::truncate(layer(1).c_str(), static_cast<off_t>(size - 1)), 0);
    expect_refused(layer(1), "resized or truncated");
}

TEST_F(BadInput, SwappedLayerFromAnIdenticalBuildIsRefused) {
    // Same inputs, same sizes, same bytes: only the layer identity differs.
    TempDir other;
    make_snapshot(other, 21);
    std::string twin = other.file("snap.rpm.layer0.rpl");
    ASSERT_EQ(file_size(twin), file_size(layer(0)));
    ASSERT_EQ(::rename(twin.c_str(), layer(0).c_str()), 0);
    expect_refused(layer(0), "identity mismatch");
}

TEST_F(BadInput, LayersSwappedWithEachOtherAreRefused) {
    std::string tmp = dir_.file("tmp");
    ASSERT_EQ(::rename(layer(0).c_str(), tmp.c_str()), 0);
    ASSERT_EQ(::rename(layer(1).c_str(), layer(0).c_str()), 0);
    ASSERT_EQ(::rename(tmp.c_str(), layer(1).c_str()), 0);
    expect_refused(layer(0), "layer 0 file");
}

TEST_F(BadInput, CorruptLayerHeaderIsRefused) {
    auto f = ringpager::FileDesc::open(layer(1).c_str(), O_RDWR);
    ASSERT_TRUE(f.ok());
    std::byte b{0x5a};
    ASSERT_EQ(::pwrite(f->get(), &b, 1, 60), 1);   // inside block_count
    expect_refused(layer(1), "layer header checksum mismatch");
}

TEST_F(BadInput, LayerWithoutALayerMagicIsRefused) {
    auto f = ringpager::FileDesc::open(layer(0).c_str(), O_RDWR);
    ASSERT_TRUE(f.ok());
    ASSERT_EQ(::pwrite(f->get(), "NOTALAYR", 8, 0), 8);
    expect_refused(layer(0), "not a ringpager layer file (wrong magic)");
}

TEST_F(BadInput, ExtentPointingPastItsLayersEndIsRefusedEvenWhenSealed) {
    std::string error;
    layered::Manifest m;
    ASSERT_EQ(layered::load_manifest(manifest(), m), "");
    size_t data_extent = 0;
    while (layered::is_zero_location(m.extents[data_extent].location)) ++data_extent;
    uint32_t layer_index = layered::location_layer(m.extents[data_extent].location);
    uint64_t past_end = m.layers[layer_index].block_count;
    Bytes bytes = manifest_bytes();
    uint64_t location = layered::make_location(layer_index, past_end);
    std::memcpy(bytes.data() + extent_offset(bytes, data_extent) + 8, &location, 8);
    layered::reseal_manifest(bytes);
    rewrite_manifest(bytes);
    expect_refused(manifest(), "points past the end of layer " + std::to_string(layer_index));
}

TEST_F(BadInput, LayerPathBytesAreEscapedInTheRefusal) {
    Bytes bytes = manifest_bytes();
    const char path[] = "/x\n\x1b[2J";   // absolute, with a newline and a terminal escape
    std::memcpy(bytes.data() + layered::header_bytes + 64, path, sizeof path);
    layered::reseal_manifest(bytes);
    rewrite_manifest(bytes);
    expect_refused(manifest(), "layer 0 record: path '/x\\x0a\\x1b[2J' is not relative");
}

TEST_F(BadInput, LayerPathWithAControlCharacterIsRefusedEvenWhenSealed) {
    // Every message naming the layer file would carry the newline and forge a log line.
    Bytes bytes = manifest_bytes();
    const char path[] = "a\nringpager error: forged";
    std::memcpy(bytes.data() + layered::header_bytes + 64, path, sizeof path);
    layered::reseal_manifest(bytes);
    rewrite_manifest(bytes);
    expect_refused(manifest(), "layer 0 record: path 'a\\x0aringpager error: forged' holds a control character");
}

TEST_F(BadInput, ManifestNameWithAControlCharacterIsRefusedByTheBuilder) {
    ringpager::SnapshotBuildOptions options;
    options.base_path = dir_.file("base");
    options.manifest_path = dir_.file("snap\x1b.rpm");
    options.sync = false;
    ringpager::SnapshotBuildReport report;
    std::string error;
    EXPECT_FALSE(ringpager::build_layered_snapshot(options, report, error));
    EXPECT_EQ(error, dir_.file("snap\\x1b.rpm") + ": file name holds a control character");
}

TEST_F(BadInput, LayerClaimingMoreBlocksThanTheChecksumTableIsRefusedEvenWhenSealed) {
    // Its checksum slice would run past the table: refused before it is hashed.
    Bytes bytes = manifest_bytes();
    uint64_t stored = 0, data_offset = 0;
    std::memcpy(&stored, bytes.data() + 56, 8);
    std::memcpy(&data_offset, bytes.data() + layered::header_bytes + 32, 8);
    const uint64_t claimed = stored + (uint64_t{1} << 30);
    const uint64_t file_size = data_offset + claimed * P;
    std::memcpy(bytes.data() + layered::header_bytes + 24, &claimed, 8);
    std::memcpy(bytes.data() + layered::header_bytes + 16, &file_size, 8);
    layered::reseal_manifest(bytes);
    rewrite_manifest(bytes);
    expect_refused(manifest(), "layer 0 record: " + std::to_string(claimed) + " blocks, but the checksum table has " +
                                   std::to_string(stored) + " left");
}

TEST_F(BadInput, ExtentNamingAMissingLayerIsRefusedEvenWhenSealed) {
    layered::Manifest m;
    ASSERT_EQ(layered::load_manifest(manifest(), m), "");
    size_t data_extent = 0;
    while (layered::is_zero_location(m.extents[data_extent].location)) ++data_extent;
    Bytes bytes = manifest_bytes();
    uint64_t location = layered::make_location(9, 0);
    std::memcpy(bytes.data() + extent_offset(bytes, data_extent) + 8, &location, 8);
    layered::reseal_manifest(bytes);
    rewrite_manifest(bytes);
    expect_refused(manifest(), "names layer 9, which does not exist");
}

TEST_F(BadInput, FlippedBitInAStoredBlockIsCaughtByVerifyAndBySourceVerify) {
    std::string error;
    auto intact = ringpager::open_layered_source(manifest(), true, error);
    ASSERT_TRUE(intact) << error;
    // The lowest guest page served from layer 0's slot 5.
    const uint64_t slot = 5, file_offset = P + slot * P;
    uint64_t guest = UINT64_MAX;
    for (uint64_t off = 0; off < intact->size_bytes() && guest == UINT64_MAX; off += P) {
        auto e = intact->lookup(off, P);
        if (e.kind == ringpager::SourceExtent::Kind::data && e.file_index == 0 && e.file_offset == file_offset) guest = off;
    }
    ASSERT_NE(guest, UINT64_MAX);
    Bytes page(P);
    ASSERT_EQ(::pread(intact->file_fds()[0], page.data(), P, static_cast<off_t>(file_offset)), static_cast<ssize_t>(P));
    EXPECT_EQ(intact->verify(guest, page), "");
    intact.reset();
    const uint64_t good_hash = XXH3_64bits(page.data(), P);

    auto f = ringpager::FileDesc::open(layer(0).c_str(), O_RDWR);
    ASSERT_TRUE(f.ok());
    page[1234] ^= std::byte{0x04};
    const uint64_t bad_hash = XXH3_64bits(page.data(), P);
    ASSERT_EQ(::pwrite(f->get(), page.data(), P, static_cast<off_t>(file_offset)), static_cast<ssize_t>(P));

    ringpager::SnapshotVerifyReport report;
    EXPECT_FALSE(ringpager::verify_layered_snapshot(manifest(), report, error));
    EXPECT_EQ(report.bad_blocks, 1u);
    EXPECT_GT(report.blocks_checked, 100u);
    const std::string mismatch = "checksum mismatch (stored " + hex(good_hash) + ", read " + hex(bad_hash) + ")";
    expect_line(error, layer(0),
                "block at guest offset " + hex(guest) + " (file offset " + hex(file_offset) + "): " + mismatch);

    // The Source still opens (blocks are checked on read, not at open) and
    // verify() names the block.
    auto source = ringpager::open_layered_source(manifest(), true, error);
    ASSERT_TRUE(source) << error;
    std::string message = source->verify(guest, page);
    expect_line(message, layer(0), "block at guest offset " + hex(guest));
    EXPECT_NE(message.find(mismatch), std::string::npos) << message;
}

TEST_F(BadInput, NonZeroBytesForAZeroBlockFailSourceVerify) {
    std::string error;
    auto source = ringpager::open_layered_source(manifest(), true, error);
    ASSERT_TRUE(source) << error;
    uint64_t zero_offset = UINT64_MAX;
    for (uint64_t off = 0; off < source->size_bytes() && zero_offset == UINT64_MAX; off += P) {
        if (source->lookup(off, P).kind == ringpager::SourceExtent::Kind::zero) zero_offset = off;
    }
    ASSERT_NE(zero_offset, UINT64_MAX);
    Bytes page(P);
    EXPECT_EQ(source->verify(zero_offset, page), "");
    page[7] = std::byte{1};
    expect_line(source->verify(zero_offset, page), manifest(), "expected a zero block");
    expect_line(source->verify(zero_offset + 1, page), manifest(), "not block aligned");
}

// ---- build inputs ----------------------------------------------------------

class BadBuildInput : public ::testing::Test {
protected:
    std::string build_error(const std::string& base, const std::vector<std::string>& diffs,
                            uint64_t block_size = 4096) {
        ringpager::SnapshotBuildOptions options;
        options.base_path = base;
        options.diff_paths = diffs;
        options.manifest_path = dir_.file("snap.rpm");
        options.block_size_bytes = block_size;
        ringpager::SnapshotBuildReport report;
        std::string error;
        EXPECT_FALSE(ringpager::build_layered_snapshot(options, report, error));
        EXPECT_EQ(error.find('\n'), std::string::npos) << error;
        // A failed build leaves nothing behind.
        for (const auto& entry : std::filesystem::directory_iterator(dir_.path())) {
            EXPECT_EQ(entry.path().filename().string().find("snap.rpm"), std::string::npos) << entry.path();
        }
        return error;
    }

    void SetUp() override {
        Bytes memory(64 * P);
        PageGen gen(31, 0.2, 0.1);
        gen.fill(memory, 0, 64);
        write_file(dir_.file("base"), memory);
    }

    TempDir dir_;
};

TEST_F(BadBuildInput, DiffLargerThanTheBaseIsNamed) {
    Bytes big(65 * P);
    write_file(dir_.file("big"), big);
    std::string e = build_error(dir_.file("base"), {dir_.file("big")});
    EXPECT_NE(e.find("diff 1 " + dir_.file("big") + ": size 266240 bytes differs from the base's 262144"),
              std::string::npos) << e;
}

TEST_F(BadBuildInput, DiffSmallerThanTheBaseIsNamed) {
    Bytes small(16 * P);
    write_file(dir_.file("small"), small);
    std::string e = build_error(dir_.file("base"), {dir_.file("base"), dir_.file("small")});
    EXPECT_NE(e.find("diff 2 " + dir_.file("small") + ": size"), std::string::npos) << e;
}

TEST_F(BadBuildInput, MissingBaseIsNamed) {
    std::string e = build_error(dir_.file("nope"), {});
    EXPECT_NE(e.find("base " + dir_.file("nope") + ": open: No such file or directory"), std::string::npos) << e;
}

TEST_F(BadBuildInput, BaseThatIsNotWholeHugeBlocksIsNamed) {
    std::string e = build_error(dir_.file("base"), {}, 2 << 20);
    EXPECT_NE(e.find("is not a multiple of the block size (2 MiB)"), std::string::npos) << e;
}

TEST_F(BadBuildInput, OutputThatIsAnInputIsRefused) {
    ringpager::SnapshotBuildOptions options;
    options.base_path = dir_.file("base");
    options.manifest_path = dir_.file("base");
    ringpager::SnapshotBuildReport report;
    std::string error;
    EXPECT_FALSE(ringpager::build_layered_snapshot(options, report, error));
    EXPECT_NE(error.find("choose another --out"), std::string::npos) << error;
    EXPECT_EQ(file_size(dir_.file("base")), 64 * P);
}

TEST_F(BadBuildInput, UnwritableOutputDirectoryIsNamed) {
    ringpager::SnapshotBuildOptions options;
    options.base_path = dir_.file("base");
    options.manifest_path = dir_.file("no/such/dir/snap.rpm");
    ringpager::SnapshotBuildReport report;
    std::string error;
    EXPECT_FALSE(ringpager::build_layered_snapshot(options, report, error));
    EXPECT_NE(error.find(dir_.file("no/such/dir/snap.rpm")), std::string::npos) << error;
    EXPECT_NE(error.find("No such file or directory"), std::string::npos) << error;
}

}  // namespace
