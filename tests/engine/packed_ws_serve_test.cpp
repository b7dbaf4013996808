// Pins serving a snapshot with a packed working-set layer (`snapshot pack-ws`)
// in prefetch mode: with no working-set file given, the packed layer is
// replayed first, in a few large gather reads of that layer in file (touch)
// order, byte exact, with the faults it saved reported; a flipped bit in the
// packed layer is caught by the gather read's check; a working set
// recorded against the plain snapshot replays against the packed one and
// the other way round.
#include <gtest/gtest.h>

#include <algorithm>
#include <mutex>

#include "common/engine_fixture.hpp"
#include "common/process.hpp"
#include "layered_chain.hpp"
#include "reactor/test_hooks.hpp"
#include "ringpager/snapshot.hpp"
#include "snapshot/working_set.hpp"

using namespace ringpager;
using namespace ringpager::testing;

namespace {

constexpr uint64_t MiB = 1024 * 1024;
constexpr uint64_t kGuest = 8 * MiB;

struct Packed {
    Chain chain;
    std::vector<uint64_t> touch;   // the set's pages, in touch order
    std::string set_path;
    std::string manifest;          // the packed manifest
    PackWorkingSetReport report;
};

// A three-layer chain, a working set of 10% of its pages in a random order
// written against it, and that set packed beside it.
Packed make_packed(const TempDir& dir, uint64_t seed) {
    Packed p;
    p.chain = build_chain(dir, kGuest, 4096);
    p.touch = sim::plan_pages(sim::Pattern::random, kGuest / 4096, 0.1, seed);
    std::string error;
    auto source = open_layered_source(p.chain.manifest, false, error);
    EXPECT_NE(source, nullptr) << error;
    WorkingSet set;
    EXPECT_TRUE(snapshot_identity(*source, set.identity, error)) << error;
    set.runs = runs_from_pages(p.touch);
    p.set_path = dir.file("set.ws");
    EXPECT_TRUE(write_working_set_file(p.set_path, set, error)) << error;
    p.manifest = dir.file("packed.rpm");
    EXPECT_TRUE(pack_working_set({p.chain.manifest, p.set_path, p.manifest, false}, p.report, error)) << error;
    return p;
}

struct Served {
    VmReport report;
    std::vector<uint64_t> installs;   // first page of each install, in order
};

// Serves `manifest` in prefetch mode (optionally replaying `set`) to one VM
// that waits until it is resident, touches `touch`, then checks every page.
Served serve(const TempDir& dir, const std::string& manifest, const std::vector<uint64_t>& touch,
             const std::string& flat, const std::string& set = "") {
    auto image = sim::ExpectedImage::open(flat);
    EXPECT_TRUE(image.ok());
    std::string error;
    std::shared_ptr<const Source> source = open_layered_source(manifest, true, error);
    EXPECT_NE(source, nullptr) << error;
    Served out;
    std::mutex mu;
    test_hooks::arm(test_hooks::Point::before_copy, [&](uint64_t, uint64_t first_page) {
        std::lock_guard lock(mu);
        out.installs.push_back(first_page);
    });
    struct Disarm {
        ~Disarm() { test_hooks::disarm(test_hooks::Point::before_copy); }
    } disarm;
    RunningEngine e = start_engine(dir, flat, ServeMode::prefetch, 1, std::chrono::seconds(30), source,
                                   [&](EngineConfig& c) {
                                       if (set.empty()) return;
                                       SnapshotIdentity id;
                                       std::string why;
                                       EXPECT_TRUE(snapshot_identity(*source, id, why)) << why;
                                       WorkingSet ws;
                                       EXPECT_TRUE(load_working_set_for(set, id, ws, why)) << why;
                                       replaying(ws)(c);
                                   });
    {
        sim::Guest guest = make_guest(e.socket, {kGuest});
        EXPECT_TRUE(guest.connect_and_send().ok());
        EXPECT_TRUE(e.engine->wait_until([](const EngineStats& s) { return s.vms_resident == 1; }, kWait));
        guest.touch_pages(touch, 1);
        const sim::VerifyReport verify = guest.verify(*image);
        EXPECT_EQ(verify.mismatches, 0u) << verify.describe();
        guest.disconnect();
        EXPECT_TRUE(e.engine->wait_released(1, kWait));
    }
    const std::vector<VmReport> reports = e.engine->reports();
    EXPECT_EQ(reports.size(), 1u);
    if (!reports.empty()) out.report = reports[0];
    return out;
}

TEST(PackedWorkingSetServe, ReplaysThePackedLayerInFewLargeReadsByteExact) {
    TempDir dir;
    const Packed p = make_packed(dir, 51);
    ASSERT_GT(p.report.packed_pages, 100u);
    const Served s = serve(dir, p.manifest, p.touch, p.chain.flat);
    const VmReport& r = s.report;
    // The whole set is replayed (its zero pages by ZEROPAGE); the packed
    // layer's pages are each read once.
    EXPECT_EQ(r.ws_pages, p.touch.size());
    EXPECT_EQ(r.ws_saved + r.ws_missed, r.ws_pages);
    EXPECT_GT(r.ws_saved, 0u);
    EXPECT_EQ(r.ws_read_bytes, p.report.packed_pages * 4096);
    // A few gather reads of the packed layer, not one per recorded run.
    const uint64_t runs = runs_from_pages(p.touch).size();
    EXPECT_LE(r.ws_reads, 8u) << runs << " runs";
    // The reads' own time is part of the read phase (the rest is waiting
    // for buffers the installs give back).
    EXPECT_GT(r.ws_read_busy_seconds, 0.0);
    EXPECT_LE(r.ws_read_busy_seconds, r.ws_read_seconds);
    // Installed in touch order: the first copies are the set's first
    // non-zero pages, in the order the guest touched them.
    std::vector<uint64_t> non_zero;
    std::string error;
    auto source = open_layered_source(p.manifest, false, error);
    ASSERT_NE(source, nullptr) << error;
    for (uint64_t page : p.touch)
        if (source->lookup(page * 4096, 4096).kind == SourceExtent::Kind::data) non_zero.push_back(page);
    ASSERT_GE(non_zero.size(), 20u);
    ASSERT_GE(s.installs.size(), 20u);
    EXPECT_TRUE(std::equal(non_zero.begin(), non_zero.begin() + 20, s.installs.begin()));
}

TEST(PackedWorkingSetServe, PlainSetReplaysAgainstThePackedSnapshotAndPackedAgainstThePlainOne) {
    TempDir dir;
    const Packed p = make_packed(dir, 52);
    // The set written against the plain snapshot, given to the packed one: it wins over the packed order.
    const Served on_packed = serve(dir, p.manifest, p.touch, p.chain.flat, p.set_path);
    EXPECT_EQ(on_packed.report.ws_pages, p.touch.size());
    EXPECT_EQ(on_packed.report.ws_saved + on_packed.report.ws_missed, p.touch.size());
    // And a set written against the packed snapshot replays on the plain one.
    std::string error;
    auto packed_source = open_layered_source(p.manifest, false, error);
    ASSERT_NE(packed_source, nullptr) << error;
    WorkingSet set;
    ASSERT_TRUE(snapshot_identity(*packed_source, set.identity, error)) << error;
    set.runs = runs_from_pages(p.touch);
    ASSERT_TRUE(write_working_set_file(dir.file("from-packed.ws"), set, error)) << error;
    const Served on_plain = serve(dir, p.chain.manifest, p.touch, p.chain.flat, dir.file("from-packed.ws"));
    EXPECT_EQ(on_plain.report.ws_pages, p.touch.size());
    EXPECT_GT(on_plain.report.ws_saved, 0u);
}

// A flipped bit in the packed layer: the gather job's check refuses the
// bytes and, with --kill-on-failure, the VM is killed, never served them.
TEST(PackedWorkingSetServe, FlippedBitInThePackedLayerIsRefusedAndKillsTheVm) {
    TempDir dir;
    const std::string guestsim = tool_path("RP_GUESTSIM");
    ASSERT_FALSE(guestsim.empty());
    const Packed p = make_packed(dir, 53);
    const std::string layer = p.manifest + ".layer3.rpl";
    FileDesc fd = std::move(FileDesc::open(layer.c_str(), O_RDWR).value());
    const off_t at = 4096 + lseek(fd.get(), 0, SEEK_END) / 2 / 4096 * 4096 + 100;
    uint8_t byte = 0;
    ASSERT_EQ(pread(fd.get(), &byte, 1, at), 1);
    byte ^= 0x10;
    ASSERT_EQ(pwrite(fd.get(), &byte, 1, at), 1);

    std::string error;
    std::shared_ptr<const Source> source = open_layered_source(p.manifest, true, error);
    ASSERT_TRUE(source) << error;
    EngineConfig config;
    config.listeners.push_back({dir.file("v.sock"), source, ServeMode::prefetch});
    config.kill_on_failure = true;
    auto engine = Engine::start(std::move(config), error);
    ASSERT_TRUE(engine) << error;
    ::testing::internal::CaptureStderr();
    Child c = spawn(guestsim, {"run", "--socket", dir.file("v.sock"), "--mem-file", p.chain.flat, "--regions", "8M",
                               "--pattern", "sequential"});
    const int status = c.wait();
    ASSERT_TRUE(engine->wait_released(1, kWait));
    const std::string log = ::testing::internal::GetCapturedStderr();
    ASSERT_TRUE(WIFSIGNALED(status)) << log;
    EXPECT_EQ(WTERMSIG(status), SIGKILL);
    EXPECT_NE(log.find("refusing to serve corrupt snapshot data"), std::string::npos) << log;
    EXPECT_NE(log.find("packed.rpm.layer3.rpl"), std::string::npos) << log;
    EXPECT_EQ(engine->stats().vms_failed, 1u);
}

}  // namespace
