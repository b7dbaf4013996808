#include "reactor/run_delay.hpp"

#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "common/decimal.hpp"
#include "ringpager/file_desc.hpp"

namespace ringpager {
namespace {

std::optional<pid_t> tid_of(std::string_view name) {
    if (name.empty() || name.size() > 10 || name[0] == '0') return std::nullopt;
    const std::optional<uint64_t> n = parse_u64(name);
    if (!n || *n > 0x7fffffff) return std::nullopt;
    return static_cast<pid_t>(*n);
}

}  // namespace

ThreadRunDelay::ThreadRunDelay(std::string proc_root) : proc_root_(std::move(proc_root)) {
    seen_.reserve(kMaxThreads);
    next_.reserve(kMaxThreads);
}

std::optional<uint64_t> ThreadRunDelay::parse_schedstat(std::string_view text) {
    if (!text.empty() && text.back() == '\n') text.remove_suffix(1);
    const size_t first = text.find(' ');
    if (first == std::string_view::npos) return std::nullopt;
    const size_t second = text.find(' ', first + 1);
    if (second == std::string_view::npos) return std::nullopt;
    if (!parse_u64(text.substr(0, first)) || !parse_u64(text.substr(second + 1))) return std::nullopt;
    return parse_u64(text.substr(first + 1, second - first - 1));
}

bool ThreadRunDelay::read_process(pid_t pid, std::string& error) {
    const std::string path = proc_root_ + "/" + std::to_string(pid) + "/task";
    auto dir = FileDesc::open(path.c_str(), O_RDONLY | O_DIRECTORY);
    if (!dir) {
        error = path + ": " + dir.error().message();
        return false;
    }
    const long got = syscall(SYS_getdents64, dir->get(), dirents_.data(), dirents_.size());
    if (got < 0) {
        error = path + ": getdents64: " + strerror(errno);
        return false;
    }
    // struct linux_dirent64: ino (8), off (8), reclen (2), type (1), name.
    constexpr size_t kNameAt = 19;
    for (size_t at = 0; at + kNameAt < static_cast<size_t>(got) && next_.size() < kMaxThreads;) {
        uint16_t reclen = 0;
        memcpy(&reclen, dirents_.data() + at + 16, sizeof reclen);
        if (reclen <= kNameAt || reclen > static_cast<size_t>(got) - at) break;
        const char* name = dirents_.data() + at + kNameAt;
        const std::string_view entry(name, strnlen(name, reclen - kNameAt));
        at += reclen;
        const std::optional<pid_t> tid = tid_of(entry);
        if (!tid) continue;  // "." and ".."
        char file[32];
        snprintf(file, sizeof file, "%d/schedstat", static_cast<int>(*tid));
        const int fd = openat(dir->get(), file, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;  // the thread just ended
        const FileDesc stat(fd);
        char buf[96];
        const ssize_t n = pread(stat.get(), buf, sizeof buf, 0);
        if (n <= 0 || static_cast<size_t>(n) == sizeof buf) continue;
        const std::optional<uint64_t> delay = parse_schedstat(std::string_view(buf, static_cast<size_t>(n)));
        if (!delay) continue;
        next_.push_back({pid, *tid, *delay});
    }
    return true;
}

std::optional<uint64_t> ThreadRunDelay::total_us(std::span<const pid_t> pids, std::string& error) {
    next_.clear();
    std::array<pid_t, kMaxProcesses> done{};
    size_t processes = 0;
    size_t readable = 0;
    error = pids.empty() ? "no VM process to read" : "";
    for (pid_t pid : pids) {
        if (processes == kMaxProcesses || next_.size() == kMaxThreads) break;
        if (pid <= 0 || std::find(done.begin(), done.begin() + processes, pid) != done.begin() + processes) continue;
        done[processes++] = pid;
        if (read_process(pid, error)) readable++;
    }
    if (readable == 0) return std::nullopt;
    std::sort(next_.begin(), next_.end(), Seen::by_thread);
    for (const Seen& now : next_) {
        const auto it = std::lower_bound(seen_.begin(), seen_.end(), now, Seen::by_thread);
        if (it != seen_.end() && it->pid == now.pid && it->tid == now.tid && now.run_delay_ns >= it->run_delay_ns)
            total_ns_ += now.run_delay_ns - it->run_delay_ns;
    }
    seen_.swap(next_);
    error.clear();
    return total_ns_ / 1000;
}

}  // namespace ringpager
