// Vm: what the owning reactor knows about one restored VM; its memory is
// its VmPager's. Touched only by that reactor's thread (DESIGN.md "Threads
// and ownership").
#pragma once

#include <linux/userfaultfd.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/reservation.hpp"
#include "pager/page_states.hpp"
#include "pager/vm_pager.hpp"
#include "ringpager/engine.hpp"
#include "ringpager/file_desc.hpp"
#include "ringpager/protocol.hpp"
#include "uffd/uffd.hpp"

namespace ringpager {

class ListenerEvents;

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
    unsigned listener_index = 0;       // which of the engine's listeners it came through
    ServeMode mode = ServeMode::lazy;
    std::shared_ptr<const std::vector<PageRun>> prefetch_first;  // the listener's prefetch order; null: ascending
    uint64_t prefetch_first_page_size = 0;                        // what it was recorded with (0: any)
    std::shared_ptr<const WorkingSetRecording> record_ws;        // record this VM's working set (null: no)
    std::string socket_path;
    PageStates states;                 // sized at the handshake, within the memory bound
    Reservation memory;                // this VM's share of the engine's memory bound
    Reservation admission;             // its place under --max-vms
    Reservation fds;                   // the fds it holds: connection, uffd, pidfd
};

// The reactor's record of one VM: what the handshake produced, the
// operations that watch it (its uffd, pidfd and connection) and its pager.
struct Vm {
    VmSetup setup;
    uint32_t slot = 0;
    uint32_t gen = 0;
    unsigned uffd_file_slot = 0;
    std::unique_ptr<VmPager> pager;        // built once `setup` is in place (it refers to it)
    std::shared_ptr<FetchSink> fetch_sink; // made at its first fetch; may outlive the VM

    // Long-lived ops (0 = not armed), so teardown can cancel them.
    uint64_t uffd_read_op = 0;
    uint64_t pid_poll_op = 0;
    uint64_t conn_poll_op = 0;
    uint32_t ops_outstanding = 0;          // of those, still in flight

    bool in_turn = false;
    bool closing = false;
    bool failed = false;
    std::string end_reason;
    std::chrono::steady_clock::time_point started;

    ListenerEvents* events = nullptr;      // its listener's counters on this reactor

    std::string name() const {
        return "vm " + std::to_string(setup.id) + " (pid " + std::to_string(setup.pid) + ")";
    }
    // Every page present or removed: nothing can fault with snapshot bytes any more.
    bool resident() const { return pager->resident(); }
    // Operations and jobs that still name this VM: it is destroyed at zero.
    uint32_t outstanding() const { return ops_outstanding + pager->outstanding(); }
};

}  // namespace ringpager
