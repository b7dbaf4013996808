// A real guest's snapshot: boot under QEMU, let the workload write its data, stop, and
// migrate with x-ignore-shared so that guest RAM stays in the memory-backend file (a
// Firecracker-style memory file) and the migration stream holds only device state.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "realguest/guest_image.hpp"
#include "realguest/qemu.hpp"

namespace ringpager::realguest {

struct Snapshot {
    std::string dir;
    std::string mem_path;    // guest RAM, byte for byte at offset 0: what a handler serves
    std::string state_path;  // QEMU's migration stream (device state only)
    GuestImage image;
    VmShape shape;
    std::string file_checksum;  // rg-guest's checksums of its data when the snapshot was taken
    std::string heap_checksum;
    double boot_seconds = 0;    // start of QEMU to "rg: ready"
    bool reused = false;        // found in the cache
};

struct SnapshotOptions {
    std::string cache_dir;      // kernel packages, initramfs and snapshots live here
    std::string guest_program;  // the static rg-guest binary
    VmShape shape;
    // How long the guest runs after "rg: ready" before the snapshot (counted in heartbeat
    // lines, at least two): free page reporting of the memory boot left free runs two
    // seconds after it was freed, so a settled guest is snapshotted with that memory
    // already given back (holes in the memory file).
    std::chrono::milliseconds settle{3000};
};

// The snapshot for these options, from the cache when its key (kernel, initramfs, QEMU
// version, shape) matches, else built (a minute at most on 2 cores). Concurrent callers
// are serialised with a lock file in the cache. Throws Failure.
Snapshot prepare_snapshot(const SnapshotOptions& options);

}  // namespace ringpager::realguest
