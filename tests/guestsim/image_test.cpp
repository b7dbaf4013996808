// Pins synthetic memory files: sizes, zero/duplicate shares, stamps,
// determinism, sparse zeros, diff files and flattening.
#include <sys/stat.h>

#include <fcntl.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <set>

#include <gtest/gtest.h>

#include "guestsim/expected_image.hpp"
#include "guestsim/file_io.hpp"
#include "guestsim/image.hpp"
#include "ringpager/file_desc.hpp"
#include "test_util.hpp"

namespace ringpager::sim {
namespace {

using test::TempDir;

constexpr uint64_t kPage = 4096;

bool all_zero(const std::byte* p, uint64_t len) {
    return std::all_of(p, p + len, [](std::byte b) { return b == std::byte{0}; });
}

TEST(GenerateImage, SizeFractionsAndStamps) {
    TempDir dir;
    const uint64_t size = 16 << 20;
    GenerateOptions options{0.6, 0.1, 42, kPage, false};
    auto stats = generate_image(dir.file("mem"), size, options);
    ASSERT_TRUE(stats.ok()) << stats.error().message();
    std::vector<std::byte> bytes = test::read_file(dir.file("mem"));
    ASSERT_EQ(bytes.size(), size);
    const uint64_t pages = size / kPage;
    EXPECT_EQ(stats->pages, pages);
    EXPECT_EQ(stats->zero_pages + stats->duplicate_pages + stats->distinct_pages, pages);
    EXPECT_NEAR(static_cast<double>(stats->zero_pages) / pages, 0.6, 0.03);
    EXPECT_NEAR(static_cast<double>(stats->duplicate_pages) / pages, 0.1, 0.02);

    // Check the bytes themselves against what the stats claim.
    uint64_t zero = 0, duplicate = 0, distinct = 0;
    std::set<uint64_t> distinct_hashes;
    std::map<uint64_t, uint64_t> hash_of_page;
    for (uint64_t i = 0; i < pages; ++i) {
        const std::byte* page = bytes.data() + i * kPage;
        if (all_zero(page, kPage)) {
            ++zero;
            EXPECT_EQ(classify_page(options, i), PageKind::zero) << "page " << i;
            continue;
        }
        hash_of_page[i] = hash_bytes(page, kPage);
        if (read_stamp(page) == i * kPage) {
            ++distinct;
            EXPECT_EQ(classify_page(options, i), PageKind::distinct) << "page " << i;
            EXPECT_TRUE(distinct_hashes.insert(hash_of_page[i]).second) << "page " << i << " repeats another";
        } else {
            ++duplicate;
            uint64_t source = UINT64_MAX;
            ASSERT_EQ(classify_page(options, i, &source), PageKind::duplicate) << "page " << i;
            ASSERT_LT(source, i);
            EXPECT_EQ(read_stamp(page), source * kPage);
            EXPECT_EQ(std::memcmp(page, bytes.data() + source * kPage, kPage), 0) << "page " << i;
        }
    }
    EXPECT_EQ(zero, stats->zero_pages);
    EXPECT_EQ(duplicate, stats->duplicate_pages);
    EXPECT_EQ(distinct, stats->distinct_pages);
}

TEST(GenerateImage, EveryPageStampedWithItsOffset) {
    TempDir dir;
    ASSERT_TRUE(generate_image(dir.file("mem"), 4 << 20, GenerateOptions{}).ok());
    std::vector<std::byte> bytes = test::read_file(dir.file("mem"));
    std::set<uint64_t> hashes;
    for (uint64_t off = 0; off < bytes.size(); off += kPage) {
        EXPECT_EQ(read_stamp(bytes.data() + off), off);
        EXPECT_TRUE(hashes.insert(hash_bytes(bytes.data() + off, kPage)).second) << "offset " << off;
    }
}

TEST(GenerateImage, DeterministicBySeed) {
    TempDir dir;
    GenerateOptions options{0.3, 0.2, 7, kPage, false};
    ASSERT_TRUE(generate_image(dir.file("a"), 4 << 20, options).ok());
    ASSERT_TRUE(generate_image(dir.file("b"), 4 << 20, options).ok());
    options.seed = 8;
    ASSERT_TRUE(generate_image(dir.file("c"), 4 << 20, options).ok());
    EXPECT_EQ(test::read_file(dir.file("a")), test::read_file(dir.file("b")));
    EXPECT_NE(test::read_file(dir.file("a")), test::read_file(dir.file("c")));
}

TEST(GenerateImage, SparseZerosAreHolesWithTheSameBytes) {
    TempDir dir;
    GenerateOptions options{0.5, 0.1, 3, kPage, false};
    ASSERT_TRUE(generate_image(dir.file("full"), 8 << 20, options).ok());
    options.sparse_zeros = true;
    auto stats = generate_image(dir.file("sparse"), 8 << 20, options);
    ASSERT_TRUE(stats.ok());
    EXPECT_EQ(test::read_file(dir.file("full")), test::read_file(dir.file("sparse")));

    auto fd = FileDesc::open(dir.file("sparse").c_str(), O_RDONLY);
    ASSERT_TRUE(fd.ok());
    auto extents = data_extents(fd->get(), 8 << 20);
    ASSERT_TRUE(extents.ok());
    uint64_t data_bytes = 0;
    for (const FileExtent& e : *extents) {
        data_bytes += e.length_bytes;
        for (uint64_t off = e.offset_bytes; off < e.offset_bytes + e.length_bytes; off += kPage) {
            EXPECT_NE(classify_page(options, off / kPage), PageKind::zero) << "zero page at " << off << " is data";
        }
    }
    EXPECT_EQ(data_bytes, (stats->pages - stats->zero_pages) * kPage);
}

TEST(GenerateImage, HugePageGranularity) {
    TempDir dir;
    const uint64_t huge = 2 << 20;
    GenerateOptions options{0.5, 0.0, 11, huge, false};
    auto stats = generate_image(dir.file("mem"), 32 << 20, options);
    ASSERT_TRUE(stats.ok());
    EXPECT_EQ(stats->pages, 16u);
    std::vector<std::byte> bytes = test::read_file(dir.file("mem"));
    for (uint64_t unit = 0; unit < 16; ++unit) {
        const std::byte* p = bytes.data() + unit * huge;
        if (classify_page(options, unit) == PageKind::zero) {
            EXPECT_TRUE(all_zero(p, huge)) << "unit " << unit;
            continue;
        }
        for (uint64_t block = 0; block < huge; block += kPage) {
            EXPECT_EQ(read_stamp(p + block), unit * huge + block);
        }
    }
}

TEST(GenerateImage, RejectsSizeNotMultipleOfPage) {
    TempDir dir;
    auto stats = generate_image(dir.file("mem"), 4096 + 1, GenerateOptions{});
    ASSERT_FALSE(stats.ok());
    EXPECT_EQ(stats.error().code, EINVAL);
}

TEST(DiffAndFlatten, FlattenedEqualsBaseWithChangedPagesReplaced) {
    TempDir dir;
    const uint64_t size = 8 << 20;
    ASSERT_TRUE(generate_image(dir.file("base"), size, GenerateOptions{0.3, 0.1, 5, kPage, true}).ok());
    DiffOptions first;
    first.changed_fraction = 0.10;
    first.seed = 21;
    DiffOptions second;
    second.changed_fraction = 0.05;
    second.zero_fraction_of_changed = 0.5;
    second.seed = 22;
    auto d1 = generate_diff(dir.file("base"), dir.file("d1"), first);
    auto d2 = generate_diff(dir.file("base"), dir.file("d2"), second);
    ASSERT_TRUE(d1.ok() && d2.ok());
    EXPECT_GT(d1->changed_offsets_bytes.size(), 0u);
    EXPECT_GT(d2->zeroed_pages, 0u);

    // The diff is sparse: exactly the changed pages are data.
    for (auto [name, result] : {std::pair{"d1", &*d1}, std::pair{"d2", &*d2}}) {
        auto fd = FileDesc::open(dir.file(name).c_str(), O_RDONLY);
        ASSERT_TRUE(fd.ok());
        EXPECT_EQ(*file_size(fd->get()), size);
        auto extents = data_extents(fd->get(), size);
        ASSERT_TRUE(extents.ok());
        std::vector<uint64_t> data_pages;
        for (const FileExtent& e : *extents) {
            for (uint64_t off = e.offset_bytes; off < e.offset_bytes + e.length_bytes; off += kPage) {
                data_pages.push_back(off);
            }
        }
        EXPECT_EQ(data_pages, result->changed_offsets_bytes) << name;
    }

    ASSERT_TRUE(flatten(dir.file("base"), {dir.file("d1"), dir.file("d2")}, dir.file("flat")).ok());
    const auto base = test::page_hashes(dir.file("base"));
    const auto h1 = test::page_hashes(dir.file("d1"));
    const auto h2 = test::page_hashes(dir.file("d2"));
    const auto flat = test::page_hashes(dir.file("flat"));
    ASSERT_EQ(flat.size(), base.size());
    const std::set<uint64_t> changed1(d1->changed_offsets_bytes.begin(), d1->changed_offsets_bytes.end());
    const std::set<uint64_t> changed2(d2->changed_offsets_bytes.begin(), d2->changed_offsets_bytes.end());
    uint64_t replaced = 0;
    for (uint64_t i = 0; i < flat.size(); ++i) {
        const uint64_t off = i * kPage;
        const uint64_t want = changed2.count(off) ? h2[i] : changed1.count(off) ? h1[i] : base[i];
        replaced += want != base[i];
        ASSERT_EQ(flat[i], want) << "page " << i;
    }
    EXPECT_GT(replaced, 0u);
}

TEST(DiffAndFlatten, RefusesDiffOfAnotherSize) {
    TempDir dir;
    ASSERT_TRUE(generate_image(dir.file("base"), 1 << 20, GenerateOptions{}).ok());
    ASSERT_TRUE(generate_image(dir.file("other"), 2 << 20, GenerateOptions{}).ok());
    auto flat = flatten(dir.file("base"), {dir.file("other")}, dir.file("flat"));
    ASSERT_FALSE(flat.ok());
    EXPECT_EQ(flat.error().code, EINVAL);
}

TEST(ExpectedImageTest, HashesAndBounds) {
    TempDir dir;
    ASSERT_TRUE(generate_image(dir.file("mem"), 1 << 20, GenerateOptions{}).ok());
    auto image = ExpectedImage::open(dir.file("mem"));
    ASSERT_TRUE(image.ok());
    const auto hashes = test::page_hashes(dir.file("mem"));
    EXPECT_EQ(image->hash(5 * kPage, kPage), hashes[5]);
    EXPECT_FALSE(image->hash((1 << 20) - kPage / 2, kPage).has_value());
    std::vector<std::byte> zeros(kPage);
    EXPECT_EQ(zero_hash(kPage), hash_bytes(zeros.data(), kPage));
}

}  // namespace
}  // namespace ringpager::sim
