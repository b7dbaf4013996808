#include "reactor/mailbox.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include "reactor/reactor.hpp"

namespace ringpager {

Result<std::shared_ptr<Mailbox>> Mailbox::create(size_t max_vms) {
    FileDesc fd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!fd.valid()) return errno_error("eventfd");
    return std::shared_ptr<Mailbox>(new Mailbox(max_vms, std::move(fd)));
}

std::unique_ptr<VmSetup> Mailbox::post_vm(std::unique_ptr<VmSetup> vm) {
    {
        std::lock_guard lock(mu_);
        if (vms_ >= max_vms_) return vm;
        messages_.emplace_back(AdoptVm{std::move(vm)});
        vms_++;
    }
    wake();
    return nullptr;
}

void Mailbox::post(Message message) {
    {
        std::lock_guard lock(mu_);
        messages_.push_back(std::move(message));
    }
    wake();
}

void Mailbox::take(std::vector<Message>& out) {
    std::lock_guard lock(mu_);
    for (Message& m : messages_) out.push_back(std::move(m));
    messages_.clear();
    vms_ = 0;
}

void Mailbox::wake() const {
    const uint64_t one = 1;
    // A full eventfd counter still wakes the reader; the write cannot fail otherwise.
    (void)!write(wake_fd_.get(), &one, sizeof one);
}

}  // namespace ringpager
