#include "snapshot/layered/input_plan.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "snapshot/layered/file_io.hpp"

namespace ringpager::layered {
namespace {

// Appends the data regions of `in` found with SEEK_DATA/SEEK_HOLE. A file
// system without hole reporting makes the whole file one data region.
std::string scan_data(BuildInput& in) {
    uint64_t offset = 0;
    while (offset < in.size_bytes) {
        off_t data = ::lseek(in.file.get(), static_cast<off_t>(offset), SEEK_DATA);
        if (data < 0) {
            if (errno == ENXIO) break;   // no data after `offset`
            if (errno == EINVAL && offset == 0) {
                in.data.push_back({0, in.size_bytes});
                break;
            }
            return in.role + " " + in.path + ": " + errno_text("lseek(SEEK_DATA)");
        }
        off_t hole = ::lseek(in.file.get(), data, SEEK_HOLE);
        if (hole < 0) return in.role + " " + in.path + ": " + errno_text("lseek(SEEK_HOLE)");
        auto begin = static_cast<uint64_t>(data);
        uint64_t end = std::min(static_cast<uint64_t>(hole), in.size_bytes);
        if (begin >= end) break;
        in.data.push_back({begin, end});
        offset = end;
    }
    return {};
}

// Splits block run [first, end) into tasks of at most `buffer_bytes`.
void add_tasks(uint64_t first, uint64_t end, uint64_t block_size, uint64_t buffer_bytes, InputPlan& plan) {
    uint64_t per_task = buffer_bytes / block_size;
    for (uint64_t b = first; b < end; b += per_task) {
        uint64_t count = std::min(per_task, end - b);
        plan.tasks.push_back({b * block_size, count * block_size});
        plan.read_bytes += count * block_size;
    }
}

}  // namespace

std::string open_input(const std::string& path, const std::string& role, BuildInput& out) {
    out.path = path;
    out.role = role;
    auto file = FileDesc::open(path.c_str(), O_RDONLY);
    if (!file) return role + " " + path + ": " + file.error().message();
    out.file = std::move(*file);
    struct stat st {};
    if (::fstat(out.file.get(), &st) != 0) return role + " " + path + ": " + errno_text("fstat");
    if (!S_ISREG(st.st_mode)) return role + " " + path + ": not a regular file";
    out.size_bytes = static_cast<uint64_t>(st.st_size);
    out.device = st.st_dev;
    out.inode = st.st_ino;
    return scan_data(out);
}

std::vector<uint16_t> last_full_writers(std::span<const BuildInput> inputs, uint64_t block_size_bytes,
                                        uint64_t block_count) {
    std::vector<uint16_t> last(block_count, 0);
    for (size_t i = 0; i < inputs.size(); ++i) {
        for (const ByteRange& r : inputs[i].data) {
            uint64_t first = (r.begin + block_size_bytes - 1) / block_size_bytes;
            uint64_t end = r.end / block_size_bytes;
            for (uint64_t b = first; b < end; ++b) last[b] = static_cast<uint16_t>(i + 1);
        }
    }
    return last;
}

InputPlan plan_reads(const BuildInput& input, uint32_t index, const std::vector<uint16_t>& last_full,
                     uint64_t block_size_bytes, uint64_t buffer_bytes, uint64_t skip_gap_bytes) {
    // Blocks touched by data, merged: two regions can share a partly covered block.
    std::vector<ByteRange> runs;
    for (const ByteRange& r : input.data) {
        uint64_t first = r.begin / block_size_bytes;
        uint64_t end = (r.end + block_size_bytes - 1) / block_size_bytes;
        if (!runs.empty() && first <= runs.back().end) {
            runs.back().end = std::max(runs.back().end, end);
        } else {
            runs.push_back({first, end});
        }
    }
    InputPlan plan;
    uint64_t gap_blocks = std::max<uint64_t>(1, skip_gap_bytes / block_size_bytes);
    for (const ByteRange& run : runs) {
        plan.touched_blocks += run.end - run.begin;
        // Read through short shadowed gaps (one large read beats several small
        // ones); skip long ones.
        uint64_t keep_first = 0, keep_end = 0;
        bool keeping = false;
        for (uint64_t b = run.begin; b < run.end; ++b) {
            if (shadowed(last_full, b, index)) continue;
            if (keeping && b - keep_end < gap_blocks) {
                keep_end = b + 1;
                continue;
            }
            if (keeping) add_tasks(keep_first, keep_end, block_size_bytes, buffer_bytes, plan);
            keep_first = b;
            keep_end = b + 1;
            keeping = true;
        }
        if (keeping) add_tasks(keep_first, keep_end, block_size_bytes, buffer_bytes, plan);
    }
    return plan;
}

}  // namespace ringpager::layered
