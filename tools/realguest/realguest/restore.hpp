// One restore of a real guest through a page-fault handler, and the checks that it runs
// correctly afterwards (docs/realguest.md "What a restore checks").
#pragma once

#include <cstdint>
#include <string>

#include "realguest/snapshot.hpp"

namespace ringpager::realguest {

struct RestoreOptions {
    std::string name = "vm";   // in messages and file names
    std::string work_dir;      // this VM's files: placeholder RAM file, QMP socket, log, shim counters
    std::string socket_path;   // the handler's socket (it must be listening)
    std::string shim_path;     // librp-fcshim.so
    // Wait for the handler to make every page resident (prefetch, eager copy) before the
    // checks begin, and fail if it does not within a minute.
    bool expect_resident = false;
    // free, balloon cycles, write, scan; false: restore, one heartbeat, quit.
    bool full_checks = true;
    unsigned balloon_cycles = 2;
};

struct RestoreReport {
    std::string name;
    // From the start of the restoring QEMU process (CLOCK_MONOTONIC, same run).
    double handshake_ms = -1;        // the shim sent Firecracker's handshake
    double migrated_ms = -1;         // device state loaded, before `cont`
    double first_heartbeat_ms = -1;  // the first heartbeat line after `cont`
    double resident_ms = -1;         // every page resident (or discarded), if before the checks began
    uint64_t ram_pages = 0;
    uint64_t resident_pages_at_exit = 0;
    // REMOVE events (one per madvise discard of guest RAM) by phase.
    uint64_t removes_before_checks = 0;     // free page reporting of memory free at snapshot time
    uint64_t removes_after_free = 0;        // free page reporting of the guest's freed data
    uint64_t removes_balloon = 0;           // 4 KiB balloon inflation discards
    uint64_t removes_balloon_reporting = 0; // free page reporting during and after the balloon cycles
    uint64_t removes_total = 0;
    uint64_t removed_bytes_total = 0;
    std::string scan;        // the guest's "rg: scan" line
    std::string failure;     // empty when every check passed
    // When a check the guest itself makes failed: "scan", "heartbeat checksum",
    // "write verify", "guest kernel" (panic/oops/BUG) or "guest program"; else empty.
    std::string caught_by;
    bool passed() const { return failure.empty(); }
};

// Restores `snapshot` in a QEMU whose RAM the shim hands to the handler listening on
// options.socket_path, then runs the checks. Never throws: a failure is in the report.
RestoreReport restore_and_check(const Snapshot& snapshot, const RestoreOptions& options);

}  // namespace ringpager::realguest
