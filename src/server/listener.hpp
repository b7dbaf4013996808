// Listener sockets and the acceptor: accept and the Firecracker handshake run
// on reactor 0's ring; a validated VM is handed to the least busy reactor.
#pragma once

#include <sys/socket.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "engine/budgets.hpp"
#include "engine/placement.hpp"
#include "engine/stats.hpp"
#include "reactor/reactor.hpp"
#include "ringpager/file_desc.hpp"
#include "server/listen_socket.hpp"

namespace ringpager {

struct ListenerBinding {
    ListenSocket socket;
    const Source* source = nullptr;
    unsigned source_index = 0;
    ServeMode mode = ServeMode::lazy;
    std::shared_ptr<const std::vector<PageRun>> prefetch_first;  // the prefetcher's order (ListenerConfig)
    uint64_t prefetch_first_page_size = 0;
    std::shared_ptr<const WorkingSetRecording> record_ws;
};

// What the acceptor enforces on every peer.
struct AcceptorConfig {
    std::vector<uid_t> allowed_uids;              // empty: only the engine's own uid
    std::chrono::milliseconds handshake_timeout{30000};
    unsigned max_pending = 64;
    uint64_t max_vm_memory_bytes = 0;             // 0: the source size
    bool kill_on_failure = false;
};

// What the acceptor uses of the engine: the budgets a VM takes its share
// of, the counters it keeps, where validated VMs go.
struct AcceptorContext {
    AcceptorConfig config;
    Budgets& budgets;
    StatsTable& stats;
    Placement& placement;
    std::atomic<uint64_t>& next_vm_id;
};

// The acceptor takes the listening sockets over.
std::unique_ptr<RingService> make_acceptor(AcceptorContext context, std::vector<ListenerBinding> listeners);

}  // namespace ringpager
