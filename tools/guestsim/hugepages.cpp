// Raising the hugetlb pool through /proc/sys/vm/nr_hugepages.
#include "guestsim/hugepages.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <charconv>
#include <string_view>

#include "ringpager/file_desc.hpp"

namespace ringpager::sim {
namespace {

constexpr const char* kNrHugepagesPath = "/proc/sys/vm/nr_hugepages";

// Reads a small procfs file completely; empty on failure.
std::string read_small_file(const char* path) {
    auto fd = FileDesc::open(path, O_RDONLY);
    if (!fd) return {};
    std::string text;
    char buf[4096];
    for (;;) {
        ssize_t n = ::read(fd->get(), buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        text.append(buf, static_cast<size_t>(n));
    }
    return text;
}

int64_t parse_leading_int(std::string_view text) {
    while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
    int64_t value = -1;
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    (void)ptr;
    return ec == std::errc() ? value : -1;
}

int64_t meminfo_field(std::string_view name) {
    std::string info = read_small_file("/proc/meminfo");
    std::string_view view = info;
    size_t at = view.find(name);
    if (at == std::string_view::npos) return -1;
    return parse_leading_int(view.substr(at + name.size()));
}

}  // namespace

int64_t free_hugepages() {
    // The default huge page size must be 2 MiB for these counters to be ours.
    if (meminfo_field("Hugepagesize:") != 2048) return -1;
    return meminfo_field("HugePages_Free:");
}

std::string ensure_hugepages(uint64_t count) {
    int64_t free_now = free_hugepages();
    if (free_now < 0) return "cannot read 2 MiB huge page counters from /proc/meminfo (default huge page size must be 2 MiB)";
    if (static_cast<uint64_t>(free_now) >= count) return {};
    int64_t total = parse_leading_int(read_small_file(kNrHugepagesPath));
    if (total < 0) return std::string("cannot read ") + kNrHugepagesPath;
    const uint64_t wanted = static_cast<uint64_t>(total) + (count - static_cast<uint64_t>(free_now));
    auto fd = FileDesc::open(kNrHugepagesPath, O_WRONLY);
    if (!fd) return std::string("cannot open ") + kNrHugepagesPath + " for writing (" + fd.error().message() + "): run as root";
    const std::string text = std::to_string(wanted) + "\n";
    ssize_t n = ::write(fd->get(), text.data(), text.size());
    if (n != static_cast<ssize_t>(text.size())) {
        return std::string("cannot write ") + kNrHugepagesPath + ": " + std::strerror(n < 0 ? errno : EIO) + " (run as root)";
    }
    free_now = free_hugepages();
    if (free_now < 0 || static_cast<uint64_t>(free_now) < count) {
        return "could reserve only " + std::to_string(free_now < 0 ? 0 : free_now) + " of " + std::to_string(count) +
               " free 2 MiB huge pages (memory too fragmented or too small): free memory, or reserve them at boot with hugepages=N";
    }
    return {};
}

}  // namespace ringpager::sim
