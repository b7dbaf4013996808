// Guest memory layout, uffd setup and the handshake (Firecracker's side).
#include "guestsim/guest.hpp"

#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <cstring>

#include "guestsim/uffd_setup.hpp"
#include "guestsim/units.hpp"

#ifndef MAP_HUGE_2MB
#define MAP_HUGE_2MB (21 << MAP_HUGE_SHIFT)
#endif

namespace ringpager::sim {
namespace {

uint64_t align_up(uint64_t value, uint64_t alignment) { return (value + alignment - 1) / alignment * alignment; }

Result<void> validate(const GuestConfig& config) {
    if (config.page_size_bytes != kSmallPageBytes && config.page_size_bytes != kHugePageBytes) {
        return Error{EINVAL, "guest: page size must be 4 KiB or 2 MiB"};
    }
    if (config.shape == HandshakeShape::v1_1 && config.page_size_bytes != kSmallPageBytes) {
        // That handshake has no page size field, so a handler must assume 4 KiB.
        return Error{EINVAL, "guest: handshake shape 1.1 cannot describe 2 MiB pages (Firecracker 1.1-1.6 had none)"};
    }
    if (config.region_sizes_bytes.empty()) return Error{EINVAL, "guest: at least one region is needed"};
    for (uint64_t size : config.region_sizes_bytes) {
        if (size == 0 || size % config.page_size_bytes != 0) {
            return Error{EINVAL, "guest: region sizes must be non-zero multiples of the page size"};
        }
    }
    if (!config.region_offsets_bytes.empty() &&
        config.region_offsets_bytes.size() != config.region_sizes_bytes.size()) {
        return Error{EINVAL, "guest: give one file offset per region, or none"};
    }
    return {};
}

// Maps each region at its own address with an unmapped gap after it. A
// PROT_NONE reservation holds the whole span while the regions are placed
// inside it with MAP_FIXED, so no other thread's mmap can land in between;
// the gaps are unmapped afterwards.
Result<std::vector<Mapping>> map_regions(const GuestConfig& config, std::vector<uint64_t>& bases) {
    const uint64_t page = config.page_size_bytes;
    const uint64_t gap = align_up(config.gap_bytes, page);
    uint64_t span = 0;
    for (uint64_t size : config.region_sizes_bytes) span += size + gap;
    auto reserved = Mapping::map(nullptr, span + page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (!reserved) return reserved.error();
    const uint64_t reserve_start = reinterpret_cast<uint64_t>(reserved->data());
    const uint64_t reserve_end = reserve_start + reserved->size_bytes();

    int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED;
    if (page == kHugePageBytes) flags |= MAP_HUGETLB | MAP_HUGE_2MB;
    uint64_t addr = align_up(reserve_start, page);
    for (uint64_t size : config.region_sizes_bytes) {
        // SAFETY: [addr, addr + size) lies inside our own reservation, so
        // MAP_FIXED replaces only pages this function owns.
        void* placed = ::mmap(reinterpret_cast<void*>(addr), size, PROT_READ | PROT_WRITE, flags, -1, 0);
        if (placed == MAP_FAILED) return errno_error("mmap(guest region)");
        bases.push_back(addr);
        addr += size + gap;
    }
    // Unmap everything in the reservation that is not a region. munmap of a
    // range we own cannot fail for any reason but bad arguments.
    uint64_t cursor = reserve_start;
    for (size_t i = 0; i <= bases.size(); ++i) {
        const uint64_t hole_end = i < bases.size() ? bases[i] : reserve_end;
        if (hole_end > cursor && ::munmap(reinterpret_cast<void*>(cursor), hole_end - cursor) != 0) {
            return errno_error("munmap(region gap)");
        }
        if (i < bases.size()) cursor = bases[i] + config.region_sizes_bytes[i];
    }
    reserved->release();
    std::vector<Mapping> mappings;
    for (size_t i = 0; i < bases.size(); ++i) {
        mappings.emplace_back(reinterpret_cast<void*>(bases[i]), config.region_sizes_bytes[i]);
    }
    return mappings;
}

}  // namespace

Result<Guest> Guest::create(const GuestConfig& config) {
    if (auto valid = validate(config); !valid) return valid.error();
    std::vector<uint64_t> bases;
    auto mappings = map_regions(config, bases);
    if (!mappings) return mappings.error();

    Guest guest;
    guest.mappings_ = std::move(*mappings);
    guest.page_size_bytes_ = config.page_size_bytes;
    guest.shape_ = config.shape;
    guest.socket_path_ = config.socket_path;
    uint64_t file_offset = 0;
    for (size_t i = 0; i < bases.size(); ++i) {
        Region region;
        region.base_host_virt_addr = bases[i];
        region.size_bytes = config.region_sizes_bytes[i];
        region.offset_bytes = config.region_offsets_bytes.empty() ? file_offset : config.region_offsets_bytes[i];
        region.page_size_bytes = config.page_size_bytes;
        file_offset = region.offset_bytes + region.size_bytes;
        guest.region_first_page_.push_back(guest.page_count_);
        guest.page_count_ += region.page_count();
        guest.regions_.push_back(region);
    }
    guest.touched_.assign(guest.page_count_, 0);
    guest.discarded_.assign(guest.page_count_, 0);

    auto uffd = create_firecracker_uffd(config.force_dev_userfaultfd);
    if (!uffd) return uffd.error();
    guest.uffd_ = std::move(*uffd);
    for (const Region& region : guest.regions_) {
        auto registered = register_missing(guest.uffd_.get(), region.base_host_virt_addr, region.size_bytes);
        if (!registered) return registered.error();
    }
    return guest;
}

Result<void> Guest::connect_and_send() {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (socket_path_.empty() || socket_path_.size() >= sizeof addr.sun_path) {
        return Error{ENAMETOOLONG, "connect: socket path empty or longer than sun_path"};
    }
    std::memcpy(addr.sun_path, socket_path_.c_str(), socket_path_.size() + 1);
    FileDesc sock(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!sock.valid()) return errno_error("socket");
    // Firecracker connects exactly once; a handler that is not listening yet fails the restore.
    if (::connect(sock.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
        return errno_error("connect");
    }

    const std::string json = handshake_json();
    iovec iov{const_cast<char*>(json.data()), json.size()};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    const int fd = uffd_.get();
    std::memcpy(CMSG_DATA(cmsg), &fd, sizeof fd);
    ssize_t sent;
    do {
        sent = ::sendmsg(sock.get(), &msg, MSG_NOSIGNAL);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0) return errno_error("sendmsg");
    // A stream socket may take part of a message; the rest goes without the fd.
    for (size_t done = static_cast<size_t>(sent); done < json.size();) {
        ssize_t n = ::send(sock.get(), json.data() + done, json.size() - done, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return errno_error("send");
        done += static_cast<size_t>(n);
    }
    socket_ = std::move(sock);
    return {};
}

size_t Guest::region_of_page(uint64_t guest_page_index) const {
    auto it = std::upper_bound(region_first_page_.begin(), region_first_page_.end(), guest_page_index);
    return static_cast<size_t>(it - region_first_page_.begin()) - 1;
}

std::byte* Guest::page_address(uint64_t guest_page_index) const {
    const size_t r = region_of_page(guest_page_index);
    return mappings_[r].data() + (guest_page_index - region_first_page_[r]) * page_size_bytes_;
}

uint64_t Guest::file_offset_of_page(uint64_t guest_page_index) const {
    const size_t r = region_of_page(guest_page_index);
    return regions_[r].offset_bytes + (guest_page_index - region_first_page_[r]) * page_size_bytes_;
}

}  // namespace ringpager::sim
