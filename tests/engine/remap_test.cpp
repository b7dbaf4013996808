// Pins the events Firecracker does not enable but a VM process may still
// produce when its uffd asks for them: UNMAP, REMAP and FORK never crash the
// engine; remapped pages are served at their new address with their own
// bytes; a forked child's uffd is closed. Also: fds sent after the handshake
// are closed.
#include <gtest/gtest.h>
#include <linux/userfaultfd.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <thread>

#include "common/engine_fixture.hpp"
#include "common/socket.hpp"
#include "uffd/uffd.hpp"

using namespace ringpager;
using namespace ringpager::testing;

namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kPages = 64;

// A hand-built guest whose uffd asks for every non-cooperative event.
struct RawGuest {
    uint8_t* mem = nullptr;
    Uffd uffd;
    FileDesc sock;

    void start(const std::string& path) {
        auto created = Uffd::create(UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMAP |
                                    UFFD_FEATURE_EVENT_FORK);
        ASSERT_TRUE(created.ok()) << created.error().message();
        uffd = std::move(*created);
        mem = static_cast<uint8_t*>(mmap(nullptr, kPages * kPage, PROT_READ | PROT_WRITE,
                                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
        ASSERT_NE(mem, MAP_FAILED);
        ASSERT_TRUE(uffd.register_missing(reinterpret_cast<uint64_t>(mem), kPages * kPage).ok());
        sock = connect_to(path);
        const std::string json = "[{\"base_host_virt_addr\":" + std::to_string(reinterpret_cast<uint64_t>(mem)) +
                                 ",\"size\":" + std::to_string(kPages * kPage) +
                                 ",\"offset\":0,\"page_size\":4096,\"page_size_kib\":4096}]";
        send_with_fds(sock.get(), json, {uffd.fd()});
    }
};

bool page_matches(const uint8_t* page, const sim::ExpectedImage& image, uint64_t file_page) {
    return sim::hash_bytes(page, kPage) == image.hash(file_page * kPage, kPage);
}

TEST(RemapTest, UnmapRemapAndForkAreHandledAndServingContinues) {
    TempDir dir;
    const std::string mem_file = make_image(dir, "mem", kPages * kPage, 0.0);
    auto image = sim::ExpectedImage::open(mem_file);
    ASSERT_TRUE(image.ok());
    RunningEngine e = start_engine(dir, mem_file, ServeMode::lazy, 1);
    RawGuest g;
    g.start(e.socket);
    ASSERT_TRUE(e.engine->wait_accepted(1, kWait));

    volatile uint8_t sink = g.mem[0];  // an ordinary fault first
    (void)sink;
    EXPECT_TRUE(page_matches(g.mem, *image, 0));

    // REMAP: move pages [8, 16) elsewhere; they must fault in with their own bytes.
    void* target = mmap(nullptr, 8 * kPage, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(target, MAP_FAILED);
    void* moved = mremap(g.mem + 8 * kPage, 8 * kPage, 8 * kPage, MREMAP_MAYMOVE | MREMAP_FIXED, target);
    ASSERT_EQ(moved, target) << strerror(errno);
    const auto* moved_pages = static_cast<const uint8_t*>(moved);
    for (uint64_t i = 0; i < 8; i++) {
        sink = moved_pages[i * kPage];
        EXPECT_TRUE(page_matches(moved_pages + i * kPage, *image, 8 + i)) << "remapped page " << i;
    }

    // UNMAP: drop pages [32, 40); the rest keeps being served.
    ASSERT_EQ(munmap(g.mem + 32 * kPage, 8 * kPage), 0);
    sink = g.mem[41 * kPage];
    EXPECT_TRUE(page_matches(g.mem + 41 * kPage, *image, 41));

    // FORK: the child gets its own uffd, which the engine must close, not serve.
    const pid_t child = fork();
    if (child == 0) _exit(0);
    ASSERT_GT(child, 0);
    int status = 0;
    ASSERT_EQ(waitpid(child, &status, 0), child);

    // A stray fd sent after the handshake is closed by the engine.
    FileDesc stray(eventfd(0, EFD_CLOEXEC));
    send_with_fds(g.sock.get(), "x", {stray.get()});
    ASSERT_TRUE(e.engine->wait_until([](const EngineStats& s) { return s.stray_fds_closed == 1; }, kWait));

    for (uint64_t p = 48; p < kPages; p++) {
        sink = g.mem[p * kPage];
        EXPECT_TRUE(page_matches(g.mem + p * kPage, *image, p)) << p;
    }
    EXPECT_GE(e.engine->stats().events_other, 3u);  // REMAP, UNMAP, FORK
    EXPECT_EQ(e.engine->stats().vms_failed, 0u);
    munmap(moved, 8 * kPage);
    munmap(g.mem, 32 * kPage);
    munmap(g.mem + 40 * kPage, (kPages - 40) * kPage);
}

}  // namespace
