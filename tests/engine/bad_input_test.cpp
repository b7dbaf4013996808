// Pins SPEC §5: every malformed handshake is refused with a one-line reason,
// every fd it carried is closed, and other VMs keep being served meanwhile.
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "common/engine_fixture.hpp"
#include "common/socket.hpp"
#include "uffd/uffd.hpp"

using namespace ringpager;
using namespace ringpager::testing;

namespace {

constexpr uint64_t MiB = 1024 * 1024;

std::string one_region(uint64_t size, uint64_t offset = 0) {
    return "[{\"base_host_virt_addr\":1048576,\"size\":" + std::to_string(size) + ",\"offset\":" +
           std::to_string(offset) + ",\"page_size\":4096,\"page_size_kib\":4096}]";
}

class BadInputTest : public ::testing::Test {
protected:
    void SetUp() override {
        mem = make_image(dir, "mem", 4 * MiB);
        auto opened = sim::ExpectedImage::open(mem);
        ASSERT_TRUE(opened.ok());
        image = std::make_unique<sim::ExpectedImage>(std::move(opened.value()));
        e = start_engine(dir, mem, ServeMode::lazy, 2, std::chrono::milliseconds(400));
        fds_before = open_fd_count();
    }

    // Sends one bad handshake, waits for its refusal, and returns the log.
    std::string refused_with(const std::string& bytes, const std::vector<int>& fds, bool close_after = true) {
        const uint64_t before = e.engine->stats().vms_refused;
        ::testing::internal::CaptureStderr();
        {
            FileDesc sock = connect_to(e.socket);
            send_with_fds(sock.get(), bytes, fds);
            if (!close_after) {
                EXPECT_TRUE(wait_refused(before + 1));
                return ::testing::internal::GetCapturedStderr();
            }
        }
        EXPECT_TRUE(wait_refused(before + 1));
        return ::testing::internal::GetCapturedStderr();
    }

    bool wait_refused(uint64_t count) {
        return e.engine->wait_until([&](const EngineStats& s) { return s.vms_refused >= count; }, kWait);
    }

    // A well-formed VM is still served byte for byte.
    void good_vm_is_served() {
        sim::Guest guest = make_guest(e.socket, {4 * MiB});
        ASSERT_TRUE(guest.connect_and_send().ok());
        guest.touch(sim::Pattern::random, 2, 1.0, 9);
        EXPECT_EQ(guest.verify(*image).mismatches, 0u);
    }

    TempDir dir;
    std::string mem;
    std::unique_ptr<sim::ExpectedImage> image;
    RunningEngine e;
    size_t fds_before = 0;
};

TEST_F(BadInputTest, MalformedJsonIsRefusedAndTheNextVmServed) {
    auto uffd = Uffd::create(0);
    ASSERT_TRUE(uffd.ok());
    const std::string log = refused_with("[{\"base_host_virt_addr\":1,}]", {uffd->fd()});
    EXPECT_NE(log.find("refused: handshake is not valid JSON"), std::string::npos) << log;
    good_vm_is_served();
}

TEST_F(BadInputTest, ZeroRegionsAndUnknownPageSizeAreRefused) {
    auto uffd = Uffd::create(0);
    ASSERT_TRUE(uffd.ok());
    EXPECT_NE(refused_with("[]", {uffd->fd()}).find("handshake has zero regions"), std::string::npos);
    const std::string bad_page = "[{\"base_host_virt_addr\":0,\"size\":65536,\"offset\":0,\"page_size\":65536}]";
    EXPECT_NE(refused_with(bad_page, {uffd->fd()}).find("unknown page size 65536"), std::string::npos);
}

TEST_F(BadInputTest, NoFdIsRefused) {
    EXPECT_NE(refused_with(one_region(MiB), {}).find("carried 0 fds; expected exactly one"), std::string::npos);
}

TEST_F(BadInputTest, TwoFdsAreRefusedAndBothClosed) {
    auto a = Uffd::create(0);
    auto b = Uffd::create(0);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_NE(refused_with(one_region(MiB), {a->fd(), b->fd()}).find("handshake carried more fds than the one userfaultfd"),
              std::string::npos);
    // Our two copies are still open; the engine's received copies are gone.
    EXPECT_EQ(open_fd_count(), fds_before + 2);
}

TEST_F(BadInputTest, AnFdThatIsNotAUserfaultfdIsRefusedAndClosed) {
    FileDesc efd(eventfd(0, EFD_CLOEXEC));
    EXPECT_NE(refused_with(one_region(MiB), {efd.get()}).find("is not a userfaultfd"), std::string::npos);
    EXPECT_EQ(open_fd_count(), fds_before + 1);
}

TEST_F(BadInputTest, RegionOutsideTheSnapshotIsRefusedBeforeServing) {
    auto uffd = Uffd::create(0);
    ASSERT_TRUE(uffd.ok());
    const std::string log = refused_with(one_region(4 * MiB, 4096), {uffd->fd()});
    EXPECT_NE(log.find("ends past the snapshot"), std::string::npos) << log;
    EXPECT_EQ(e.engine->stats().vms_accepted, 0u);
}

TEST_F(BadInputTest, OversizedHandshakeIsRefused) {
    std::string huge = "[" + std::string(70000, ' ');
    EXPECT_NE(refused_with(huge, {}, false).find("handshake larger than 65536 bytes"), std::string::npos);
}

TEST_F(BadInputTest, PeerThatClosesMidHandshakeIsRefused) {
    EXPECT_NE(refused_with("[{\"base_host_virt_addr\":", {}).find("in the middle of the handshake"), std::string::npos);
}

TEST_F(BadInputTest, SilentPeerDoesNotDelayAGoodVmAndIsDroppedAtTheTimeout) {
    ::testing::internal::CaptureStderr();
    FileDesc silent = connect_to(e.socket);
    good_vm_is_served();  // served while the silent peer is still pending
    ASSERT_TRUE(wait_refused(1));
    const std::string log = ::testing::internal::GetCapturedStderr();
    EXPECT_NE(log.find("no complete handshake within the handshake timeout"), std::string::npos) << log;
    char byte;
    EXPECT_EQ(recv(silent.get(), &byte, 1, 0), 0);  // the engine closed its end
}

TEST_F(BadInputTest, UidNotAllowedIsRefusedAtAccept) {
    e.engine.reset();
    std::string error;
    EngineConfig config;
    config.listeners.push_back({dir.file("strict.sock"), open_raw_source(mem, error), ServeMode::lazy});
    config.allowed_uids = {12345};
    auto strict = Engine::start(std::move(config), error);
    ASSERT_TRUE(strict) << error;
    ::testing::internal::CaptureStderr();
    FileDesc sock = connect_to(dir.file("strict.sock"));
    ASSERT_TRUE(strict->wait_until([](const EngineStats& s) { return s.vms_refused == 1; }, kWait));
    const std::string log = ::testing::internal::GetCapturedStderr();
    EXPECT_NE(log.find("uid 0 is not allowed"), std::string::npos) << log;
}

}  // namespace
