// HandlerProcess: one page-fault handler (ringpager serve or rp-baseline)
// running as a separate process, so its CPU time and peak RSS can be read
// from /proc and charged to it alone.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "ringpager/file_desc.hpp"
#include "ringpager/result.hpp"

namespace ringpager::bench {

// What /proc says about a running process.
struct ProcUsage {
    double cpu_seconds = 0;   // utime + stime of all its threads (/proc/PID/stat), clock-tick resolution
    double peak_rss_mib = 0;  // VmHWM (/proc/PID/status)
};

class HandlerProcess {
public:
    // Starts `argv` (argv[0] is the executable path) with stdout and stderr
    // appended to `log_path`, and waits until `socket_path` is a Unix socket
    // (inotify on its directory), or until the process exits or `deadline`
    // passes; then proves it is serving with one empty connection, retried
    // while the path refuses it (see probe_ready). The child gets SIGKILL if
    // rp-bench dies, so no handler outlives a crashed benchmark.
    static Result<HandlerProcess> start(const std::vector<std::string>& argv, const std::string& socket_path,
                                        const std::string& log_path, std::chrono::milliseconds deadline,
                                        std::string& error);

    HandlerProcess() = default;
    HandlerProcess(HandlerProcess&& other) noexcept;
    HandlerProcess& operator=(HandlerProcess&& other) noexcept;
    HandlerProcess(const HandlerProcess&) = delete;
    HandlerProcess& operator=(const HandlerProcess&) = delete;
    // Kills and reaps a process that was never stopped.
    ~HandlerProcess();

    pid_t pid() const { return pid_; }
    // Readable once the process has exited.
    int pidfd() const { return pidfd_.get(); }
    bool exited() const;

    Result<ProcUsage> usage() const;

    // SIGTERM, then waits up to `grace` for a clean exit; SIGKILL after that.
    // Returns the exit description ("exit 0", "signal 9", "killed after
    // 10 s: did not stop on SIGTERM") and sets `clean` when it exited 0 in time.
    std::string stop(std::chrono::milliseconds grace, bool& clean);

    // Last lines of the log, for error messages.
    std::string log_tail(size_t max_bytes = 2000) const;

private:
    void kill_and_reap();

    pid_t pid_ = -1;
    FileDesc pidfd_;
    std::string log_path_;
};

}  // namespace ringpager::bench
