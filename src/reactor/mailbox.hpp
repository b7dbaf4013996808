// Mailbox: the only way other threads hand work to a reactor (DESIGN.md
// "Cross-thread work is a message on the owning reactor's mailbox"). Typed
// messages, bounded for VMs, and a wake-up of the reactor's ring through
// its wake eventfd. The reactor takes everything at once in its next turn.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <variant>
#include <vector>

#include "reactor/vm.hpp"
#include "reactor/vm_query.hpp"

namespace ringpager {

class RingService;

struct AdoptVm {
    std::unique_ptr<VmSetup> vm;
};
struct AttachService {
    std::unique_ptr<RingService> service;
};
struct Drain {
    std::chrono::steady_clock::time_point deadline;
};
struct Query {
    std::shared_ptr<VmQuery> query;
};
// Stop accepting; keep serving (ringpager ctl drain).
struct StopAccepting {};

// A source finished a fetch for VM (slot, gen) (PageSource::fetch).
struct Fetched {
    uint32_t slot;
    uint32_t gen;
    uint64_t cookie;
    std::string error;
};
using Message = std::variant<AdoptVm, AttachService, Drain, Fetched, Query, StopAccepting>;

// Shared (std::shared_ptr) by its reactor and whoever may still post to it
// after the reactor is gone (a fetch in flight): it owns its wake eventfd.
class Mailbox {
public:
    // The mailbox and its wake eventfd, or the eventfd's errno.
    static Result<std::shared_ptr<Mailbox>> create(size_t max_vms);
    int wake_fd() const { return wake_fd_.get(); }

    // Hands a VM over. When `max_vms` are already waiting it is handed back
    // (the caller refuses it); otherwise nullptr.
    std::unique_ptr<VmSetup> post_vm(std::unique_ptr<VmSetup> vm);
    // Control messages always get in.
    void post(Message message);
    // Everything posted so far, in order.
    void take(std::vector<Message>& out);

private:
    void wake() const;

    Mailbox(size_t max_vms, FileDesc wake_fd) : max_vms_(max_vms), wake_fd_(std::move(wake_fd)) {}

    std::mutex mu_;
    std::vector<Message> messages_;
    size_t vms_ = 0;
    const size_t max_vms_;
    const FileDesc wake_fd_;
};

}  // namespace ringpager
