// Small blocking file helpers for the layered snapshot code: whole reads and
// writes that loop over short transfers and EINTR, with errors phrased as one
// line naming the file. Bulk input is read through UringReader instead.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace ringpager::layered {

// Reads exactly bytes.size() bytes at `offset`. Returns "" or an error naming `path`.
std::string pread_exact(int fd, std::span<std::byte> bytes, uint64_t offset, const std::string& path);

// Writes all of `bytes` at `offset`.
std::string pwrite_all(int fd, std::span<const std::byte> bytes, uint64_t offset, const std::string& path);

// Writes the buffers of `iov` back to back starting at `offset`. Consumes `iov`.
std::string pwritev_all(int fd, std::vector<iovec>& iov, uint64_t offset, const std::string& path);

// The errno text of the last failed call: "open: No such file or directory".
std::string errno_text(const char* call);

// True when all `bytes` bytes at `p` are zero; `bytes` is a multiple of 64.
bool is_zero_block(const std::byte* p, size_t bytes);

// "4 KiB", "2 MiB", "1.50 GiB": binary units for humans.
std::string format_bytes(uint64_t bytes);

// The directory a manifest's relative layer paths start from.
std::string parent_directory(const std::string& path);

}  // namespace ringpager::layered
