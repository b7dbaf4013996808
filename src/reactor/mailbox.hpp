// Mailbox: the only way other threads hand work to a reactor (DESIGN.md
// "Cross-thread work is a message on the owning reactor's mailbox"). Typed
// messages, bounded for VMs, and a wake-up of the reactor's ring through
// its wake eventfd. The reactor takes everything at once in its next turn.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <variant>
#include <vector>

#include "reactor/vm.hpp"

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
using Message = std::variant<AdoptVm, AttachService, Drain>;

class Mailbox {
public:
    Mailbox(size_t max_vms, int wake_fd) : max_vms_(max_vms), wake_fd_(wake_fd) {}

    // Hands a VM over. When `max_vms` are already waiting it is handed back
    // (the caller refuses it); otherwise nullptr.
    std::unique_ptr<VmSetup> post_vm(std::unique_ptr<VmSetup> vm);
    // Control messages always get in.
    void post(Message message);
    // Everything posted so far, in order.
    void take(std::vector<Message>& out);

private:
    void wake() const;

    std::mutex mu_;
    std::vector<Message> messages_;
    size_t vms_ = 0;
    const size_t max_vms_;
    const int wake_fd_;
};

}  // namespace ringpager
