// Synthetic memory file generation, diffs and flattening.
#include "guestsim/image.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "common/regular_file.hpp"
#include "guestsim/file_io.hpp"
#include "guestsim/prng.hpp"
#include "ringpager/file_desc.hpp"

namespace ringpager::sim {
namespace {

constexpr uint64_t kBlockBytes = 4096;
constexpr uint64_t kChunkBytes = 8 << 20;  // generation writes in 8 MiB slabs
constexpr int kDuplicateAttempts = 32;

// Independent PRNG streams, so that changing one decision never shifts another.
enum Stream : uint64_t { kind_stream = 1, duplicate_stream = 2, content_stream = 3, changed_stream = 4,
                         changed_zero_stream = 5, diff_content_stream = 6, zero_run_stream = 7 };

// Content seeds of diffs differ from the base's for the same user seed.
constexpr uint64_t kDiffSeedTag = 0xd1ff'd1ff'd1ff'd1ffULL;

bool is_valid_page_size(uint64_t page_size_bytes) {
    return page_size_bytes >= kBlockBytes && page_size_bytes % kBlockBytes == 0;
}

// The class of a page before the "a duplicate needs a source" fallback.
PageKind raw_kind(const GenerateOptions& options, uint64_t page_index) {
    if (options.zero_run_pages > 1) {
        // Zero or not is drawn once per run; duplicate or distinct per page,
        // scaled so the fractions of the whole image stay as asked.
        const uint64_t run = page_index / options.zero_run_pages;
        if (unit_interval(mix3(options.seed, run, zero_run_stream)) < options.zero_fraction) return PageKind::zero;
        const double non_zero = 1.0 - options.zero_fraction;
        const double u = unit_interval(mix3(options.seed, page_index, kind_stream));
        return non_zero > 0 && u < options.duplicate_fraction / non_zero ? PageKind::duplicate : PageKind::distinct;
    }
    const double u = unit_interval(mix3(options.seed, page_index, kind_stream));
    if (u < options.zero_fraction) return PageKind::zero;
    if (u < options.zero_fraction + options.duplicate_fraction) return PageKind::duplicate;
    return PageKind::distinct;
}

void fill_page(const GenerateOptions& options, uint64_t page_index, std::span<std::byte> page) {
    uint64_t source = 0;
    switch (classify_page(options, page_index, &source)) {
        case PageKind::zero:
            std::memset(page.data(), 0, page.size());
            break;
        case PageKind::duplicate:
            fill_stamped_page(page, source * options.page_size_bytes, mix3(options.seed, source, content_stream));
            break;
        case PageKind::distinct:
            fill_stamped_page(page, page_index * options.page_size_bytes,
                              mix3(options.seed, page_index, content_stream));
            break;
    }
}

// Writes the non-zero pages of a slab as runs; zero pages stay holes.
Result<void> write_sparse_slab(int fd, const std::byte* slab, uint64_t slab_offset, uint64_t slab_bytes,
                               uint64_t page_size_bytes, const std::vector<bool>& page_is_zero) {
    uint64_t run_start = 0;
    bool in_run = false;
    const uint64_t pages = slab_bytes / page_size_bytes;
    for (uint64_t i = 0; i <= pages; ++i) {
        const bool data = i < pages && !page_is_zero[i];
        if (data && !in_run) {
            run_start = i;
            in_run = true;
        } else if (!data && in_run) {
            in_run = false;
            const uint64_t off = run_start * page_size_bytes;
            auto written = pwrite_all(fd, slab + off, (i - run_start) * page_size_bytes, slab_offset + off);
            if (!written) return written;
        }
    }
    return {};
}

}  // namespace

void fill_stamped_page(std::span<std::byte> page, uint64_t file_offset_bytes, uint64_t content_seed) {
    Xoshiro256 rng(content_seed);
    const size_t words = page.size() / sizeof(uint64_t);
    auto* out = reinterpret_cast<uint64_t*>(page.data());
    for (size_t i = 0; i < words; ++i) out[i] = rng.next();
    for (uint64_t block = 0; block * kBlockBytes < page.size(); ++block) {
        const uint64_t stamp = file_offset_bytes + block * kBlockBytes;
        std::memcpy(page.data() + block * kBlockBytes, &stamp, sizeof stamp);
    }
}

uint64_t read_stamp(const std::byte* block) {
    uint64_t stamp = 0;
    std::memcpy(&stamp, block, sizeof stamp);
    return stamp;
}

PageKind classify_page(const GenerateOptions& options, uint64_t page_index, uint64_t* source_page_index) {
    const PageKind kind = raw_kind(options, page_index);
    if (kind != PageKind::duplicate) return kind;
    // A duplicate copies a random earlier distinct page; with none found in a
    // few tries (only near the start of the file) the page is distinct itself.
    for (int attempt = 0; attempt < kDuplicateAttempts && page_index > 0; ++attempt) {
        const uint64_t candidate = mix3(options.seed, page_index, duplicate_stream + 16 * attempt) % page_index;
        if (raw_kind(options, candidate) == PageKind::distinct) {
            if (source_page_index != nullptr) *source_page_index = candidate;
            return PageKind::duplicate;
        }
    }
    return PageKind::distinct;
}

Result<ImageStats> generate_image(const std::string& path, uint64_t size_bytes, const GenerateOptions& options) {
    if (!is_valid_page_size(options.page_size_bytes) || size_bytes % options.page_size_bytes != 0) {
        return Error{EINVAL, "generate_image: size must be a multiple of the page size (itself a multiple of 4 KiB)"};
    }
    auto fd = FileDesc::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (!fd) return fd.error();
    if (::ftruncate(fd->get(), static_cast<off_t>(size_bytes)) != 0) return errno_error("ftruncate");

    const uint64_t slab_capacity = std::max(kChunkBytes - kChunkBytes % options.page_size_bytes, options.page_size_bytes);
    std::vector<std::byte> slab(slab_capacity);
    std::vector<bool> page_is_zero(slab_capacity / options.page_size_bytes);
    ImageStats stats;
    for (uint64_t slab_offset = 0; slab_offset < size_bytes; slab_offset += slab_capacity) {
        const uint64_t slab_bytes = std::min(slab_capacity, size_bytes - slab_offset);
        const uint64_t first_page = slab_offset / options.page_size_bytes;
        for (uint64_t i = 0; i * options.page_size_bytes < slab_bytes; ++i) {
            const uint64_t page_index = first_page + i;
            std::span<std::byte> page(slab.data() + i * options.page_size_bytes, options.page_size_bytes);
            const PageKind kind = classify_page(options, page_index);
            page_is_zero[i] = kind == PageKind::zero;
            stats.zero_pages += kind == PageKind::zero;
            stats.duplicate_pages += kind == PageKind::duplicate;
            stats.distinct_pages += kind == PageKind::distinct;
            fill_page(options, page_index, page);
        }
        auto written = options.sparse_zeros
                           ? write_sparse_slab(fd->get(), slab.data(), slab_offset, slab_bytes,
                                               options.page_size_bytes, page_is_zero)
                           : pwrite_all(fd->get(), slab.data(), slab_bytes, slab_offset);
        if (!written) return written.error();
    }
    stats.pages = size_bytes / options.page_size_bytes;
    return stats;
}

Result<DiffResult> generate_diff(const std::string& base_path, const std::string& out_path, const DiffOptions& options) {
    if (!is_valid_page_size(options.page_size_bytes)) return Error{EINVAL, "generate_diff: bad page size"};
    std::string line;  // unused: this function reports an Error, not a line
    auto base = open_regular_file(base_path, "base", line);
    if (!base) return base.error();
    auto base_size = file_size(base->get());
    if (!base_size) return base_size.error();
    if (*base_size % options.page_size_bytes != 0) {
        return Error{EINVAL, "generate_diff: base size is not a multiple of the page size"};
    }
    auto out = FileDesc::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (!out) return out.error();
    if (::ftruncate(out->get(), static_cast<off_t>(*base_size)) != 0) return errno_error("ftruncate");

    DiffResult result;
    std::vector<std::byte> page(options.page_size_bytes);
    const uint64_t content_seed = options.seed ^ kDiffSeedTag;
    for (uint64_t index = 0; index * options.page_size_bytes < *base_size; ++index) {
        if (unit_interval(mix3(options.seed, index, changed_stream)) >= options.changed_fraction) continue;
        const uint64_t offset = index * options.page_size_bytes;
        if (unit_interval(mix3(options.seed, index, changed_zero_stream)) < options.zero_fraction_of_changed) {
            std::memset(page.data(), 0, page.size());
            ++result.zeroed_pages;
        } else {
            fill_stamped_page(page, offset, mix3(content_seed, index, diff_content_stream));
        }
        auto written = pwrite_all(out->get(), page.data(), page.size(), offset);
        if (!written) return written.error();
        result.changed_offsets_bytes.push_back(offset);
    }
    return result;
}

Result<void> flatten(const std::string& base_path, const std::vector<std::string>& diff_paths,
                     const std::string& out_path) {
    std::string line;  // unused: this function reports an Error, not a line
    auto base = open_regular_file(base_path, "base", line);
    if (!base) return base.error();
    auto base_size = file_size(base->get());
    if (!base_size) return base_size.error();
    std::vector<FileDesc> diffs;
    for (const std::string& diff_path : diff_paths) {
        auto diff = open_regular_file(diff_path, "diff", line);
        if (!diff) return diff.error();
        auto diff_size = file_size(diff->get());
        if (!diff_size) return diff_size.error();
        if (*diff_size != *base_size) return Error{EINVAL, "flatten: a diff file's size differs from the base's"};
        diffs.push_back(std::move(*diff));
    }
    auto out = FileDesc::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (!out) return out.error();
    if (::ftruncate(out->get(), static_cast<off_t>(*base_size)) != 0) return errno_error("ftruncate");
    auto copied = copy_data_extents(base->get(), out->get(), *base_size);
    if (!copied) return copied;
    for (const FileDesc& diff : diffs) {
        copied = copy_data_extents(diff.get(), out->get(), *base_size);
        if (!copied) return copied;
    }
    return {};
}

}  // namespace ringpager::sim
