// File I/O helpers: full transfers and sparse-file extent walking.
#include "guestsim/file_io.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

namespace ringpager::sim {

Result<uint64_t> file_size(int fd) {
    struct stat st {};
    if (::fstat(fd, &st) != 0) return errno_error("fstat");
    return static_cast<uint64_t>(st.st_size);
}

Result<void> pwrite_all(int fd, const void* buf, size_t len, uint64_t offset) {
    const auto* p = static_cast<const char*>(buf);
    while (len > 0) {
        ssize_t n = ::pwrite(fd, p, len, static_cast<off_t>(offset));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return errno_error("pwrite");
        p += n;
        len -= static_cast<size_t>(n);
        offset += static_cast<uint64_t>(n);
    }
    return {};
}

Result<void> pread_all(int fd, void* buf, size_t len, uint64_t offset) {
    auto* p = static_cast<char*>(buf);
    while (len > 0) {
        ssize_t n = ::pread(fd, p, len, static_cast<off_t>(offset));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return errno_error("pread");
        if (n == 0) return Error{EIO, "pread: unexpected end of file"};
        p += n;
        len -= static_cast<size_t>(n);
        offset += static_cast<uint64_t>(n);
    }
    return {};
}

Result<std::vector<FileExtent>> data_extents(int fd, uint64_t size_bytes) {
    std::vector<FileExtent> extents;
    uint64_t pos = 0;
    while (pos < size_bytes) {
        off_t data = ::lseek(fd, static_cast<off_t>(pos), SEEK_DATA);
        if (data < 0 && errno == ENXIO) break;  // nothing but hole up to the end
        if (data < 0) return errno_error("lseek(SEEK_DATA)");
        off_t hole = ::lseek(fd, data, SEEK_HOLE);
        if (hole < 0) return errno_error("lseek(SEEK_HOLE)");
        const uint64_t end = std::min<uint64_t>(static_cast<uint64_t>(hole), size_bytes);
        if (static_cast<uint64_t>(data) >= end) break;
        extents.push_back({static_cast<uint64_t>(data), end - static_cast<uint64_t>(data)});
        pos = end;
    }
    return extents;
}

Result<void> copy_data_extents(int src, int dst, uint64_t size_bytes) {
    auto extents = data_extents(src, size_bytes);
    if (!extents) return extents.error();
    constexpr size_t kBufferBytes = 8 << 20;
    std::vector<char> buffer(kBufferBytes);
    for (const FileExtent& extent : *extents) {
        for (uint64_t done = 0; done < extent.length_bytes;) {
            const size_t len = static_cast<size_t>(std::min<uint64_t>(kBufferBytes, extent.length_bytes - done));
            auto r = pread_all(src, buffer.data(), len, extent.offset_bytes + done);
            if (!r) return r;
            auto w = pwrite_all(dst, buffer.data(), len, extent.offset_bytes + done);
            if (!w) return w;
            done += len;
        }
    }
    return {};
}

}  // namespace ringpager::sim
