// Pins `ringpager snapshot push|ls|inspect` against the real store (the CLI
// runs in-process through snapshot_main): a 3-layer chain lands as
// content-addressed layers plus its manifest, byte for byte; ls and inspect
// read it back from the bucket; a second snapshot sharing the base uploads
// only its new layer; a multipart layer round-trips; a bad manifest, a layer
// changed on disk, an unreachable endpoint and bad URLs end in one line.
#include <xxhash.h>

#include <condition_variable>
#include <mutex>

#include <nlohmann/json.hpp>

#include "remote/snapshot_store.hpp"
#include "snapshot/layered/file_io.hpp"
#include "snapshot/layered/format.hpp"
#include "snapshot/snapshot_cli.hpp"
#include "snapshot/snapshot_test_util.hpp"
#include "test_util.hpp"

namespace {

using namespace ringpager::remote;
using namespace rgwtest;
namespace layered = ringpager::layered;
using snaptest::PageGen;
constexpr uint64_t P = snaptest::page_bytes;

using snaptest::CliRun;
CliRun run(std::vector<std::string> args) { return snaptest::run_snapshot(std::move(args)); }

// A copy of `manifest_a`'s snapshot with one more layer, as a diff built on
// top of it would be: the same snapshot id and layers 0..N-1 untouched, and
// its first `pages` guest blocks now served from a new layer N.
void extend_snapshot(const std::string& manifest_a, const std::string& manifest_b, uint64_t pages, uint64_t seed) {
    layered::Manifest m;
    ASSERT_EQ(layered::load_manifest(manifest_a, m), "");
    const auto index = static_cast<uint32_t>(m.layers.size());
    Bytes blocks = random_bytes(pages * P, seed);
    std::vector<uint64_t> sums;
    for (uint64_t i = 0; i < pages; ++i) sums.push_back(XXH3_64bits(blocks.data() + i * P, P));
    layered::LayerRecord rec;
    Bytes id = random_bytes(16, seed + 1);
    std::memcpy(rec.id.data(), id.data(), 16);
    rec.block_count = pages;
    rec.data_offset_bytes = layered::layer_data_offset(P);
    rec.file_size_bytes = rec.data_offset_bytes + pages * P;
    rec.checksums_xxh3 = XXH3_64bits(sums.data(), sums.size() * 8);
    rec.path = manifest_b.substr(manifest_b.rfind('/') + 1) + ".layer" + std::to_string(index) + ".rpl";
    auto header = layered::encode_layer_header({rec.id, m.snapshot_id, index, P, pages, rec.data_offset_bytes,
                                                rec.checksums_xxh3});
    Bytes file(rec.data_offset_bytes);
    std::memcpy(file.data(), header.data(), header.size());
    file.insert(file.end(), blocks.begin(), blocks.end());
    snaptest::write_file(manifest_b + ".layer" + std::to_string(index) + ".rpl", file);

    std::vector<uint64_t> map(m.block_count);   // every guest block's location, then re-run-length encoded
    for (size_t e = 0; e < m.extents.size(); ++e) {
        const auto& x = m.extents[e];
        for (uint64_t b = x.first_block; b < m.extent_end_block(e); ++b) {
            map[b] = layered::is_zero_location(x.location) ? x.location : x.location + (b - x.first_block);
        }
    }
    for (uint64_t b = 0; b < pages; ++b) map[b] = layered::make_location(index, b);
    m.extents.clear();
    for (uint64_t b = 0; b < map.size(); ++b) {
        bool continues = b > 0 && (layered::is_zero_location(map[b]) ? layered::is_zero_location(map[b - 1])
                                                                       : !layered::is_zero_location(map[b - 1]) &&
                                                                             map[b] == map[b - 1] + 1);
        if (!continues) m.extents.push_back({b, map[b]});
    }
    m.layers.push_back(rec);
    m.checksums.insert(m.checksums.end(), sums.begin(), sums.end());
    snaptest::write_file(manifest_b, layered::encode_manifest(m));
}

class SnapshotPushTest : public BucketFixture {
protected:
    // A 3-layer chain: a 2 MiB base and two diffs (format version 2 with `frames`).
    void build_chain(std::optional<ringpager::FrameOptions> frames = std::nullopt) {
        Bytes memory(512 * P);
        PageGen gen(41, 0.6, 0.1);
        gen.fill(memory, 0, 512);
        snaptest::write_file(dir_.file("base"), memory);
        snaptest::write_sparse_diff(dir_.file("diff1"), memory, snaptest::change_pages(memory, gen, 0.1));
        snaptest::write_sparse_diff(dir_.file("diff2"), memory, snaptest::change_pages(memory, gen, 0.1));
        ringpager::SnapshotBuildOptions options;
        options.base_path = dir_.file("base");
        options.diff_paths = {dir_.file("diff1"), dir_.file("diff2")};
        options.manifest_path = manifest();
        options.sync = false;
        options.frames = frames;
        ringpager::SnapshotBuildReport report;
        std::string error;
        ASSERT_TRUE(ringpager::build_layered_snapshot(options, report, error)) << error;
        ASSERT_EQ(layered::load_manifest(manifest(), m_), "");
    }
    std::string manifest() const { return dir_.file("snap.rpm"); }
    std::string url(const std::string& name) const { return "s3://" + bucket + "/" + name; }
    std::vector<std::string> keys() {
        auto listed = client->list(bucket, "", 1000);
        EXPECT_TRUE(listed) << listed.error().message;
        std::vector<std::string> out;
        if (listed) {
            for (auto& o : *listed) out.push_back(o.key);
        }
        return out;
    }
    std::string object_hash(const std::string& key) {
        auto bytes = client->get(at(key), 1 << 30);
        EXPECT_TRUE(bytes) << bytes.error().message;
        return bytes ? hash(*bytes) : "missing";
    }
    std::string file_hash(const std::string& path) { return hash(snaptest::read_file(path)); }

    snaptest::TempDir dir_;
    layered::Manifest m_;
};

TEST_F(SnapshotPushTest, AChainLandsAsContentAddressedLayersAndItsManifest) {
    build_chain();
    CliRun r = run({"push", manifest(), url("vm/gen1")});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.err, "");   // stderr is not a terminal: no progress line
    EXPECT_EQ(r.out.substr(0, r.out.find('\n')),
              "pushed " + manifest() + " to " + url("vm/gen1") + ": 3 layers uploaded, 0 already in the bucket");

    std::vector<std::string> want;
    for (const auto& layer : m_.layers) want.push_back(layer_key(layer.id));
    std::sort(want.begin(), want.end());
    want.push_back("vm/gen1");
    EXPECT_EQ(keys(), want);
    EXPECT_EQ(object_hash("vm/gen1"), file_hash(manifest()));
    for (uint32_t i = 0; i < 3; ++i) {
        EXPECT_EQ(object_hash(layer_key(m_.layers[i].id)), file_hash(m_.layer_path(i))) << "layer " << i;
    }

    CliRun ls = run({"ls", "s3://" + bucket});
    ASSERT_EQ(ls.code, 0) << ls.err;
    auto info = client->head(at("vm/gen1"));
    ASSERT_TRUE(info);
    std::string first = ls.out.substr(0, ls.out.find('\n'));
    EXPECT_EQ(first.substr(0, first.rfind("  ")), url("vm/gen1") + "  2 MiB guest  4 KiB blocks  3 layers  manifest " +
                                                      layered::format_bytes(snaptest::file_size(manifest())));
    EXPECT_EQ(ls.out.substr(ls.out.find('\n') + 1), "1 snapshot(s)\n");

    // inspect from the bucket prints what the local inspect prints, but for where the manifest is.
    CliRun local = run({"inspect", manifest()});
    CliRun remote = run({"inspect", url("vm/gen1")});
    ASSERT_EQ(remote.code, 0) << remote.err;
    auto body = [](const std::string& out) { return out.substr(out.find('\n')); };
    EXPECT_EQ(body(remote.out), body(local.out));
    EXPECT_EQ(remote.out.substr(0, remote.out.find('\n')),
              "manifest     " + url("vm/gen1") + " (" + layered::format_bytes(snaptest::file_size(manifest())) +
                  ", format version 1)");
    CliRun json = run({"inspect", url("vm/gen1"), "--json"});
    ASSERT_EQ(json.code, 0) << json.err;
    auto j = nlohmann::json::parse(json.out);
    EXPECT_EQ(j["ok"], true);
    EXPECT_EQ(j["layers"][2]["resolved_path"], url(layer_key(m_.layers[2].id)));
}

TEST_F(SnapshotPushTest, ACompressedChainIsCheckedFrameByFrameAndLandsByteForByte) {
    ringpager::FrameOptions frames;
    frames.codec = ringpager::FrameCodec::zstd;
    frames.frame_bytes = 64 << 10;
    build_chain(frames);
    ASSERT_GT(m_.frames.size(), 3u);
    PushReport report;
    ASSERT_EQ(push_snapshot(*client, manifest(), at("z"), {}, report), "");
    EXPECT_EQ(report.layers_uploaded, 3u);
    EXPECT_EQ(report.blocks_verified, m_.checksums.size());
    for (uint32_t i = 0; i < 3; ++i) {
        EXPECT_EQ(object_hash(layer_key(m_.layers[i].id)), file_hash(m_.layer_path(i))) << "layer " << i;
    }
    CliRun local = run({"inspect", manifest()});
    CliRun remote = run({"inspect", url("z")});
    ASSERT_EQ(remote.code, 0) << remote.err;
    EXPECT_NE(remote.out.find("frames       zstd level 1, 64 KiB frames: "), std::string::npos) << remote.out;
    EXPECT_EQ(remote.out.substr(remote.out.find('\n')), local.out.substr(local.out.find('\n')));

    // A frame changed on disk after the build: nothing of its layer goes up.
    const layered::FrameRecord frame = m_.frames[m_.frame_base[1] + 1];
    Bytes layer = snaptest::read_file(m_.layer_path(1));
    layer[frame.offset + 3] ^= std::byte{0x40};
    snaptest::write_file(m_.layer_path(1), layer);
    ASSERT_TRUE(client->remove(at(layer_key(m_.layers[1].id))));
    const std::string error = push_snapshot(*client, manifest(), at("z2"), {}, report);
    EXPECT_EQ(error.rfind("layer " + m_.layer_path(1) + " frame 1 (file offset " + layered::hex64(frame.offset) +
                              "): checksum mismatch (stored " + layered::hex64(frame.checksum) + ", read ",
                          0),
              0u)
        << error;
    EXPECT_NE(error.find("): the file changed since it was built; nothing of it was pushed"), std::string::npos) << error;
    EXPECT_FALSE(client->head(at(layer_key(m_.layers[1].id))));
}

TEST_F(SnapshotPushTest, ASnapshotSharingTheBaseUploadsOnlyItsNewLayer) {
    build_chain();
    PushReport report;
    ASSERT_EQ(push_snapshot(*client, manifest(), at("vm/gen1"), {}, report), "");
    EXPECT_EQ(report.layers_uploaded, 3u);

    extend_snapshot(manifest(), dir_.file("next.rpm"), 20, 99);
    auto fresh = S3Client::create(rgw().config());
    ASSERT_TRUE(fresh);
    ASSERT_EQ(push_snapshot(**fresh, dir_.file("next.rpm"), at("vm/gen2"), {}, report), "");
    EXPECT_EQ(report.layers_uploaded, 1u);
    EXPECT_EQ(report.layers_present, 3u);
    EXPECT_EQ(report.blocks_verified, 20u);
    EXPECT_EQ((*fresh)->stats().puts, 2u);   // the new layer and the manifest

    // Pushing the same snapshot under another name sends the manifest alone.
    auto again = S3Client::create(rgw().config());
    ASSERT_TRUE(again);
    ASSERT_EQ(push_snapshot(**again, manifest(), at("vm/gen1-copy"), {}, report), "");
    EXPECT_EQ(report.layers_uploaded, 0u);
    EXPECT_EQ((*again)->stats().puts, 1u);
    EXPECT_EQ(keys().size(), 4u + 3u);   // four layers, three manifests

    CliRun inspect = run({"inspect", url("vm/gen2"), "--json"});
    ASSERT_EQ(inspect.code, 0) << inspect.err;
    auto j = nlohmann::json::parse(inspect.out);
    ASSERT_EQ(j["layers"].size(), 4u);
    EXPECT_EQ(j["layers"][3]["referenced_blocks"], 20);
}

TEST_F(SnapshotPushTest, ALargeLayerGoesUpInPartsByteForByte) {
    Bytes memory = random_bytes(12 << 20, 8);   // no zero pages: a 12 MiB layer
    snaptest::write_file(dir_.file("base"), memory);
    snaptest::build(dir_.file("base"), {}, manifest());
    ASSERT_EQ(layered::load_manifest(manifest(), m_), "");
    PushOptions options;
    options.multipart_threshold_bytes = 5 << 20;
    options.part_bytes = 5 << 20;
    std::vector<uint64_t> progress;
    options.progress = [&](uint64_t done, uint64_t total) {
        EXPECT_LE(done, total);
        progress.push_back(done);
    };
    PushReport report;
    ASSERT_EQ(push_snapshot(*client, manifest(), at("big"), options, report), "");
    EXPECT_EQ(report.blocks_verified, 3072u);
    const std::string key = layer_key(m_.layers[0].id);
    EXPECT_EQ(object_hash(key), file_hash(m_.layer_path(0)));
    auto info = client->head(at(key));
    ASSERT_TRUE(info);
    EXPECT_NE(info->etag.find("-3"), std::string::npos) << info->etag;   // three parts
    ASSERT_EQ(progress.size(), 4u);   // three parts, then the manifest
    EXPECT_EQ(progress.back(), m_.layers[0].file_size_bytes + snaptest::file_size(manifest()));
}

TEST_F(SnapshotPushTest, PartsGoUpSeveralAtOnce) {
    Bytes memory = random_bytes(12 << 20, 9);   // a 12 MiB layer: three parts of 5 MiB or less
    snaptest::write_file(dir_.file("base"), memory);
    snaptest::build(dir_.file("base"), {}, manifest());
    ASSERT_EQ(layered::load_manifest(manifest(), m_), "");
    PushOptions options;
    options.multipart_threshold_bytes = 5 << 20;
    options.part_bytes = 5 << 20;
    options.parallel_parts = 2;
    // Each uploader waits (up to kWait) until two parts are being sent at
    // once: with one part at a time the first would wait alone.
    std::mutex mu;
    std::condition_variable both;
    unsigned arrived = 0;
    bool overlapped = false;
    options.before_part = [&](uint32_t) {
        std::unique_lock lock(mu);
        if (++arrived >= 2) overlapped = true;
        both.notify_all();
        both.wait_for(lock, std::chrono::seconds(30), [&] { return arrived >= 2; });
    };
    PushReport report;
    ASSERT_EQ(push_snapshot(*client, manifest(), at("parallel"), options, report), "");
    EXPECT_TRUE(overlapped);
    EXPECT_EQ(report.parts_uploaded, 3u);
    const std::string key = layer_key(m_.layers[0].id);
    EXPECT_EQ(object_hash(key), file_hash(m_.layer_path(0)));   // the parts in their order
}

TEST_F(SnapshotPushTest, ABadManifestIsRefusedWithOneLineAndNothingIsSent) {
    build_chain();
    Bytes bytes = snaptest::read_file(manifest());
    bytes[50] ^= std::byte{1};
    snaptest::write_file(manifest(), bytes);
    layered::Manifest m;
    std::string cause = layered::load_manifest(manifest(), m);
    ASSERT_NE(cause, "");
    CliRun r = run({"push", manifest(), url("vm/bad")});
    EXPECT_EQ(r.code, 1);
    EXPECT_EQ(r.err, "ringpager snapshot push: " + cause + "\n");
    EXPECT_EQ(r.out, "");
    EXPECT_TRUE(keys().empty());
}

TEST_F(SnapshotPushTest, ALayerChangedOnDiskIsNeverPushed) {
    build_chain();
    const std::string layer = m_.layer_path(1);
    Bytes bytes = snaptest::read_file(layer);
    bytes[m_.layers[1].data_offset_bytes + 7] ^= std::byte{0x80};   // slot 0 of layer 1
    snaptest::write_file(layer, bytes);
    CliRun r = run({"push", manifest(), url("vm/changed")});
    EXPECT_EQ(r.code, 1);
    uint64_t stored = m_.block_checksum(1, 0);
    uint64_t read = XXH3_64bits(bytes.data() + m_.layers[1].data_offset_bytes, P);
    EXPECT_EQ(r.err, "ringpager snapshot push: layer " + layer + " slot 0 (file offset 0x0000000000001000): checksum "
                     "mismatch (stored " + layered::hex64(stored) + ", read " + layered::hex64(read) +
                     "): the file changed since it was built; nothing of it was pushed\n");
    for (const auto& key : keys()) {   // layer 0 may have gone up; layer 1 and the manifest did not
        EXPECT_NE(key, layer_key(m_.layers[1].id));
        EXPECT_NE(key, "vm/changed");
    }
}

// Points the CLI at another endpoint for one test and restores the suite's store after.
class EndpointOverride {
public:
    explicit EndpointOverride(const std::string& endpoint) { ::setenv("AWS_ENDPOINT_URL", endpoint.c_str(), 1); }
    ~EndpointOverride() { ::setenv("AWS_ENDPOINT_URL", rgw().endpoint.c_str(), 1); }
};

TEST_F(SnapshotPushTest, AnUnreachableEndpointIsOneLineAndExitOne) {
    build_chain();
    std::string error;
    auto proxy = FaultProxy::start(port_of(rgw().endpoint), error);
    ASSERT_TRUE(proxy) << error;
    proxy->go_away();   // a port known to refuse connections
    EndpointOverride endpoint(proxy->endpoint());
    CliRun r = run({"push", manifest(), url("vm/x")});
    EXPECT_EQ(r.code, 1);
    EXPECT_EQ(mask_ms(r.err), "ringpager snapshot push: " + url(layer_key(m_.layers[0].id)) + ": cannot connect to " +
                                  proxy->endpoint() + " (Failed to connect to 127.0.0.1 port " +
                                  std::to_string(proxy->port()) + " after N ms: Couldn't connect to server): check "
                                  "AWS_ENDPOINT_URL and that the store is running; gave up after 5 attempts in N ms\n");
}

TEST_F(SnapshotPushTest, BadUrlsAreUsageErrorsAndMissingObjectsRuntimeErrors) {
    build_chain();
    CliRun r = run({"push", manifest(), "s3://" + bucket});
    EXPECT_EQ(r.code, 2);
    EXPECT_EQ(r.err, "ringpager snapshot push: 's3://" + bucket + "' is not an s3://BUCKET/NAME URL: no object name "
                     "after the bucket\n");
    r = run({"push", manifest(), url("layers/mine")});
    EXPECT_EQ(r.code, 1);
    EXPECT_EQ(r.err, "ringpager snapshot push: " + url("layers/mine") + ": names under layers/ hold layers; choose "
                     "another name\n");
    r = run({"ls", "http://x/y"});
    EXPECT_EQ(r.code, 2);
    r = run({"inspect", url("nothing/here")});
    EXPECT_EQ(r.code, 1);
    EXPECT_EQ(r.err, "ringpager snapshot inspect: " + url("nothing/here") + ": not found at " + rgw().endpoint +
                         " (404): check the bucket name, the object name and AWS_ENDPOINT_URL\n");
}

TEST_F(SnapshotPushTest, InspectNamesAMissingLayerAndLsSkipsWhatIsNotAManifest) {
    build_chain();
    ASSERT_EQ(run({"push", manifest(), url("vm/gen1")}).code, 0);
    ASSERT_TRUE(client->put(at("notes.txt"), random_bytes(300, 1)));
    ASSERT_TRUE(client->remove(at(layer_key(m_.layers[2].id))));
    CliRun r = run({"inspect", url("vm/gen1")});
    EXPECT_EQ(r.code, 1);
    const std::string missing = url(layer_key(m_.layers[2].id));
    EXPECT_EQ(r.err, "ringpager snapshot inspect: " + missing + ": not found at " + rgw().endpoint +
                         " (404): check the bucket name, the object name and AWS_ENDPOINT_URL\n");
    CliRun ls = run({"ls", "s3://" + bucket + "/"});
    ASSERT_EQ(ls.code, 0) << ls.err;
    EXPECT_EQ(ls.out.substr(ls.out.find('\n') + 1), "1 snapshot(s), 1 other object(s) that are not manifests\n");
    CliRun none = run({"ls", "s3://" + bucket + "/other/"});
    EXPECT_EQ(none.out, "0 snapshot(s)\n");
}

}  // namespace
