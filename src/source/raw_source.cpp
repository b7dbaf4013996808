// Raw memory file source: Firecracker's memory file, region bytes at `offset`.
// Holes (sparse files, Firecracker diff snapshots) read as zero and are found
// once at open with SEEK_DATA/SEEK_HOLE, so the fault path never reads them.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "common/regular_file.hpp"
#include "ringpager/file_desc.hpp"
#include "ringpager/source.hpp"

namespace ringpager {
namespace {

constexpr uint64_t kRawBlockBytes = 4096;

struct DataRange {
    uint64_t start;
    uint64_t end;
};

class RawSource final : public Source {
public:
    RawSource(std::string path, FileDesc fd, uint64_t size, std::vector<DataRange> data)
        : path_(std::move(path)), fd_(std::move(fd)), fds_{fd_.get()}, size_(size), data_(std::move(data)) {}

    uint64_t size_bytes() const override { return size_; }
    uint64_t block_size_bytes() const override { return kRawBlockBytes; }
    std::span<const int> file_fds() const override { return fds_; }

    SourceExtent lookup(uint64_t offset, uint64_t max_length_bytes) const override {
        const uint64_t limit = std::min(size_, offset + max_length_bytes);
        // First data range that ends after `offset`.
        auto it = std::upper_bound(data_.begin(), data_.end(), offset,
                                   [](uint64_t off, const DataRange& r) { return off < r.end; });
        SourceExtent extent;
        if (it != data_.end() && it->start <= offset) {
            extent.kind = SourceExtent::Kind::data;
            extent.file_offset = offset;
            extent.length_bytes = std::min(limit, it->end) - offset;
        } else {
            extent.kind = SourceExtent::Kind::zero;
            const uint64_t hole_end = it == data_.end() ? size_ : it->start;
            extent.length_bytes = std::min(limit, hole_end) - offset;
        }
        return extent;
    }

    std::string describe() const override {
        return "raw memory file " + path_ + " (" + std::to_string(size_ >> 20) + " MiB)";
    }

private:
    std::string path_;
    FileDesc fd_;
    int fds_[1];
    uint64_t size_;
    std::vector<DataRange> data_;  // sorted, disjoint, block aligned
};

// Finds the data ranges of a possibly sparse file, widened to whole blocks.
bool scan_data_ranges(int fd, uint64_t size, std::vector<DataRange>& out, std::string& error) {
    off_t pos = 0;
    while (static_cast<uint64_t>(pos) < size) {
        const off_t data = lseek(fd, pos, SEEK_DATA);
        if (data < 0) {
            if (errno == ENXIO) break;  // no data after pos: the rest is a hole
            if (errno == EINVAL) {      // filesystem without SEEK_DATA: all data
                out.assign({DataRange{0, size}});
                return true;
            }
            error = std::string("lseek(SEEK_DATA): ") + std::strerror(errno);
            return false;
        }
        off_t hole = lseek(fd, data, SEEK_HOLE);
        if (hole < 0) {
            error = std::string("lseek(SEEK_HOLE): ") + std::strerror(errno);
            return false;
        }
        const uint64_t start = static_cast<uint64_t>(data) / kRawBlockBytes * kRawBlockBytes;
        uint64_t end = (static_cast<uint64_t>(hole) + kRawBlockBytes - 1) / kRawBlockBytes * kRawBlockBytes;
        end = std::min(end, (size + kRawBlockBytes - 1) / kRawBlockBytes * kRawBlockBytes);
        if (!out.empty() && out.back().end >= start)
            out.back().end = std::max(out.back().end, end);
        else
            out.push_back(DataRange{start, end});
        pos = hole;
    }
    return true;
}

}  // namespace

std::unique_ptr<Source> open_raw_source(const std::string& path, std::string& error) {
    struct stat st {};
    auto fd = open_regular_file(path, "memory file", error, &st);
    if (!fd) return nullptr;
    const uint64_t size = static_cast<uint64_t>(st.st_size);
    if (size == 0 || size % kRawBlockBytes != 0) {
        error = "memory file " + path + " has size " + std::to_string(size) +
                ", not a non-zero multiple of 4096: truncated or not a memory snapshot";
        return nullptr;
    }
    std::vector<DataRange> data;
    std::string scan_error;
    if (!scan_data_ranges(fd->get(), size, data, scan_error)) {
        error = "cannot scan memory file " + path + ": " + scan_error;
        return nullptr;
    }
    return std::make_unique<RawSource>(path, std::move(*fd), size, std::move(data));
}

}  // namespace ringpager
