// Budgets: what every VM takes its share of at the handshake (Reservation):
// the memory for its page states, the fds it holds, a fixed-file slot in its
// reactor. Resolved once at start from the config and the process limits.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "ringpager/engine.hpp"

namespace ringpager {

struct Budgets {
    uint64_t memory_limit_bytes = 0;   // config.memory_limit_bytes, or a quarter of RAM
    std::atomic<uint64_t> vm_state_bytes{0};
    uint64_t fd_budget = 0;            // fds the engine may hold for peers
    std::atomic<uint64_t> peer_fds{0};
    uint64_t max_vms = UINT64_MAX;     // config.max_vms, or no bound
    std::atomic<uint64_t> vms_admitted{0};
    unsigned vm_slots_per_reactor = 0; // fixed-file slots for uffds (the kernel bounds the table by RLIMIT_NOFILE)
};

inline constexpr unsigned kMaxVmsPerReactor = 2000;

// Each VM holds three fds (connection, uffd, pidfd) and one fixed-file slot
// in its reactor's ring; `fixed_files` are the slots each ring needs before
// any VM (eventfds, snapshot files). Returns false with a one-line error when
// the open-files limit leaves no room for one VM.
bool resolve_budgets(const EngineConfig& config, unsigned fixed_files, Budgets& out, std::string& error);

}  // namespace ringpager
