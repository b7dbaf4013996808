// VmQuery: the control API's question to the reactors about their VMs
// (VmInfo), answered by each reactor on its own thread.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace ringpager {

// One VM as the control API shows it.
struct VmInfo {
    uint64_t id = 0;
    pid_t pid = 0;
    unsigned listener = 0;
    unsigned reactor = 0;
    bool prefetching = false;
    double age_seconds = 0;
    uint64_t pages_total = 0, pages_present = 0, pages_removed = 0, pages_missing = 0, pages_in_flight = 0;
    uint64_t faults = 0;
    double seconds_to_resident = -1;  // -1: not resident yet
    double fault_p50_seconds = 0, fault_p99_seconds = 0;
    // Action::record_ws: the file written and its pages, or why not.
    std::string ws_path, ws_error;
    uint64_t ws_pages = 0;
};

// A question to every reactor about its VMs (the control API): each reactor
// acts on the VMs it owns and answers; the asker waits for all answers.
struct VmQuery {
    // ping: answer at once, touching no VM (the watchdog's liveness check).
    // record_ws: write the VM's working set recorded so far (it records on).
    enum class Action : uint8_t { list, release, prefetch, record_ws, ping };
    Action action = Action::list;
    uint64_t vm_id = 0;  // 0: every VM (list only)
    std::mutex mu;
    std::condition_variable cv;
    unsigned remaining = 0;  // reactors that have not answered
    std::vector<VmInfo> found;

    void answer(std::vector<VmInfo> infos) {
        {
            std::lock_guard lock(mu);
            for (VmInfo& i : infos) found.push_back(std::move(i));
            remaining--;
        }
        cv.notify_all();
    }
    bool wait(std::chrono::milliseconds timeout) {
        std::unique_lock lock(mu);
        return cv.wait_for(lock, timeout, [&] { return remaining == 0; });
    }
};
}  // namespace ringpager
