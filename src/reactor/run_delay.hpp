// ThreadRunDelay: how long the threads of a reactor's VM processes waited
// for a CPU, for PrefetchDuringFaults::automatic. Steps of prefetch cost
// a VM's faults only when its own threads wait for a core (docs/
// benchmarks.md), and the kernel counts exactly that per thread: the
// second field of /proc/PID/task/TID/schedstat, the time spent runnable
// on a run queue. Unlike the host's CPU pressure, it does not count the
// restore's own start-up or other processes' waits.
//
// A VM process is a peer: its pid came from the socket's credentials, and
// everything read about it is bounded (kMaxProcesses and kMaxThreads in
// all a call, one fixed buffer per file). A call costs the reactor about
// 5 us a thread (open, read, close), so it reads a sample: a few
// processes, and their first threads. What it can steer is this reactor's
// prefetch pace, as any busy process on the host can through PSI.
#pragma once

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ringpager {

class ThreadRunDelay {
public:
    static constexpr size_t kMaxProcesses = 4;
    static constexpr size_t kMaxThreads = 16;

    // `proc_root` is normally "/proc" (tests give a tree of their own).
    explicit ThreadRunDelay(std::string proc_root);

    // The cumulative wait, in microseconds, of the threads seen so far: each
    // call adds what every thread it saw last time waited since (a thread
    // seen first counts from then; one gone counts no more). Reads the first
    // kMaxProcesses of `pids`, and of them the first kMaxThreads threads in
    // all. Nothing when none of them could be read (the reason in `error`).
    std::optional<uint64_t> total_us(std::span<const pid_t> pids, std::string& error);

    // The run delay in "RUNTIME RUN_DELAY TIMESLICES\n" (exposed for tests).
    static std::optional<uint64_t> parse_schedstat(std::string_view text);

private:
    struct Seen {
        pid_t pid = 0;
        pid_t tid = 0;
        uint64_t run_delay_ns = 0;
        static bool by_thread(const Seen& a, const Seen& b) { return a.pid != b.pid ? a.pid < b.pid : a.tid < b.tid; }
    };
    // Adds the threads of `pid` to next_, up to kMaxThreads there in all;
    // false when its task directory cannot be read.
    bool read_process(pid_t pid, std::string& error);

    std::string proc_root_;
    std::vector<Seen> seen_;  // last call's threads, sorted by (pid, tid)
    std::vector<Seen> next_;
    uint64_t total_ns_ = 0;
    std::array<char, 8192> dirents_{};
};

}  // namespace ringpager
