#include "snapshot/layered/input_plan.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "common/regular_file.hpp"
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
    struct stat st {};
    std::string error;
    auto file = open_regular_file(path, role, error, &st);
    if (!file) return error;
    out.file = std::move(*file);
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
                     uint64_t block_size_bytes, uint64_t buffer_bytes, uint64_t gap_bytes) {
    InputPlan plan;
    // Blocks to read: touched by data and not replaced later. Reads run through
    // gaps shorter than `gap_bytes` (a hole reads as zeros for free, and one
    // large read beats many small ones); the builder skips those blocks.
    uint64_t gap_blocks = std::max<uint64_t>(1, gap_bytes / block_size_bytes);
    uint64_t read_first = 0, read_end = 0, last_touched_end = 0;
    bool reading = false;
    for (const ByteRange& r : input.data) {
        // Two regions can share a partly covered block: count it once.
        uint64_t first = std::max(r.begin / block_size_bytes, last_touched_end);
        uint64_t end = (r.end + block_size_bytes - 1) / block_size_bytes;
        if (first >= end) continue;
        plan.touched_blocks += end - first;
        last_touched_end = end;
        for (uint64_t b = first; b < end; ++b) {
            if (shadowed(last_full, b, index)) continue;
            if (reading && b - read_end < gap_blocks) {
                read_end = b + 1;
                continue;
            }
            if (reading) add_tasks(read_first, read_end, block_size_bytes, buffer_bytes, plan);
            read_first = b;
            read_end = b + 1;
            reading = true;
        }
    }
    if (reading) add_tasks(read_first, read_end, block_size_bytes, buffer_bytes, plan);
    return plan;
}

}  // namespace ringpager::layered
