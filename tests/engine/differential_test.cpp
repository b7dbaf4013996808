// Differential test: the engine against the simplest possible reference (a
// thread that reads one uffd message at a time, preads the page and copies
// it) on random region layouts and random fault sequences. Every page of the
// two guests must hash the same.
#include <gtest/gtest.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <atomic>
#include <random>
#include <thread>

#include "common/engine_fixture.hpp"
#include "ringpager/protocol.hpp"

using namespace ringpager;
using namespace ringpager::testing;

namespace {

constexpr uint64_t MiB = 1024 * 1024;

// pread + UFFDIO_COPY, one page per fault, one VM.
class ReferenceHandler {
public:
    ReferenceHandler(const std::string& socket_path, const std::string& mem_file)
        : file_(std::move(FileDesc::open(mem_file.c_str(), O_RDONLY).value())), stop_(eventfd(0, EFD_CLOEXEC)) {
        listener_ = FileDesc(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size());
        EXPECT_EQ(bind(listener_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
        EXPECT_EQ(listen(listener_.get(), 4), 0);
        thread_ = std::thread([this] { serve(); });
    }
    ~ReferenceHandler() {
        const uint64_t one = 1;
        (void)!write(stop_.get(), &one, sizeof one);
        thread_.join();
    }

private:
    void serve() {
        FileDesc conn(accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
        char data[4096];
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
        iovec iov{data, sizeof data};
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control;
        msg.msg_controllen = sizeof control;
        const ssize_t n = recvmsg(conn.get(), &msg, 0);
        ASSERT_GT(n, 0);
        int fd;
        std::memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&msg)), sizeof fd);
        FileDesc uffd(fd);
        Handshake hs;
        std::string error;
        ASSERT_TRUE(parse_handshake(std::string_view(data, static_cast<size_t>(n)), hs, error)) << error;
        std::vector<uint8_t> page(4096);
        for (;;) {
            pollfd fds[2] = {{uffd.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
            poll(fds, 2, -1);
            if (fds[1].revents) return;
            uffd_msg m;
            if (read(uffd.get(), &m, sizeof m) != sizeof m || m.event != UFFD_EVENT_PAGEFAULT) continue;
            const uint64_t addr = m.arg.pagefault.address & ~uint64_t{4095};
            for (const Region& r : hs.regions) {
                if (!r.contains(addr)) continue;
                ASSERT_EQ(pread(file_.get(), page.data(), 4096, static_cast<off_t>(r.offset_bytes + addr - r.base_host_virt_addr)), 4096);
                uffdio_copy copy{addr, reinterpret_cast<uint64_t>(page.data()), 4096, 0, 0};
                ioctl(uffd.get(), UFFDIO_COPY, &copy);  // EEXIST: another vCPU's fault got there first
            }
        }
    }

    FileDesc file_;
    FileDesc stop_;
    FileDesc listener_;
    std::thread thread_;
};

TEST(DifferentialTest, EngineMatchesPreadCopyReferenceOnRandomFaultSequences) {
    TempDir dir;
    const std::string mem = make_image(dir, "mem", 24 * MiB, 0.4, 5, /*sparse=*/true);
    RunningEngine engine = start_engine(dir, mem, ServeMode::lazy, 2);
    for (uint64_t seed = 1; seed <= 12; seed++) {
        std::mt19937_64 rng(seed);
        // 1 to 3 regions of 1 to 6 MiB at random page-aligned file offsets,
        // in random file order and disjoint (the handshake contract).
        sim::GuestConfig config;
        const size_t regions = 1 + rng() % 3;
        uint64_t slack = 24 * MiB;
        for (size_t i = 0; i < regions; i++) {
            config.region_sizes_bytes.push_back((1 + rng() % 6) * MiB);
            slack -= config.region_sizes_bytes.back();
        }
        std::vector<size_t> file_order(regions);
        for (size_t i = 0; i < regions; i++) file_order[i] = i;
        std::shuffle(file_order.begin(), file_order.end(), rng);
        config.region_offsets_bytes.resize(regions);
        uint64_t at = 0;
        for (size_t i : file_order) {
            const uint64_t gap = (rng() % (slack / 4096 + 1)) * 4096;
            slack -= gap;
            at += gap;
            config.region_offsets_bytes[i] = at;
            at += config.region_sizes_bytes[i];
        }
        const std::string ref_socket = dir.file("ref" + std::to_string(seed) + ".sock");
        ReferenceHandler reference(ref_socket, mem);
        config.socket_path = engine.socket;
        auto a = sim::Guest::create(config);
        config.socket_path = ref_socket;
        auto b = sim::Guest::create(config);
        ASSERT_TRUE(a.ok() && b.ok());
        ASSERT_TRUE(a->connect_and_send().ok());
        ASSERT_TRUE(b->connect_and_send().ok());
        // The same random fault sequence on both, then everything else.
        const unsigned vcpus = 1 + static_cast<unsigned>(rng() % 4);
        const auto pattern = static_cast<sim::Pattern>(rng() % 3);
        const double fraction = 0.1 + static_cast<double>(rng() % 90) / 100.0;
        a->touch(pattern, vcpus, fraction, seed);
        b->touch(pattern, vcpus, fraction, seed);
        for (uint64_t p = 0; p < a->page_count(); p++) {
            const uint64_t ha = sim::hash_bytes(a->page_address(p), 4096);
            const uint64_t hb = sim::hash_bytes(b->page_address(p), 4096);
            ASSERT_EQ(ha, hb) << "seed " << seed << " page " << p << " (file offset " << a->file_offset_of_page(p) << ")";
        }
    }
}

}  // namespace
