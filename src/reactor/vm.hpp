// Vm: everything the owning reactor knows about one restored VM. Touched only
// by that reactor's thread (DESIGN.md "Threads and ownership").
#pragma once

#include <linux/userfaultfd.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/reservation.hpp"
#include "pager/address_map.hpp"
#include "pager/page_states.hpp"
#include "pager/prefetch_order.hpp"
#include "ringpager/engine.hpp"
#include "ringpager/file_desc.hpp"
#include "ringpager/protocol.hpp"
#include "uffd/uffd.hpp"

namespace ringpager {

// What the handshake produced: handed from the acceptor to the owning reactor.
struct VmSetup {
    uint64_t id = 0;
    pid_t pid = 0;
    uid_t uid = 0;
    FileDesc conn;
    Uffd uffd;
    FileDesc pidfd;                    // invalid when the kernel gave none
    Handshake handshake;
    const Source* source = nullptr;
    unsigned source_index = 0;         // which of the engine's sources (fixed-file base)
    ServeMode mode = ServeMode::lazy;
    std::string socket_path;
    PageStates states;                 // sized at the handshake, within the memory bound
    Reservation memory;                // this VM's share of the engine's memory bound
    Reservation fds;                   // the fds it holds: connection, uffd, pidfd
};

// A run of pages waiting to be installed again after EAGAIN (events pending).
struct DeferredZero {
    uint64_t first_page;
    uint64_t pages;
};

inline constexpr size_t kUffdMsgsPerRead = 64;

struct Vm {
    VmSetup setup;
    uint32_t slot = 0;
    uint32_t gen = 0;
    unsigned uffd_file_slot = 0;
    AddressMap map;
    PageStates states;
    std::unique_ptr<PrefetchOrder> prefetch_order;

    // The ring reads uffd messages straight into this buffer.
    alignas(64) uffd_msg msgs[kUffdMsgsPerRead];
    std::vector<uffd_msg> turn_msgs;       // read this turn, not yet applied
    std::vector<uint64_t> fault_pages;     // faults to serve (this turn + waiting for buffers)
    std::vector<uint32_t> completed_jobs;  // reads done, not yet installed
    std::vector<uint32_t> deferred_jobs;   // installs that met EAGAIN
    std::vector<DeferredZero> deferred_zero;

    // Long-lived ops (0 = not armed), so teardown can cancel them.
    uint64_t uffd_read_op = 0;
    uint64_t pid_poll_op = 0;
    uint64_t conn_poll_op = 0;
    uint32_t outstanding = 0;              // ops and jobs that still name this VM

    bool in_turn = false;
    bool closing = false;
    bool failed = false;
    bool prefetching = false;
    uint64_t ranges_unmapped = 0;          // installs that met ENOENT (see drop_unmapped)
    std::string end_reason;

    // Sequential-fault detection and the readahead already requested.
    uint32_t readahead_file = UINT32_MAX;
    uint64_t last_fault_offset = 0;
    uint64_t readahead_end = 0;

    std::chrono::steady_clock::time_point started;
    VmReport report;

    std::string name() const {
        return "vm " + std::to_string(setup.id) + " (pid " + std::to_string(setup.pid) + ")";
    }
    // Every page present or removed: nothing can fault with snapshot bytes any more.
    bool resident() const { return states.missing_count() == 0 && states.in_flight_count() == 0; }
    bool hugetlb() const { return !setup.handshake.regions.empty() && setup.handshake.regions[0].page_size_bytes > 4096; }
};

}  // namespace ringpager
