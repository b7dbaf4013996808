// Firecracker handshake: receive the JSON + uffd, validate the regions.
#include "baseline/handshake.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include <nlohmann/json.hpp>

namespace ringpager::baseline {
namespace {

constexpr uint64_t kSmallPage = 4096;
constexpr uint64_t kHugePage = 2 << 20;
constexpr size_t kMaxFdsPerMessage = 16;

std::optional<uint64_t> get_u64(const nlohmann::json& object, const char* key) {
    auto it = object.find(key);
    if (it == object.end() || !it->is_number_unsigned()) return std::nullopt;
    return it->get<uint64_t>();
}

std::optional<Region> parse_region(const nlohmann::json& object, size_t index, std::string& error) {
    const std::string where = "region " + std::to_string(index) + ": ";
    if (!object.is_object()) {
        error = where + "not a JSON object";
        return std::nullopt;
    }
    auto base = get_u64(object, "base_host_virt_addr");
    auto size = get_u64(object, "size");
    auto offset = get_u64(object, "offset");
    if (!base || !size || !offset) {
        error = where + "base_host_virt_addr, size and offset must be unsigned integers";
        return std::nullopt;
    }
    // 1.1-1.6: no page size; 1.7-1.11: page_size_kib only (in bytes); 1.12+: both, equal.
    const bool has_page_size = object.contains("page_size");
    const bool has_kib = object.contains("page_size_kib");
    auto page_size = get_u64(object, "page_size");
    auto page_size_kib = get_u64(object, "page_size_kib");
    if ((has_page_size && !page_size) || (has_kib && !page_size_kib)) {
        error = where + "page_size / page_size_kib must be unsigned integers";
        return std::nullopt;
    }
    if (page_size && page_size_kib && *page_size != *page_size_kib) {
        error = where + "page_size and page_size_kib contradict each other";
        return std::nullopt;
    }
    const uint64_t page = page_size ? *page_size : page_size_kib ? *page_size_kib : kSmallPage;
    if (page != kSmallPage && page != kHugePage) {
        error = where + "unknown page size " + std::to_string(page);
        return std::nullopt;
    }
    if (*size == 0 || *base % page != 0 || *size % page != 0 || *offset % page != 0) {
        error = where + "base, size and offset must be non-zero multiples of the page size";
        return std::nullopt;
    }
    return Region{*base, *size, *offset, page};
}

uint64_t monotonic_ms() {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1'000'000;
}

// Is `fd` a userfaultfd? Its /proc link names the anon inode.
bool is_userfaultfd(int fd) {
    char link[64];
    const std::string path = "/proc/self/fd/" + std::to_string(fd);
    ssize_t n = ::readlink(path.c_str(), link, sizeof link - 1);
    if (n < 0) return false;
    return std::string_view(link, static_cast<size_t>(n)) == "anon_inode:[userfaultfd]";
}

// One recvmsg: appends bytes to `buffer` and every received fd to `fds`.
// Returns bytes read (0 on EOF) or -errno.
ssize_t receive_some(int conn, std::string& buffer, std::vector<FileDesc>& fds) {
    char data[4096];
    iovec iov{data, sizeof data};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage)];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n = ::recvmsg(conn, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0) return -errno;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; ++i) {
            int fd;
            std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            fds.emplace_back(fd);  // owned from here on, closed unless it is the one uffd
        }
    }
    if (msg.msg_flags & MSG_CTRUNC) return -EMSGSIZE;
    buffer.append(data, static_cast<size_t>(n));
    return n;
}

}  // namespace

std::optional<RegionList> parse_handshake(std::string_view json, uint64_t file_size_bytes, std::string& error) {
    nlohmann::json doc = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded() || !doc.is_array()) {
        error = "handshake is not a JSON array";
        return std::nullopt;
    }
    if (doc.empty()) {
        error = "handshake names zero regions";
        return std::nullopt;
    }
    RegionList regions;
    for (size_t i = 0; i < doc.size(); ++i) {
        auto region = parse_region(doc[i], i, error);
        if (!region) return std::nullopt;
        if (region->offset_bytes > file_size_bytes || region->size_bytes > file_size_bytes - region->offset_bytes) {
            error = "region " + std::to_string(i) + " lies outside the memory file";
            return std::nullopt;
        }
        regions.push_back(*region);
    }
    RegionList sorted = regions;
    std::sort(sorted.begin(), sorted.end(),
              [](const Region& a, const Region& b) { return a.base_host_virt_addr < b.base_host_virt_addr; });
    for (size_t i = 1; i < sorted.size(); ++i) {
        if (sorted[i].base_host_virt_addr < sorted[i - 1].end_addr()) {
            error = "regions overlap";
            return std::nullopt;
        }
    }
    return regions;
}

std::optional<Handshake> read_handshake(int conn, int stop_fd, int timeout_ms, uint64_t file_size_bytes,
                                        std::string& error) {
    std::string buffer;
    std::vector<FileDesc> fds;
    const uint64_t deadline = monotonic_ms() + static_cast<uint64_t>(timeout_ms);
    for (;;) {
        const uint64_t now = monotonic_ms();
        if (now >= deadline) {
            error = "no complete handshake within the timeout";
            return std::nullopt;
        }
        pollfd pfds[2] = {{conn, POLLIN, 0}, {stop_fd, POLLIN, 0}};
        int ready = ::poll(pfds, 2, static_cast<int>(deadline - now));
        if (ready < 0 && errno == EINTR) continue;
        if (ready < 0) {
            error = std::string("poll: ") + std::strerror(errno);
            return std::nullopt;
        }
        if (pfds[1].revents != 0) {
            error = "shutting down";
            return std::nullopt;
        }
        if (ready == 0) continue;
        ssize_t n = receive_some(conn, buffer, fds);
        if (n == -EAGAIN || n == -EINTR) continue;
        if (n < 0) {
            error = std::string("recvmsg: ") + std::strerror(static_cast<int>(-n));
            return std::nullopt;
        }
        if (n == 0) {
            error = "peer closed the connection before a complete handshake";
            return std::nullopt;
        }
        if (buffer.size() > kMaxHandshakeBytes) {
            error = "handshake larger than 64 KiB";
            return std::nullopt;
        }
        // Firecracker sends no length prefix: the message is complete once it parses.
        if (!nlohmann::json::accept(buffer)) continue;
        auto regions = parse_handshake(buffer, file_size_bytes, error);
        if (!regions) return std::nullopt;
        if (fds.size() != 1) {
            error = "handshake came with " + std::to_string(fds.size()) + " fds, expected exactly one uffd";
            return std::nullopt;
        }
        if (!is_userfaultfd(fds[0].get())) {
            error = "the fd sent with the handshake is not a userfaultfd";
            return std::nullopt;
        }
        return Handshake{std::move(*regions), std::move(fds[0])};
    }
}

}  // namespace ringpager::baseline
