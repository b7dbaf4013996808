#include "snapshot/layered/file_io.hpp"

#include <limits.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>

namespace ringpager::layered {

std::string errno_text(const char* call) {
    return std::string(call) + ": " + std::strerror(errno);
}

std::string pread_exact(int fd, std::span<std::byte> bytes, uint64_t offset, const std::string& path) {
    size_t done = 0;
    while (done < bytes.size()) {
        ssize_t n = ::pread(fd, bytes.data() + done, bytes.size() - done, static_cast<off_t>(offset + done));
        if (n < 0) {
            if (errno == EINTR) continue;
            return path + ": " + errno_text("pread") + " (offset " + std::to_string(offset + done) + ")";
        }
        if (n == 0) {
            return path + ": unexpected end of file at offset " + std::to_string(offset + done) +
                   " (the file is shorter than expected)";
        }
        done += static_cast<size_t>(n);
    }
    return {};
}

std::string pwrite_all(int fd, std::span<const std::byte> bytes, uint64_t offset, const std::string& path) {
    size_t done = 0;
    while (done < bytes.size()) {
        ssize_t n = ::pwrite(fd, bytes.data() + done, bytes.size() - done, static_cast<off_t>(offset + done));
        if (n < 0) {
            if (errno == EINTR) continue;
            return path + ": " + errno_text("pwrite");
        }
        done += static_cast<size_t>(n);
    }
    return {};
}

std::string pwritev_all(int fd, std::vector<iovec>& iov, uint64_t offset, const std::string& path) {
    size_t first = 0;
    while (first < iov.size()) {
        int count = static_cast<int>(std::min<size_t>(iov.size() - first, IOV_MAX));
        ssize_t n = ::pwritev(fd, iov.data() + first, count, static_cast<off_t>(offset));
        if (n < 0) {
            if (errno == EINTR) continue;
            return path + ": " + errno_text("pwritev");
        }
        offset += static_cast<uint64_t>(n);
        // Skip the buffers written completely and trim a partly written one.
        auto left = static_cast<size_t>(n);
        while (first < iov.size() && left >= iov[first].iov_len) {
            left -= iov[first].iov_len;
            ++first;
        }
        if (left > 0) {
            iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + left;
            iov[first].iov_len -= left;
        }
    }
    iov.clear();
    return {};
}

bool is_zero_block(const std::byte* p, size_t bytes) {
    // Eight words a step with one branch: the compiler vectorises the ORs.
    for (size_t at = 0; at < bytes; at += 64) {
        uint64_t w[8];
        std::memcpy(w, p + at, sizeof w);
        if ((w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7]) != 0) return false;
    }
    return true;
}

std::string format_bytes(uint64_t bytes) {
    static constexpr const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int unit = 0;
    uint64_t whole = bytes;
    while (whole >= 1024 && unit < 4) {
        whole /= 1024;
        ++unit;
    }
    char text[48];
    uint64_t scale = uint64_t{1} << (10 * unit);
    if (unit == 0 || bytes % scale == 0) {
        std::snprintf(text, sizeof text, "%" PRIu64 " %s", bytes / scale, units[unit]);
    } else {
        std::snprintf(text, sizeof text, "%.2f %s", static_cast<double>(bytes) / static_cast<double>(scale),
                      units[unit]);
    }
    return text;
}

std::string parent_directory(const std::string& path) {
    size_t slash = path.find_last_of('/');
    if (slash == std::string::npos) return ".";
    if (slash == 0) return "/";
    return path.substr(0, slash);
}

}  // namespace ringpager::layered
