// What the reactor is to its VMs' pagers: their host (close a VM, schedule
// it, fault work pending, file slots, fetch sinks) and the sink of their
// events (the reactor's counters).
#include "common/log.hpp"
#include "reactor/reactor_impl.hpp"

namespace ringpager {

Vm& Reactor::Impl::vm_of(const VmPager& pager) { return *vm_at(pager.id().slot, pager.id().gen); }

void Reactor::Impl::close(VmPager& pager, const std::string& reason, bool failure) {
    close_vm(vm_of(pager), reason, failure);
}

void Reactor::Impl::schedule(VmPager& pager) { mark_turn(vm_of(pager)); }

namespace {

// Posts a VM's fetch results to its reactor's mailbox, from any thread; the
// mailbox outlives the reactor if it must, and a result for a VM that is
// gone by then is dropped (the slot's generation has moved on).
class VmFetchSink final : public FetchSink {
public:
    VmFetchSink(std::shared_ptr<Mailbox> mailbox, uint32_t slot, uint32_t gen)
        : mailbox_(std::move(mailbox)), slot_(slot), gen_(gen) {}
    void fetched(uint64_t cookie, const std::string& error) override {
        mailbox_->post(Fetched{slot_, gen_, cookie, error});
    }

private:
    std::shared_ptr<Mailbox> mailbox_;
    uint32_t slot_, gen_;
};

}  // namespace

std::shared_ptr<FetchSink> Reactor::Impl::fetch_sink(VmPager& pager) {
    Vm& vm = vm_of(pager);
    if (!vm.fetch_sink) vm.fetch_sink = std::make_shared<VmFetchSink>(self.mailbox_, vm.slot, vm.gen);
    return vm.fetch_sink;
}

unsigned Reactor::Impl::file_slot(unsigned source_index, uint32_t file_index) const {
    return source_file_slots[source_index][file_index];
}

bool Reactor::Impl::fault_work_pending() {
    if (!io->maybe_completions()) return false;  // no syscall when nothing came
    io->submit_prepared();
    io->flush_completions();
    return io->any_completion([&](const io::OpData& op) {
        if (op.kind == static_cast<uint16_t>(PagerOp::page_read))
            return !jobs[static_cast<uint32_t>(op.arg)].prefetch;
        const OpKind kind = kind_of(op);
        return kind == OpKind::uffd_read || kind == OpKind::exit_read || kind == OpKind::wake_read;
    });
}

// ---- ListenerEvents: a listener's VMs' figures, on this reactor -----------

void ListenerEvents::on_faults(uint64_t count) {
    reactor_.last_fault_seen = std::chrono::steady_clock::now();
    bump(c_.faults, count);
}

void ListenerEvents::on_read(uint64_t bytes, bool page_cache_hit) {
    bump(c_.bytes_read, bytes);
    if (page_cache_hit) bump(c_.page_cache_hits);
}

void ListenerEvents::on_installed(const InstallResult& r, bool prefetch) {
    bump(c_.copy_ioctls, r.copy_ioctls);
    bump(c_.pages_copied, r.pages_copied);
    if (prefetch) bump(c_.pages_prefetched, r.pages_copied);
    bump(c_.pages_zeroed, r.pages_zeroed);
    bump(c_.pages_poisoned, r.pages_poisoned);
    bump(c_.ranges_unmapped, r.ranges_unmapped);
    if (r.end == InstallResult::End::retry_later) bump(c_.eagain_retries);
}

void ListenerEvents::on_resident(const VmPager& pager, double seconds) {
    bump(c_.vms_resident);
    c_.time_to_resident.observe(seconds);
    const Vm& vm = reactor_.vm_of(pager);
    const VmReport& report = pager.report();
    RP_EVENT(LogLevel::info, "vm_resident",
             {{"vm", vm.setup.id}, {"pid", vm.setup.pid}, {"listener", vm.setup.socket_path},
              {"seconds_to_resident", seconds}, {"faults", report.faults},
              {"pages_prefetched", report.pages_prefetched}, {"bytes_read", report.bytes_read}},
             vm.name() + ": resident after " + std::to_string(static_cast<long long>(seconds * 1000)) + " ms, " +
                 std::to_string(report.faults) + " faults");
    reactor_.sink.changed();
}

}  // namespace ringpager
