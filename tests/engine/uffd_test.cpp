// Pins the uffd layer against the real kernel: multi-page copies, EEXIST in
// the middle of a run (skipped, waiters woken), zero pages, and the
// userfaultfd check on received fds.
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <sys/mman.h>

#include <cstring>
#include <vector>

#include "uffd/uffd.hpp"

using namespace ringpager;

namespace {

struct Area {
    uint8_t* base = nullptr;
    size_t len = 0;
    Area(size_t bytes) : len(bytes) {
        base = static_cast<uint8_t*>(mmap(nullptr, len, PROT_READ | PROT_WRITE,
                                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
    }
    ~Area() { munmap(base, len); }
    uint64_t addr(size_t page) const { return reinterpret_cast<uint64_t>(base) + page * 4096; }
};

TEST(Uffd, CopiesARunAndSkipsAPageThatAlreadyExists) {
    auto uffd = Uffd::create(UFFD_FEATURE_EVENT_REMOVE);
    ASSERT_TRUE(uffd.ok()) << uffd.error().message();
    Area area(16 * 4096);
    ASSERT_TRUE(uffd->register_missing(area.addr(0), 16 * 4096).ok());
    std::vector<uint8_t> src(16 * 4096);
    for (size_t i = 0; i < src.size(); i++) src[i] = static_cast<uint8_t>(i / 4096 + 1);
    // Page 5 is installed first (as a racing prefetch would), with other bytes.
    std::vector<uint8_t> other(4096, 0xEE);
    InstallOutcome one = uffd->copy(area.addr(5), other.data(), 4096, 4096);
    ASSERT_EQ(one.error, 0);
    InstallOutcome run = uffd->copy(area.addr(0), src.data(), 16 * 4096, 4096);
    EXPECT_EQ(run.error, 0);
    EXPECT_EQ(run.bytes_done, 16u * 4096);
    EXPECT_EQ(run.existing_pages, 1u);
    for (size_t page = 0; page < 16; page++)
        EXPECT_EQ(area.base[page * 4096 + 17], page == 5 ? 0xEE : page + 1) << page;
}

TEST(Uffd, ZeroPageInstallsZerosAndReportsExisting) {
    auto uffd = Uffd::create(0);
    ASSERT_TRUE(uffd.ok());
    Area area(4 * 4096);
    ASSERT_TRUE(uffd->register_missing(area.addr(0), 4 * 4096).ok());
    InstallOutcome z = uffd->zeropage(area.addr(0), 4 * 4096, 4096);
    EXPECT_EQ(z.error, 0);
    EXPECT_EQ(z.existing_pages, 0u);
    for (size_t i = 0; i < 4 * 4096; i++) ASSERT_EQ(area.base[i], 0);
    InstallOutcome again = uffd->zeropage(area.addr(1), 4096, 4096);
    EXPECT_EQ(again.error, 0);
    EXPECT_EQ(again.existing_pages, 1u);
}

TEST(Uffd, CopyOutsideARegisteredRangeFailsWithItsErrno) {
    auto uffd = Uffd::create(0);
    ASSERT_TRUE(uffd.ok());
    Area area(4096);
    std::vector<uint8_t> src(4096, 1);
    InstallOutcome out = uffd->copy(area.addr(0), src.data(), 4096, 4096);
    EXPECT_EQ(out.error, ENOENT);  // no registered VMA at dst
    EXPECT_EQ(out.bytes_done, 0u);
}

TEST(Uffd, AdoptRefusesAnFdThatIsNotAUserfaultfd) {
    FileDesc efd(eventfd(0, EFD_CLOEXEC));
    ASSERT_TRUE(efd.valid());
    EXPECT_FALSE(Uffd::is_userfaultfd(efd.get()));
    auto adopted = Uffd::adopt(std::move(efd));
    EXPECT_FALSE(adopted.ok());
    auto real = Uffd::create(0);
    ASSERT_TRUE(real.ok());
    EXPECT_TRUE(Uffd::is_userfaultfd(real->fd()));
}

TEST(Uffd, AvailabilityCheckPassesAsRoot) { EXPECT_EQ(userfaultfd_unavailable_reason(), ""); }

}  // namespace
