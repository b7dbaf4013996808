// Whole-buffer file I/O helpers and written-extent discovery (SEEK_DATA/SEEK_HOLE).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "ringpager/result.hpp"

namespace ringpager::sim {

struct FileExtent {
    uint64_t offset_bytes = 0;
    uint64_t length_bytes = 0;
};

Result<uint64_t> file_size(int fd);
// Writes/reads exactly `len` bytes at `offset` (retrying short transfers and EINTR).
// pread_all fails with EIO on end of file.
Result<void> pwrite_all(int fd, const void* buf, size_t len, uint64_t offset);
Result<void> pread_all(int fd, void* buf, size_t len, uint64_t offset);
// The written (data) extents of `fd` within [0, size_bytes), in order.
Result<std::vector<FileExtent>> data_extents(int fd, uint64_t size_bytes);
// Copies every data extent of `src` to the same offsets of `dst`.
Result<void> copy_data_extents(int src, int dst, uint64_t size_bytes);

}  // namespace ringpager::sim
