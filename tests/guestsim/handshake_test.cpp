// Pins the handshake bytes of all three Firecracker shapes, the guest's
// layout and wire format, and the baseline's parsing of each shape.
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include <gtest/gtest.h>

#include "baseline/handshake.hpp"
#include "guestsim/guest.hpp"
#include "guestsim/image.hpp"
#include "test_util.hpp"

namespace ringpager::sim {
namespace {

const RegionList kRegions = {
    Region{0x7f0000000000, 0x2000000, 0, 4096},
    Region{0x7f0002200000, 0x1000000, 0x2000000, 4096},
};

TEST(HandshakeJson, ShapeV1_1HasNoPageSize) {
    EXPECT_EQ(handshake_json(kRegions, HandshakeShape::v1_1),
              "[{\"base_host_virt_addr\":139637976727552,\"size\":33554432,\"offset\":0},"
              "{\"base_host_virt_addr\":139638012379136,\"size\":16777216,\"offset\":33554432}]");
}

TEST(HandshakeJson, ShapeV1_7HasPageSizeKibInBytes) {
    EXPECT_EQ(handshake_json(kRegions, HandshakeShape::v1_7),
              "[{\"base_host_virt_addr\":139637976727552,\"size\":33554432,\"offset\":0,\"page_size_kib\":4096},"
              "{\"base_host_virt_addr\":139638012379136,\"size\":16777216,\"offset\":33554432,"
              "\"page_size_kib\":4096}]");
}

TEST(HandshakeJson, ShapeV1_12HasBothWithTheSameByteValue) {
    const RegionList huge = {Region{0x7f0000000000, 0x400000, 0x200000, 2097152}};
    EXPECT_EQ(handshake_json(huge, HandshakeShape::v1_12),
              "[{\"base_host_virt_addr\":139637976727552,\"size\":4194304,\"offset\":2097152,"
              "\"page_size\":2097152,\"page_size_kib\":2097152}]");
}

TEST(HandshakeJson, ShapeNames) {
    EXPECT_EQ(parse_handshake_shape("1.1"), HandshakeShape::v1_1);
    EXPECT_EQ(parse_handshake_shape("1.7"), HandshakeShape::v1_7);
    EXPECT_EQ(parse_handshake_shape("1.12"), HandshakeShape::v1_12);
    EXPECT_FALSE(parse_handshake_shape("1.13").has_value());
}

TEST(BaselineHandshake, AcceptsAllThreeShapesAlike) {
    for (HandshakeShape shape : {HandshakeShape::v1_1, HandshakeShape::v1_7, HandshakeShape::v1_12}) {
        std::string error;
        auto regions = baseline::parse_handshake(handshake_json(kRegions, shape), 48 << 20, error);
        ASSERT_TRUE(regions.has_value()) << handshake_shape_name(shape) << ": " << error;
        ASSERT_EQ(regions->size(), 2u);
        for (size_t i = 0; i < 2; ++i) {
            EXPECT_EQ((*regions)[i].base_host_virt_addr, kRegions[i].base_host_virt_addr);
            EXPECT_EQ((*regions)[i].size_bytes, kRegions[i].size_bytes);
            EXPECT_EQ((*regions)[i].offset_bytes, kRegions[i].offset_bytes);
            EXPECT_EQ((*regions)[i].page_size_bytes, 4096u);
        }
    }
}

TEST(BaselineHandshake, RefusesBadInput) {
    const char* bad[] = {
        "[]",
        "{}",
        "[{\"base_host_virt_addr\":4096,\"size\":4096}]",
        "[{\"base_host_virt_addr\":4096,\"size\":4096,\"offset\":0,\"page_size\":4096,\"page_size_kib\":4}]",
        "[{\"base_host_virt_addr\":4096,\"size\":4096,\"offset\":0,\"page_size\":8192}]",
        "[{\"base_host_virt_addr\":4097,\"size\":4096,\"offset\":0}]",
        "[{\"base_host_virt_addr\":4096,\"size\":8192,\"offset\":0},{\"base_host_virt_addr\":8192,\"size\":4096,\"offset\":0}]",
        "[{\"base_host_virt_addr\":4096,\"size\":1048576,\"offset\":1048576}]",
        "[{\"base_host_virt_addr\":-4096,\"size\":4096,\"offset\":0}]",
        "[{\"base_host_",
    };
    for (const char* json : bad) {
        std::string error;
        EXPECT_FALSE(baseline::parse_handshake(json, 1 << 20, error).has_value()) << json;
        EXPECT_FALSE(error.empty()) << json;
    }
}

// Listens on a socket in the test, lets a Guest connect, and checks the
// exact bytes and the single fd it sends.
TEST(GuestWire, SendsExactJsonAndOneUffdAndKeepsTheConnection) {
    test::TempDir dir;
    const std::string path = dir.file("sock");
    FileDesc listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ASSERT_TRUE(listener.valid());
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    ASSERT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ASSERT_EQ(::listen(listener.get(), 1), 0);

    for (HandshakeShape shape : {HandshakeShape::v1_1, HandshakeShape::v1_7, HandshakeShape::v1_12}) {
        GuestConfig config;
        config.socket_path = path;
        config.region_sizes_bytes = {1 << 20, 512 << 10, 256 << 10};
        config.shape = shape;
        auto guest = Guest::create(config);
        ASSERT_TRUE(guest.ok()) << guest.error().message();
        ASSERT_TRUE(guest->connect_and_send().ok());
        FileDesc conn(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
        ASSERT_TRUE(conn.valid());

        char data[4096];
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)];
        iovec iov{data, sizeof data};
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control;
        msg.msg_controllen = sizeof control;
        ssize_t n = ::recvmsg(conn.get(), &msg, MSG_CMSG_CLOEXEC);
        ASSERT_GT(n, 0);
        EXPECT_EQ(std::string(data, static_cast<size_t>(n)), guest->handshake_json());
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        ASSERT_NE(c, nullptr);
        ASSERT_EQ(c->cmsg_type, SCM_RIGHTS);
        ASSERT_EQ(c->cmsg_len, CMSG_LEN(sizeof(int)));
        int raw_fd;
        std::memcpy(&raw_fd, CMSG_DATA(c), sizeof raw_fd);
        FileDesc uffd(raw_fd);
        EXPECT_EQ(CMSG_NXTHDR(&msg, c), nullptr);
        char link[64] = {};
        ASSERT_GT(::readlink(("/proc/self/fd/" + std::to_string(uffd.get())).c_str(), link, sizeof link - 1), 0);
        EXPECT_STREQ(link, "anon_inode:[userfaultfd]");

        // Regions: back to back in the file, separated by unmapped gaps in memory.
        const RegionList& regions = guest->regions();
        ASSERT_EQ(regions.size(), 3u);
        EXPECT_EQ(regions[0].offset_bytes, 0u);
        EXPECT_EQ(regions[1].offset_bytes, 1u << 20);
        EXPECT_EQ(regions[2].offset_bytes, (1u << 20) + (512u << 10));
        for (size_t i = 0; i + 1 < regions.size(); ++i) {
            const uint64_t gap = regions[i].end_addr();
            ASSERT_LT(gap, regions[i + 1].base_host_virt_addr);
            EXPECT_EQ(::msync(reinterpret_cast<void*>(gap), 4096, MS_ASYNC), -1);
            EXPECT_EQ(errno, ENOMEM) << "the gap after region " << i << " is mapped";
        }

        // The guest keeps its end open: nothing more arrives, no hangup.
        EXPECT_EQ(::recv(conn.get(), data, sizeof data, MSG_DONTWAIT), -1);
        EXPECT_EQ(errno, EAGAIN);
        guest->disconnect();
        EXPECT_EQ(::recv(conn.get(), data, sizeof data, 0), 0);
    }
}

TEST(GuestConfigTest, CustomOffsetsAreSent) {
    GuestConfig config;
    config.socket_path = "/nonexistent";
    config.region_sizes_bytes = {1 << 20, 1 << 20};
    config.region_offsets_bytes = {4 << 20, 0};
    auto guest = Guest::create(config);
    ASSERT_TRUE(guest.ok());
    EXPECT_EQ(guest->regions()[0].offset_bytes, 4u << 20);
    EXPECT_EQ(guest->regions()[1].offset_bytes, 0u);
    EXPECT_EQ(guest->file_offset_of_page(256), 0u);
    EXPECT_EQ(guest->file_offset_of_page(1), (4u << 20) + 4096);
}

TEST(GuestConfigTest, RefusesBadConfigAndConnectsOnlyOnce) {
    GuestConfig config;
    config.region_sizes_bytes = {1 << 20};
    config.page_size_bytes = 8192;
    EXPECT_FALSE(Guest::create(config).ok());
    config.page_size_bytes = 2 << 20;
    config.region_sizes_bytes = {2 << 20};
    config.shape = HandshakeShape::v1_1;  // no page size field: cannot describe huge pages
    EXPECT_FALSE(Guest::create(config).ok());
    config.shape = HandshakeShape::v1_12;
    config.page_size_bytes = 4096;
    config.region_sizes_bytes = {4096 + 1};
    EXPECT_FALSE(Guest::create(config).ok());

    test::TempDir dir;
    config.region_sizes_bytes = {1 << 20};
    config.socket_path = dir.file("nobody-listens");
    auto guest = Guest::create(config);
    ASSERT_TRUE(guest.ok());
    auto sent = guest->connect_and_send();
    ASSERT_FALSE(sent.ok());
    EXPECT_EQ(sent.error().code, ENOENT);
}

}  // namespace
}  // namespace ringpager::sim
