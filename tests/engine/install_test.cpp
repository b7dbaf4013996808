// Pins the install rules (src/pager/install.cpp) against the real kernel:
// which pages of a read get bytes, zeros, poison or nothing; zero runs; a
// page installed by someone else in the middle of a run (EEXIST); and a
// range the VM unmapped (ENOENT) dropped without failing the rest.
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cstring>
#include <vector>

#include "pager/install.hpp"

using namespace ringpager;

namespace {

constexpr uint64_t kPage = 4096;

TEST(DecideActions, EachPageGetsWhatItsStateAllows) {
    PageStates states(6);
    for (uint64_t p = 0; p < 6; p++) states.set(p, PageState::in_flight);
    states.set(1, PageState::removed);
    states.set(2, PageState::present);
    std::vector<uint8_t> data(6 * kPage, 0xab);
    std::vector<uint8_t> poison = {0, 0, 0, 1, 0, 0};
    std::vector<Action> actions;
    decide_actions(states, 0, 6, data.data(), kPage, poison, actions);
    EXPECT_EQ(actions, (std::vector<Action>{Action::copy, Action::zero, Action::skip, Action::poison, Action::copy,
                                            Action::copy}));
    decide_actions(states, 0, 6, nullptr, kPage, {}, actions);  // no bytes: zeros
    EXPECT_EQ(actions[0], Action::zero);
    EXPECT_EQ(actions[2], Action::skip);
}

TEST(DecideActions, ZeroBytesGoByZeropageOnlyInLongRunsOrAsTheWholeJob) {
    const uint64_t pages = 40;
    PageStates states(pages);
    for (uint64_t p = 0; p < pages; p++) states.set(p, PageState::in_flight);
    std::vector<uint8_t> data(pages * kPage, 0);
    // Pages 0-9 and 30-39 hold bytes; 10-29 (20 pages) are zero; page 5 too.
    for (uint64_t p = 0; p < pages; p++)
        if (p < 10 || p >= 30) data[p * kPage + 7] = 1;
    data[5 * kPage + 7] = 0;
    std::vector<Action> actions;
    decide_actions(states, 0, pages, data.data(), kPage, {}, actions);
    EXPECT_EQ(actions[5], Action::copy);   // a 1-page gap is copied with its neighbours
    for (uint64_t p = 10; p < 30; p++) EXPECT_EQ(actions[p], Action::zero) << p;
    EXPECT_EQ(actions[30], Action::copy);
    std::vector<uint8_t> small(3 * kPage, 0);  // a whole job of zeros, however short
    decide_actions(states, 0, 3, small.data(), kPage, {}, actions);
    EXPECT_EQ(actions, (std::vector<Action>{Action::zero, Action::zero, Action::zero}));
    decide_actions(states, 0, 1, small.data(), 2 << 20, {}, actions);  // hugetlb: no zero page
    EXPECT_EQ(actions[0], Action::copy);
}

struct Vm8 {
    uint8_t* base = nullptr;
    Uffd uffd;
    RegionList regions;
    Vm8() {
        base = static_cast<uint8_t*>(mmap(nullptr, 8 * kPage, PROT_READ | PROT_WRITE,
                                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
        auto created = Uffd::create(0);
        EXPECT_TRUE(created.ok());
        uffd = std::move(*created);
        EXPECT_TRUE(uffd.register_missing(reinterpret_cast<uint64_t>(base), 8 * kPage).ok());
        regions.push_back({reinterpret_cast<uint64_t>(base), 8 * kPage, 0, kPage});
    }
    ~Vm8() { munmap(base, 8 * kPage); }
};

TEST(InstallPages, APageInstalledMidRunIsKeptAndTheRestCopied) {
    Vm8 vm;
    AddressMap map(vm.regions);
    PageStates states(8);
    for (uint64_t p = 0; p < 8; p++) states.set(p, PageState::in_flight);
    states.set(5, PageState::removed);
    std::vector<uint8_t> other(kPage, 0x77);  // someone else installs page 3 first
    ASSERT_EQ(vm.uffd.copy(reinterpret_cast<uint64_t>(vm.base) + 3 * kPage, other.data(), kPage, kPage).error, 0);
    std::vector<uint8_t> data(8 * kPage);
    for (uint64_t i = 0; i < data.size(); i++) data[i] = static_cast<uint8_t>(1 + i / kPage);
    const InstallResult r = install_pages({vm.uffd, map, states, nullptr}, 0, 8, data.data(), data.size(), {});
    EXPECT_EQ(r.end, InstallResult::End::done);
    EXPECT_EQ(r.pages_copied, 7u);  // all in-flight pages, the EEXIST one included
    EXPECT_EQ(r.pages_zeroed, 1u);  // the removed page
    EXPECT_EQ(vm.base[3 * kPage], 0x77);
    EXPECT_EQ(vm.base[5 * kPage], 0);
    EXPECT_EQ(vm.base[7 * kPage], 8);
    for (uint64_t p = 0; p < 8; p++) EXPECT_NE(states.get(p), PageState::in_flight) << p;
}

TEST(InstallPages, AnUnmappedRangeIsRetiredAndTheRestInstalled) {
    Vm8 vm;
    AddressMap map(vm.regions);
    PageStates states(8);
    for (uint64_t p = 0; p < 8; p++) states.set(p, PageState::in_flight);
    ASSERT_EQ(munmap(vm.base + 4 * kPage, 4 * kPage), 0);  // the VM dropped the upper half
    std::vector<uint8_t> data(8 * kPage, 9);
    std::vector<uint8_t> poison = {0, 0, 0, 0, 1, 1, 1, 1};
    const InstallResult r = install_pages({vm.uffd, map, states, nullptr}, 0, 8, data.data(), data.size(), poison);
    EXPECT_EQ(r.end, InstallResult::End::done);
    EXPECT_EQ(r.pages_copied, 4u);
    EXPECT_EQ(r.ranges_unmapped, 1u);
    EXPECT_EQ(r.first_unmapped_start, reinterpret_cast<uint64_t>(vm.base) + 4 * kPage);
    EXPECT_EQ(map.find_addr(reinterpret_cast<uint64_t>(vm.base) + 5 * kPage), nullptr);
    EXPECT_TRUE(map.was_retired(reinterpret_cast<uint64_t>(vm.base) + 5 * kPage));
    EXPECT_EQ(vm.base[0], 9);
}

TEST(InstallPages, ACopyPastItsBufferIsRefused) {
    Vm8 vm;
    AddressMap map(vm.regions);
    PageStates states(8);
    for (uint64_t p = 0; p < 8; p++) states.set(p, PageState::in_flight);
    std::vector<uint8_t> data(2 * kPage, 1);
    const InstallResult r = install_pages({vm.uffd, map, states, nullptr}, 0, 8, data.data(), data.size(), {});
    EXPECT_EQ(r.end, InstallResult::End::failed);
    EXPECT_EQ(r.failure, "refusing a copy past the end of its read buffer");
    EXPECT_EQ(r.pages_copied, 0u);
}

}  // namespace
