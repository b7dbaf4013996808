// Verification of guest memory and balloon-style discards.
#include <sys/mman.h>

#include <algorithm>
#include <cstdio>
#include <numeric>

#include "guestsim/clock.hpp"
#include "guestsim/guest.hpp"
#include "guestsim/prng.hpp"

namespace ringpager::sim {
std::string VerifyReport::describe() const {
    std::string text = "verify: " + std::to_string(pages_checked) + " pages checked (" +
                       std::to_string(zero_pages_checked) + " expected zero), " + std::to_string(mismatches) +
                       " mismatches";
    for (const Mismatch& m : first_mismatches) {
        char line[160];
        std::snprintf(line, sizeof line, "; page %llu region %llu addr 0x%llx file offset 0x%llx%s",
                      static_cast<unsigned long long>(m.guest_page_index),
                      static_cast<unsigned long long>(m.region_index), static_cast<unsigned long long>(m.addr),
                      static_cast<unsigned long long>(m.file_offset_bytes),
                      m.expected_zero ? " (expected zeros)" : "");
        text += line;
    }
    return text;
}

VerifyReport Guest::verify(const ExpectedImage& expected, VerifyScope scope) const {
    VerifyReport report;
    const uint64_t start = monotonic_ns();
    const uint64_t zeros = zero_hash(page_size_bytes_);
    for (uint64_t page = 0; page < page_count_; ++page) {
        if (scope == VerifyScope::touched_pages && !page_touched(page)) continue;
        const std::byte* addr = page_address(page);
        // Reading the page faults it in through the handler when it is missing.
        const uint64_t seen = hash_bytes(addr, page_size_bytes_);
        const uint64_t file_offset = file_offset_of_page(page);
        const bool expect_zero = page_discarded(page);
        std::optional<uint64_t> want = expect_zero ? zeros : expected.hash(file_offset, page_size_bytes_);
        ++report.pages_checked;
        report.zero_pages_checked += expect_zero;
        if (want && *want == seen) continue;
        ++report.mismatches;
        if (report.first_mismatches.size() < VerifyReport::kMaxListedMismatches) {
            report.first_mismatches.push_back(Mismatch{page, region_of_page(page), reinterpret_cast<uint64_t>(addr),
                                                       file_offset, expect_zero});
        }
    }
    report.total_ns = monotonic_ns() - start;
    return report;
}

Result<void> Guest::discard(uint64_t guest_offset_bytes, uint64_t length_bytes) {
    if (guest_offset_bytes % page_size_bytes_ != 0 || length_bytes % page_size_bytes_ != 0 ||
        guest_offset_bytes > memory_bytes() || length_bytes > memory_bytes() - guest_offset_bytes) {
        return Error{EINVAL, "discard: range must be page aligned and inside guest memory"};
    }
    uint64_t page = guest_offset_bytes / page_size_bytes_;
    const uint64_t end_page = page + length_bytes / page_size_bytes_;
    while (page < end_page) {
        // One madvise per region: a linear range may continue in the next region.
        const size_t r = region_of_page(page);
        const uint64_t region_end_page = region_first_page_[r] + regions_[r].page_count();
        const uint64_t run_end = std::min(end_page, region_end_page);
        // SAFETY: the range lies inside region r's mapping, which this Guest owns.
        if (::madvise(page_address(page), (run_end - page) * page_size_bytes_, MADV_DONTNEED) != 0) {
            return errno_error("madvise(MADV_DONTNEED)");
        }
        for (uint64_t p = page; p < run_end; ++p) discarded_[p] = 1;
        page = run_end;
    }
    return {};
}

Result<std::vector<uint64_t>> Guest::discard_random(double fraction, uint64_t chunk_bytes, uint64_t seed) {
    if (chunk_bytes == 0 || chunk_bytes % page_size_bytes_ != 0) {
        return Error{EINVAL, "discard_random: chunk must be a multiple of the page size"};
    }
    const uint64_t chunk_pages = chunk_bytes / page_size_bytes_;
    const uint64_t chunk_count = (page_count_ + chunk_pages - 1) / chunk_pages;
    const auto wanted = static_cast<uint64_t>(std::clamp(fraction, 0.0, 1.0) * static_cast<double>(chunk_count) + 0.5);
    std::vector<uint64_t> chunks(chunk_count);
    std::iota(chunks.begin(), chunks.end(), uint64_t{0});
    Xoshiro256 rng(seed ^ 0xba11'00ba'1100'ba11ULL);
    for (size_t i = chunks.size(); i > 1; --i) std::swap(chunks[i - 1], chunks[rng.below(i)]);
    chunks.resize(wanted);
    std::sort(chunks.begin(), chunks.end());
    std::vector<uint64_t> pages;
    for (uint64_t chunk : chunks) {
        const uint64_t first = chunk * chunk_pages;
        const uint64_t last = std::min(first + chunk_pages, page_count_);
        auto discarded = discard(first * page_size_bytes_, (last - first) * page_size_bytes_);
        if (!discarded) return discarded.error();
        for (uint64_t p = first; p < last; ++p) pages.push_back(p);
    }
    return pages;
}

}  // namespace ringpager::sim
