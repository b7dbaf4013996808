#include "engine/budgets.hpp"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace ringpager {
namespace {

constexpr uint64_t kEngineFdReserve = 64;

uint64_t count_open_fds() {
    uint64_t n = 0;
    if (DIR* dir = opendir("/proc/self/fd")) {
        while (const dirent* d = readdir(dir))
            if (d->d_name[0] != '.') n++;
        closedir(dir);
    }
    return n;
}

}  // namespace

bool resolve_budgets(const EngineConfig& c, unsigned fixed_files, Budgets& out, std::string& error) {
    if (c.max_pending == 0) {
        error = "max_pending must be at least 1";
        return false;
    }
    out.max_vms = c.max_vms != 0 ? c.max_vms : UINT64_MAX;
    out.memory_limit_bytes = c.memory_limit_bytes;
    if (out.memory_limit_bytes == 0) {
        const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
        out.memory_limit_bytes = pages > 0 && page > 0 ? uint64_t(pages) * uint64_t(page) / 4 : uint64_t{1} << 30;
    }
    rlimit lim{};
    if (getrlimit(RLIMIT_NOFILE, &lim) != 0) {
        error = std::string("getrlimit(RLIMIT_NOFILE): ") + std::strerror(errno);
        return false;
    }
    const uint64_t open_now = count_open_fds();
    const uint64_t reserve = kEngineFdReserve + 4 * (c.reactors == 0 ? 64 : c.reactors);
    const uint64_t limit = lim.rlim_cur == RLIM_INFINITY ? uint64_t{1} << 20 : uint64_t(lim.rlim_cur);
    if (limit < open_now + reserve + 3) {
        error = "the open-files limit (" + std::to_string(limit) + ") leaves no room to serve a VM: " +
                std::to_string(open_now) + " fds are open and the engine keeps " + std::to_string(reserve) +
                " for itself; raise it (ulimit -n, or LimitNOFILE= under systemd): each VM needs 3";
        return false;
    }
    out.fd_budget = limit - open_now - reserve;
    // The kernel refuses a fixed-file table larger than RLIMIT_NOFILE.
    const uint64_t table_room = limit > fixed_files ? limit - fixed_files : 1;
    out.vm_slots_per_reactor = static_cast<unsigned>(
        std::max<uint64_t>(1, std::min<uint64_t>({kMaxVmsPerReactor, out.fd_budget / 3 + 1, table_room})));
    return true;
}

}  // namespace ringpager
