// Waits (inotify, no polling) until a path exists in its directory: created
// there, or renamed onto it (how `serve` publishes its socket).
#pragma once

#include <poll.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>

#include "ringpager/file_desc.hpp"

namespace ringpager::testing {

inline bool wait_for_file(const std::string& path, std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    const std::string dir = std::filesystem::path(path).parent_path();
    FileDesc in(inotify_init1(IN_CLOEXEC));
    if (inotify_add_watch(in.get(), dir.c_str(), IN_CREATE | IN_MOVED_TO) < 0) return false;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!std::filesystem::exists(path)) {
        pollfd p{in.get(), POLLIN, 0};
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0 || poll(&p, 1, static_cast<int>(left.count())) <= 0) return std::filesystem::exists(path);
        char buf[4096];
        (void)!read(in.get(), buf, sizeof buf);
    }
    return true;
}

}  // namespace ringpager::testing
