// Pins a full restore on the real kernel: the baseline handler on a thread,
// the simulated guest in-process, every page verified; and that the verifier
// catches a handler serving wrong bytes.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstring>
#include <tuple>

#include <gtest/gtest.h>

#include "guestsim/guest.hpp"
#include "guestsim/image.hpp"
#include "guestsim/file_io.hpp"
#include "ringpager/file_desc.hpp"
#include "test_util.hpp"

namespace ringpager::sim {
namespace {

constexpr uint64_t kMiB = 1 << 20;
const std::vector<uint64_t> kRegionSizes = {8 * kMiB, 4 * kMiB, 2 * kMiB};

class EndToEnd : public ::testing::Test {
protected:
    void SetUp() override {
        ASSERT_TRUE(generate_image(dir_.file("mem"), 16 * kMiB, GenerateOptions{0.4, 0.1, 77, 4096, true}).ok());
        auto image = ExpectedImage::open(dir_.file("mem"));
        ASSERT_TRUE(image.ok());
        expected_.emplace(std::move(*image));
        server_ = test::start_baseline(dir_.file("sock"), dir_.file("mem"));
        ASSERT_NE(server_, nullptr);
    }

    GuestConfig config(HandshakeShape shape = HandshakeShape::v1_12) const {
        GuestConfig c;
        c.socket_path = dir_.file("sock");
        c.region_sizes_bytes = kRegionSizes;
        c.shape = shape;
        return c;
    }

    Guest connected_guest(const GuestConfig& c) {
        auto guest = Guest::create(c);
        EXPECT_TRUE(guest.ok()) << guest.error().message();
        auto sent = guest->connect_and_send();
        EXPECT_TRUE(sent.ok()) << sent.error().message();
        return std::move(*guest);
    }

    // Hangs up like an exiting VMM and waits until `server` has finished
    // `finished` connections: only then are its counters final (a woken
    // fault can return before the handler counts the copy that woke it).
    static baseline::Stats settle(Guest& guest, baseline::Server& server, uint64_t finished) {
        guest.disconnect();
        EXPECT_TRUE(server.wait_for_finished(finished, std::chrono::seconds(30)));
        return server.stats();
    }

    test::TempDir dir_;
    std::optional<ExpectedImage> expected_;
    std::unique_ptr<baseline::Server> server_;
};

class EndToEndWorkload : public EndToEnd, public ::testing::WithParamInterface<std::tuple<unsigned, Pattern>> {};

TEST_P(EndToEndWorkload, EveryPageMatchesTheSnapshot) {
    const auto [vcpus, pattern] = GetParam();
    Guest guest = connected_guest(config());
    ASSERT_EQ(guest.page_count(), (14 * kMiB) / 4096);
    TouchReport touch = guest.touch(pattern, vcpus, 0.6, 1234);
    EXPECT_EQ(touch.pages_touched, static_cast<uint64_t>(0.6 * guest.page_count() + 0.5));
    EXPECT_EQ(touch.latencies_ns.size(), touch.pages_touched);
    EXPECT_LE(touch.latency.p50_ns, touch.latency.p99_ns);
    EXPECT_LE(touch.latency.p99_ns, touch.latency.max_ns);
    EXPECT_GT(touch.total_ns, 0u);

    const VerifyReport touched = guest.verify(*expected_, VerifyScope::touched_pages);
    EXPECT_EQ(touched.pages_checked, touch.pages_touched);
    EXPECT_TRUE(touched.ok()) << touched.describe();
    const VerifyReport all = guest.verify(*expected_);
    EXPECT_EQ(all.pages_checked, guest.page_count());
    EXPECT_EQ(all.mismatches, 0u) << all.describe();
    // Every page was installed exactly once by the handler.
    EXPECT_EQ(settle(guest, *server_, 1).pages_copied, guest.page_count());
}

INSTANTIATE_TEST_SUITE_P(VcpusAndPatterns, EndToEndWorkload,
                         ::testing::Combine(::testing::Values(1u, 2u, 8u),
                                            ::testing::Values(Pattern::sequential, Pattern::random)),
                         [](const auto& param_info) {
                             return std::to_string(std::get<0>(param_info.param)) + "vcpus_" +
                                    (std::get<1>(param_info.param) == Pattern::random ? "random" : "sequential");
                         });

TEST_F(EndToEnd, HotSetWithConcurrentFaultsOnTheSamePages) {
    Guest guest = connected_guest(config());
    TouchReport touch = guest.touch(Pattern::hot_set, 4, 1.0, 5);
    EXPECT_EQ(touch.pages_touched, static_cast<uint64_t>(0.1 * guest.page_count() + 0.5));
    EXPECT_EQ(touch.touches, touch.pages_touched * 4 * TouchOptions{}.hot_set_rounds);
    const VerifyReport report = guest.verify(*expected_);
    EXPECT_TRUE(report.ok()) << report.describe();
    EXPECT_EQ(settle(guest, *server_, 1).pages_copied, guest.page_count());
}

TEST_F(EndToEnd, WriteFaultsKeepTheBytes) {
    Guest guest = connected_guest(config());
    TouchOptions options;
    options.write = true;
    guest.touch(Pattern::random, 2, 1.0, 8, options);
    const VerifyReport report = guest.verify(*expected_);
    EXPECT_TRUE(report.ok()) << report.describe();
}

TEST_F(EndToEnd, AllHandshakeShapesAndTheDevUserfaultfdFallback) {
    for (HandshakeShape shape : {HandshakeShape::v1_1, HandshakeShape::v1_7, HandshakeShape::v1_12}) {
        GuestConfig c = config(shape);
        c.force_dev_userfaultfd = shape == HandshakeShape::v1_7;
        Guest guest = connected_guest(c);
        const VerifyReport report = guest.verify(*expected_);
        EXPECT_TRUE(report.ok()) << handshake_shape_name(shape) << ": " << report.describe();
    }
}

TEST_F(EndToEnd, RegionsAtCustomFileOffsets) {
    GuestConfig c = config();
    c.region_offsets_bytes = {8 * kMiB, 0, 14 * kMiB};
    Guest guest = connected_guest(c);
    guest.touch(Pattern::random, 2, 0.5, 3);
    const VerifyReport report = guest.verify(*expected_);
    EXPECT_TRUE(report.ok()) << report.describe();
}

TEST_F(EndToEnd, TeardownWhenTheGuestGoesAway) {
    {
        Guest guest = connected_guest(config());
        guest.touch(Pattern::sequential, 1, 0.1, 1);
    }
    EXPECT_TRUE(server_->wait_for_finished(1, std::chrono::seconds(30)));
    EXPECT_EQ(server_->stats().connections_active, 0u);
}

TEST_F(EndToEnd, CopyAllOnFirstFaultInstallsEverything) {
    auto eager = test::start_baseline(dir_.file("eager.sock"), dir_.file("mem"), /*copy_all=*/true);
    ASSERT_NE(eager, nullptr);
    GuestConfig c = config();
    c.socket_path = dir_.file("eager.sock");
    Guest guest = connected_guest(c);
    guest.touch_pages({100}, 1);
    const VerifyReport report = guest.verify(*expected_);
    EXPECT_TRUE(report.ok()) << report.describe();
    // The first fault copied everything; any later fault (verification may
    // outrun the copy) found its page present.
    const baseline::Stats stats = settle(guest, *eager, 1);
    EXPECT_EQ(stats.pages_copied, guest.page_count());
    EXPECT_GE(stats.faults, 1u);
    EXPECT_EQ(stats.eexist, stats.faults - 1);
}

// A handler serving a tampered image: verification must name exactly the
// tampered page, proving the verifier can fail.
TEST_F(EndToEnd, VerifierCatchesOneWrongPage) {
    const std::string tampered = dir_.file("tampered");
    ASSERT_TRUE(flatten(dir_.file("mem"), {}, tampered).ok());
    // The 3rd page of region 1 (file offset 8 MiB + 8 KiB): flip one byte.
    const uint64_t bad_offset = 8 * kMiB + 2 * 4096 + 100;
    {
        auto fd = FileDesc::open(tampered.c_str(), O_RDWR);
        ASSERT_TRUE(fd.ok());
        std::byte b{};
        ASSERT_TRUE(pread_all(fd->get(), &b, 1, bad_offset).ok());
        b ^= std::byte{0x5a};
        ASSERT_TRUE(pwrite_all(fd->get(), &b, 1, bad_offset).ok());
    }
    auto bad_server = test::start_baseline(dir_.file("bad.sock"), tampered);
    ASSERT_NE(bad_server, nullptr);
    GuestConfig c = config();
    c.socket_path = dir_.file("bad.sock");
    Guest guest = connected_guest(c);
    guest.touch(Pattern::random, 2, 1.0, 4);
    const VerifyReport report = guest.verify(*expected_);
    EXPECT_EQ(report.pages_checked, guest.page_count());
    ASSERT_EQ(report.mismatches, 1u) << report.describe();
    ASSERT_EQ(report.first_mismatches.size(), 1u);
    const Mismatch& m = report.first_mismatches[0];
    EXPECT_EQ(m.region_index, 1u);
    EXPECT_EQ(m.file_offset_bytes, 8 * kMiB + 2 * 4096);
    EXPECT_EQ(m.guest_page_index, (8 * kMiB) / 4096 + 2);
    EXPECT_EQ(m.addr, guest.regions()[1].base_host_virt_addr + 2 * 4096);
    EXPECT_FALSE(m.expected_zero);
    EXPECT_FALSE(report.ok());
}

TEST_F(EndToEnd, BaselineRefusesBadHandshakesOverTheWire) {
    Guest guest = [&] {
        auto created = Guest::create(config());
        EXPECT_TRUE(created.ok());
        return std::move(*created);
    }();
    // Malformed JSON, then well-formed JSON without the uffd: both refused,
    // each connection closed, the server unaffected.
    const std::string messages[] = {"[{\"base_host_virt_addr\":\"x\"}]", guest.handshake_json()};
    uint64_t failures = server_->stats().handshake_failures;
    for (const std::string& message : messages) {
        FileDesc sock(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        ASSERT_TRUE(sock.valid());
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::strncpy(addr.sun_path, dir_.file("sock").c_str(), sizeof addr.sun_path - 1);
        ASSERT_EQ(::connect(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
        ASSERT_EQ(::send(sock.get(), message.data(), message.size(), MSG_NOSIGNAL),
                  static_cast<ssize_t>(message.size()));
        char byte;
        EXPECT_EQ(::recv(sock.get(), &byte, 1, 0), 0) << "the baseline must close a refused connection";
        EXPECT_EQ(server_->stats().handshake_failures, ++failures);
    }
    // A real guest is still served afterwards.
    ASSERT_TRUE(guest.connect_and_send().ok());
    EXPECT_TRUE(guest.verify(*expected_).ok());
}

}  // namespace
}  // namespace ringpager::sim
