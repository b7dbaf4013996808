// Pins serving a layered snapshot through the engine: a three-layer chain
// (base + two sparse diffs) restores byte-exact against the flattened image,
// for 4 KiB and 2 MiB pages; --verify-reads refuses a flipped bit and, with
// --kill-on-failure, kills the VM rather than serve wrong bytes.
#include <gtest/gtest.h>

#include "common/engine_fixture.hpp"
#include "engine/layered_chain.hpp"
#include "common/process.hpp"

using namespace ringpager;
using namespace ringpager::testing;

namespace {

constexpr uint64_t MiB = 1024 * 1024;

void serve_and_verify(const TempDir& dir, const Chain& chain, uint64_t page_size, std::vector<uint64_t> regions) {
    auto image = sim::ExpectedImage::open(chain.flat);
    ASSERT_TRUE(image.ok());
    std::string error;
    std::shared_ptr<const Source> source = open_layered_source(chain.manifest, true, error);
    ASSERT_TRUE(source) << error;
    RunningEngine e = start_engine(dir, "", ServeMode::lazy, 2, std::chrono::seconds(30), source);
    sim::Guest guest = make_guest(e.socket, std::move(regions), page_size);
    ASSERT_TRUE(guest.connect_and_send().ok());
    guest.touch(sim::Pattern::random, 2, 1.0, 4);
    const sim::VerifyReport report = guest.verify(*image);
    EXPECT_EQ(report.pages_checked, guest.page_count());
    EXPECT_EQ(report.mismatches, 0u) << report.describe();
    if (page_size == 4096) {  // manifest zero blocks go by ZEROPAGE
        EXPECT_GT(e.engine->stats().pages_zeroed, 0u);
    }
}

TEST(LayeredServeTest, ThreeLayerChainRestoresByteExact) {
    TempDir dir;
    const Chain chain = build_chain(dir, 16 * MiB, 4096);
    serve_and_verify(dir, chain, 4096, {8 * MiB, 8 * MiB});
}

TEST(LayeredServeTest, HugePageChainRestoresByteExact) {
    TempDir dir;
    ASSERT_EQ(sim::ensure_hugepages(64), "");
    const Chain chain = build_chain(dir, 32 * MiB, 2 * MiB);
    serve_and_verify(dir, chain, 2 * MiB, {32 * MiB});
}

TEST(LayeredServeTest, VerifyReadsRefusesAFlippedBitAndKillsTheVm) {
    TempDir dir;
    const std::string guestsim = tool_path("RP_GUESTSIM");
    ASSERT_FALSE(guestsim.empty());
    const Chain chain = build_chain(dir, 8 * MiB, 4096);
    // Flip one bit in the middle of the base layer's stored blocks.
    const std::string layer = chain.manifest + ".layer0.rpl";
    FileDesc fd = std::move(FileDesc::open(layer.c_str(), O_RDWR).value());
    const off_t at = lseek(fd.get(), 0, SEEK_END) / 2;
    uint8_t byte = 0;
    ASSERT_EQ(pread(fd.get(), &byte, 1, at), 1);
    byte ^= 0x10;
    ASSERT_EQ(pwrite(fd.get(), &byte, 1, at), 1);

    std::string error;
    std::shared_ptr<const Source> source = open_layered_source(chain.manifest, true, error);
    ASSERT_TRUE(source) << error;
    EngineConfig config;
    config.listeners.push_back({dir.file("v.sock"), source, ServeMode::lazy});
    config.kill_on_failure = true;
    auto engine = Engine::start(std::move(config), error);
    ASSERT_TRUE(engine) << error;
    ::testing::internal::CaptureStderr();
    Child c = spawn(guestsim, {"run", "--socket", dir.file("v.sock"), "--mem-file", chain.flat, "--regions", "8M",
                               "--pattern", "sequential"});
    const int status = c.wait();
    ASSERT_TRUE(engine->wait_released(1, kWait));
    const std::string log = ::testing::internal::GetCapturedStderr();
    ASSERT_TRUE(WIFSIGNALED(status)) << log;
    EXPECT_EQ(WTERMSIG(status), SIGKILL);
    EXPECT_NE(log.find("refusing to serve corrupt snapshot data"), std::string::npos) << log;
    EXPECT_EQ(engine->stats().vms_failed, 1u);
}

}  // namespace
