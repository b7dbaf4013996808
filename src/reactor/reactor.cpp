// The per-core loop and the VM lifecycle (adopt, watch, tear down).
#include "reactor/reactor.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <algorithm>
#include <future>

#include "common/log.hpp"
#include "common/unix_socket.hpp"
#include "reactor/reactor_impl.hpp"
#include "reactor/test_hooks.hpp"

namespace ringpager {

#ifdef RINGPAGER_TEST_HOOKS
namespace test_hooks {
std::atomic<bool> g_armed[static_cast<unsigned>(Point::count)];
namespace {
std::mutex g_hooks_mu;
Hook g_hooks[static_cast<unsigned>(Point::count)];
}  // namespace
void arm(Point point, Hook hook) {
    std::lock_guard lock(g_hooks_mu);
    g_hooks[static_cast<unsigned>(point)] = std::move(hook);
    g_armed[static_cast<unsigned>(point)].store(true);
}
void disarm(Point point) {
    std::lock_guard lock(g_hooks_mu);
    g_armed[static_cast<unsigned>(point)].store(false);
    g_hooks[static_cast<unsigned>(point)] = nullptr;
}
void fire(Point point, uint64_t vm_id, uint64_t page) {
    Hook hook;
    {
        std::lock_guard lock(g_hooks_mu);
        hook = g_hooks[static_cast<unsigned>(point)];
    }
    if (hook) hook(vm_id, page);
}
}  // namespace test_hooks
#endif

Reactor::Reactor(unsigned index, EngineShared& shared) : index_(index), shared_(shared) {}

Reactor::~Reactor() {
    if (thread_.joinable()) {
        request_stop();
        thread_.join();
    }
    if (exit_efd_ >= 0) close(exit_efd_);
    if (wake_efd_ >= 0) close(wake_efd_);
}

bool Reactor::start(std::string& error) {
    exit_efd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    wake_efd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (exit_efd_ < 0 || wake_efd_ < 0) {
        error = std::string("eventfd: ") + std::strerror(errno);
        return false;
    }
    impl_ = std::make_unique<Impl>(*this, shared_, counters_);
    // The ring must be created by the thread that uses it (SINGLE_ISSUER).
    std::promise<std::string> ready;
    auto ready_future = ready.get_future();
    thread_ = std::thread([this, &ready] {
        std::string setup_error;
        const bool ok = impl_->setup(setup_error);
        ready.set_value(ok ? std::string() : setup_error);
        if (ok) thread_main();
        else failed_ = true;
    });
    error = ready_future.get();
    if (!error.empty()) {
        thread_.join();
        return false;
    }
    return true;
}

void Reactor::request_stop() {
    const uint64_t one = 1;
    // A full eventfd counter still wakes the reader; the write cannot fail otherwise.
    (void)!write(exit_efd_, &one, sizeof one);
}

bool Reactor::join() {
    if (thread_.joinable()) thread_.join();
    return !failed_;
}

void Reactor::attach_service(std::unique_ptr<RingService> service) {
    {
        std::lock_guard lock(inbox_mu_);
        service_inbox_ = std::move(service);
    }
    const uint64_t one = 1;
    (void)!write(wake_efd_, &one, sizeof one);
}

bool Reactor::hand_off(std::unique_ptr<VmSetup> vm) {
    {
        std::lock_guard lock(inbox_mu_);
        if (inbox_.size() >= 1024) return false;
        inbox_.push_back(std::move(vm));
    }
    const uint64_t one = 1;
    (void)!write(wake_efd_, &one, sizeof one);
    return true;
}

io_uring_sqe* Reactor::service_sqe(uint64_t cookie) {
    io_uring_sqe* sqe = impl_->ring->sqe();
    io_uring_sqe_set_data64(sqe, impl_->ops.alloc(OpKind::service, 0, 0, cookie));
    return sqe;
}

io_uring_sqe* Reactor::plain_sqe() {
    io_uring_sqe* sqe = impl_->ring->sqe();
    io_uring_sqe_set_data64(sqe, 0);
    return sqe;
}

void Reactor::cancel_op(uint64_t user_data) {
    io_uring_sqe* sqe = impl_->ring->sqe();
    io_uring_prep_cancel64(sqe, user_data, 0);
    io_uring_sqe_set_data64(sqe, 0);
}

void Reactor::thread_main() {
    char name[16];
    snprintf(name, sizeof name, "rp-reactor-%u", index_);
    pthread_setname_np(pthread_self(), name);
    impl_->loop();
    impl_.reset();  // ring first, then buffers (Impl's destructor order)
}

Reactor::Impl::~Impl() {
    ring.reset();  // cancels whatever is still queued before the buffers go away
    if (pool.small_base) munmap(pool.small_base, pool.small_count * BufferPool::kSmallBytes);
    if (pool.big_base) munmap(pool.big_base, pool.big_count * BufferPool::kBigBytes);
    if (zero_buffer) munmap(zero_buffer, BufferPool::kBigBytes);
}

bool Reactor::Impl::setup(std::string& error) {
    auto created = Ring::create(1024, static_cast<unsigned>(kOps));
    if (!created) {
        error = "cannot create io_uring: " + created.error().message();
        return false;
    }
    ring = std::move(*created);
    self.setup_mode_ = ring->setup_mode();
    const unsigned file_slots = kFirstVmFileSlot + shared.source_file_count + kMaxVmsPerReactor;
    if (auto r = ring->register_files_sparse(file_slots); !r) {
        error = "cannot register " + std::to_string(file_slots) + " fixed files: " + r.error().message();
        return false;
    }
    const int fixed[] = {self.exit_efd_, self.wake_efd_};
    for (unsigned i = 0; i < 2; i++)
        if (auto r = ring->update_file(i, fixed[i]); !r) {
            error = "cannot register eventfd: " + r.error().message();
            return false;
        }
    for (size_t s = 0; s < shared.sources.size(); s++) {
        auto fds = shared.sources[s]->file_fds();
        for (size_t f = 0; f < fds.size(); f++)
            if (auto r = ring->update_file(kFirstVmFileSlot + shared.source_file_base[s] + f, fds[f]); !r) {
                error = "cannot register snapshot file: " + r.error().message();
                return false;
            }
    }
    const unsigned first_vm_slot = kFirstVmFileSlot + shared.source_file_count;
    for (unsigned i = file_slots; i-- > first_vm_slot;) free_file_slots.push_back(i);

    pool.small_count = kSmallSlots;
    pool.big_count = kBigSlots;
    const int prot = PROT_READ | PROT_WRITE, flags = MAP_PRIVATE | MAP_ANONYMOUS;
    void* small = mmap(nullptr, pool.small_count * BufferPool::kSmallBytes, prot, flags, -1, 0);
    void* big = mmap(nullptr, pool.big_count * BufferPool::kBigBytes, prot, flags, -1, 0);
    zero_buffer = mmap(nullptr, BufferPool::kBigBytes, PROT_READ, flags, -1, 0);
    if (small == MAP_FAILED || big == MAP_FAILED || zero_buffer == MAP_FAILED) {
        error = std::string("cannot map read buffers: ") + std::strerror(errno);
        return false;
    }
    // Registration pins every buffer page; transparent huge pages make that a
    // few dozen faults instead of thousands (advisory: fine if refused).
    (void)madvise(small, pool.small_count * BufferPool::kSmallBytes, MADV_HUGEPAGE);
    (void)madvise(big, pool.big_count * BufferPool::kBigBytes, MADV_HUGEPAGE);
    pool.small_base = static_cast<uint8_t*>(small);
    pool.big_base = static_cast<uint8_t*>(big);
    const iovec iovs[2] = {{small, pool.small_count * BufferPool::kSmallBytes},
                           {big, pool.big_count * BufferPool::kBigBytes}};
    if (auto r = ring->register_buffers(iovs); !r) {
        error = "cannot register read buffers: " + r.error().message();
        return false;
    }
    for (uint32_t i = pool.small_count; i-- > 0;) pool.small_free.push_back(i);
    for (uint32_t i = pool.slots(); i-- > pool.small_count;) pool.big_free.push_back(i);
    jobs.resize(pool.slots());
    batch.reserve(kOps);
    // One worker per ring copies punted prefetch reads: enough to overlap the
    // reads with this thread's installs without crowding out vCPU threads.
    if (auto r = ring->limit_workers(1, 1); !r)
        RP_DEBUG("reactor %u: io-wq worker limit not set: %s", self.index_, r.error().message().c_str());
    arm_fixed_read(OpKind::exit_read, 0, &exit_value);
    arm_fixed_read(OpKind::wake_read, 1, &wake_value);
    return true;
}

void Reactor::Impl::arm_fixed_read(OpKind kind, unsigned file_slot, uint64_t* value) {
    io_uring_sqe* sqe = ring->sqe();
    io_uring_prep_read(sqe, static_cast<int>(file_slot), value, sizeof *value, 0);
    sqe->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data64(sqe, ops.alloc(kind));
}

void Reactor::Impl::arm_timer() {
    if (timer_armed) return;
    timer_armed = true;
    timer_ts.tv_sec = 0;
    timer_ts.tv_nsec = 50 * 1000;  // retry installs that met EAGAIN within 50 µs, without spinning
    io_uring_sqe* sqe = ring->sqe();
    io_uring_prep_timeout(sqe, &timer_ts, 0, 0);
    io_uring_sqe_set_data64(sqe, ops.alloc(OpKind::timer));
}

void Reactor::Impl::loop() {
    for (;;) {
        const unsigned wait_nr = more_work ? 0 : 1;
        more_work = false;
        if (auto r = ring->submit_and_wait(wait_nr); !r) {
            RP_ERROR("reactor %u: %s; stopping this reactor", self.index_, r.error().message().c_str());
            self.failed_ = true;
            return;
        }
        if (wait_nr == 0) ring->flush_completions();
        batch.clear();
        ring->reap(batch);
        for (const Completion& c : batch) dispatch(c);
        process_turn();
        if (stopping && vms.size() == free_vm_slots.size() && (!service || service->idle())) return;
    }
}

Vm* Reactor::Impl::vm_at(uint32_t slot, uint32_t gen) {
    if (slot >= vms.size() || !vms[slot] || vms[slot]->gen != gen) return nullptr;
    return vms[slot].get();
}

void Reactor::Impl::mark_turn(Vm& vm) {
    if (vm.in_turn) return;
    vm.in_turn = true;
    turn_vms.push_back(vm.slot);
}

void Reactor::Impl::dispatch(const Completion& c) {
    Op* found = ops.find(c.user_data);
    if (found == nullptr) return;  // user_data 0 (cancels, link timeouts)
    const Op op = *found;
    const bool more = (c.flags & IORING_CQE_F_MORE) != 0;
    if (!more) ops.release(c.user_data);
    Vm* vm = vm_at(op.vm_slot, op.vm_gen);
    switch (op.kind) {
        case OpKind::exit_read:
            if (!stopping) {
                stopping = true;
                RP_DEBUG("reactor %u: stopping", self.index_);
                if (service) service->stop(self);
                for (auto& v : vms)
                    if (v && !v->closing) close_vm(*v, "engine shutting down", false);
            }
            break;
        case OpKind::wake_read:
            adopt_inbox();
            arm_fixed_read(OpKind::wake_read, 1, &wake_value);
            break;
        case OpKind::timer:
            timer_armed = false;
            break;
        case OpKind::uffd_read:
            vm->uffd_read_op = 0;
            vm->outstanding--;
            on_uffd_read(*vm, c.res);
            break;
        case OpKind::pid_poll:
            vm->pid_poll_op = 0;
            vm->outstanding--;
            if (c.res > 0 && !vm->closing) close_vm(*vm, "VM process exited", false);
            break;
        case OpKind::conn_poll:
            vm->conn_poll_op = 0;
            vm->outstanding--;
            on_conn_ready(*vm, c.res);
            break;
        case OpKind::page_read:
            on_page_read(static_cast<uint32_t>(op.arg), c.res, op.arg >> 32);
            break;
        case OpKind::readahead:
            if (vm) vm->outstanding--;
            break;
        case OpKind::service:
            if (service) service->on_completion(self, op.arg, c);
            break;
        case OpKind::free:
            break;
    }
    if (vm != nullptr && (vm->closing || op.kind == OpKind::page_read)) mark_turn(*vm);
}

void Reactor::Impl::adopt_inbox() {
    std::vector<std::unique_ptr<VmSetup>> arrived;
    std::unique_ptr<RingService> new_service;
    {
        std::lock_guard lock(self.inbox_mu_);
        arrived.swap(self.inbox_);
        new_service = std::move(self.service_inbox_);
    }
    if (new_service && !service) {
        service = std::move(new_service);
        if (stopping) service->stop(self);
        else service->start(self);
    }
    for (auto& setup : arrived) adopt(std::move(setup));
}

unsigned Reactor::Impl::file_slot_of(const Vm& vm, uint32_t file_index) const {
    return kFirstVmFileSlot + shared.source_file_base[vm.setup.source_index] + file_index;
}

void Reactor::Impl::adopt(std::unique_ptr<VmSetup> setup) {
    const std::string who = "vm " + std::to_string(setup->id) + " (pid " + std::to_string(setup->pid) + ")";
    if (stopping || free_file_slots.empty() || ops.available() < 64) {
        RP_WARN("%s: refused: reactor %u is %s", who.c_str(), self.index_,
                stopping ? "shutting down" : "at its VM limit");
        shared.vms_released.fetch_add(1);
        shared.notify();
        return;
    }
    uint32_t slot;
    if (!free_vm_slots.empty()) {
        slot = free_vm_slots.back();
        free_vm_slots.pop_back();
    } else {
        slot = static_cast<uint32_t>(vms.size());
        vms.emplace_back();
    }
    auto vm = std::make_unique<Vm>();
    vm->setup = std::move(*setup);
    vm->slot = slot;
    vm->gen = ++vm_generation;
    vm->map = AddressMap(vm->setup.handshake.regions);
    vm->states = PageStates(vm->map.total_pages());
    vm->started = std::chrono::steady_clock::now();
    vm->report.vm_id = vm->setup.id;
    vm->report.pid = vm->setup.pid;
    vm->report.pages_total = vm->map.total_pages();
    vm->uffd_file_slot = free_file_slots.back();
    free_file_slots.pop_back();
    if (auto r = ring->update_file(vm->uffd_file_slot, vm->setup.uffd.fd()); !r) {
        RP_ERROR("%s: cannot register its userfaultfd with the ring: %s", who.c_str(), r.error().message().c_str());
        free_file_slots.push_back(vm->uffd_file_slot);
        free_vm_slots.push_back(slot);
        shared.vms_released.fetch_add(1);
        shared.notify();
        return;
    }
    Vm& v = *vm;
    vms[slot] = std::move(vm);
    counters.vms_active.fetch_add(1, std::memory_order_relaxed);
    arm_uffd_read(v);
    if (v.setup.pidfd.valid()) arm_poll(v, OpKind::pid_poll, v.setup.pidfd.get(), POLLIN);
    arm_poll(v, OpKind::conn_poll, v.setup.conn.get(), POLLIN | POLLRDHUP);
    // Firecracker faults right away during the restore call: start the
    // prefetcher in its small-step mode.
    last_fault_seen = std::chrono::steady_clock::now();
    if (v.setup.mode == ServeMode::prefetch) {
        v.prefetching = true;
        v.prefetch_order = make_ascending_order();
        prefetch_rr.push_back(slot);
        more_work = true;
    }
    RP_DEBUG("%s: served by reactor %u", v.name().c_str(), self.index_);
}

void Reactor::Impl::arm_uffd_read(Vm& vm) {
    if (vm.closing || vm.uffd_read_op != 0) return;
    io_uring_sqe* sqe = ring->sqe();
    io_uring_prep_read(sqe, static_cast<int>(vm.uffd_file_slot), vm.msgs, sizeof vm.msgs, 0);
    sqe->flags |= IOSQE_FIXED_FILE;
    vm.uffd_read_op = ops.alloc(OpKind::uffd_read, vm.slot, vm.gen);
    io_uring_sqe_set_data64(sqe, vm.uffd_read_op);
    vm.outstanding++;
}

void Reactor::Impl::arm_poll(Vm& vm, OpKind kind, int fd, unsigned events) {
    io_uring_sqe* sqe = ring->sqe();
    io_uring_prep_poll_add(sqe, fd, events);
    const uint64_t user_data = ops.alloc(kind, vm.slot, vm.gen);
    io_uring_sqe_set_data64(sqe, user_data);
    (kind == OpKind::pid_poll ? vm.pid_poll_op : vm.conn_poll_op) = user_data;
    vm.outstanding++;
}

// The connection stays open for the VM's life (Firecracker >= 1.12). Later
// messages are read and ignored; any fds they carry are closed, never kept.
void Reactor::Impl::on_conn_ready(Vm& vm, int32_t res) {
    if (vm.closing || res < 0) return;
    bool hung_up = (res & (POLLHUP | POLLRDHUP | POLLERR)) != 0;
    for (;;) {
        char data[4096];
        std::vector<FileDesc> fds;  // closed at end of scope: we serve only the first uffd
        const Received r = receive_with_fds(vm.setup.conn.get(), data, sizeof data, fds);
        if (!fds.empty()) {
            RP_WARN("%s: closed %zu unexpected fd(s) sent after the handshake", vm.name().c_str(), fds.size());
            counters.add(counters.stray_fds_closed, fds.size());
            shared.notify();
        }
        if (r.bytes > 0) {
            RP_DEBUG("%s: ignored %zd bytes sent after the handshake", vm.name().c_str(), r.bytes);
            continue;
        }
        if (r.bytes == 0) hung_up = true;
        break;
    }
    if (!hung_up) {
        arm_poll(vm, OpKind::conn_poll, vm.setup.conn.get(), POLLIN | POLLRDHUP);
        return;
    }
    // Firecracker >= 1.12 closes the connection only when it exits. Older
    // versions close it right after the handshake; for them the pidfd decides.
    if (vm.setup.handshake.shape == HandshakeShape::both_fields || !vm.setup.pidfd.valid())
        close_vm(vm, "peer closed the connection", false);
}

void Reactor::Impl::close_vm(Vm& vm, const std::string& reason, bool failure) {
    if (vm.closing) return;
    vm.closing = true;
    vm.failed = failure;
    vm.end_reason = reason;
    if (failure) {
        RP_ERROR("%s: %s", vm.name().c_str(), reason.c_str());
        counters.vms_failed.fetch_add(1, std::memory_order_relaxed);
        if (shared.config.kill_on_failure && vm.setup.pid != getpid() && vm.setup.pidfd.valid()) {
            if (syscall(SYS_pidfd_send_signal, vm.setup.pidfd.get(), SIGKILL, nullptr, 0) == 0)
                RP_ERROR("%s: killed with SIGKILL (--kill-on-failure)", vm.name().c_str());
            else
                RP_ERROR("%s: could not be killed: %s", vm.name().c_str(), std::strerror(errno));
        }
    }
    for (uint64_t op : {vm.uffd_read_op, vm.pid_poll_op, vm.conn_poll_op})
        if (op != 0) self.cancel_op(op);
    // Job lists are released at the end of the turn (release_vm_jobs): the
    // caller may be iterating them right now.
    mark_turn(vm);
}

void Reactor::Impl::release_vm_jobs(Vm& vm) {
    for (uint32_t job : vm.completed_jobs) release_job(job), vm.outstanding--;
    for (uint32_t job : vm.deferred_jobs) release_job(job), vm.outstanding--;
    vm.completed_jobs.clear();
    vm.deferred_jobs.clear();
    vm.deferred_zero.clear();
    vm.fault_pages.clear();
}

void Reactor::Impl::destroy_vm(Vm& vm) {
    const auto now = std::chrono::steady_clock::now();
    vm.report.seconds_served = std::chrono::duration<double>(now - vm.started).count();
    vm.report.end_reason = vm.end_reason;
    RP_INFO("%s: released (%s): %llu faults, %llu pages copied on fault, %llu prefetched, %llu zero-filled, "
            "%.1f MiB read%s",
            vm.name().c_str(), vm.end_reason.c_str(), (unsigned long long)vm.report.faults,
            (unsigned long long)vm.report.pages_copied_on_fault, (unsigned long long)vm.report.pages_prefetched,
            (unsigned long long)vm.report.pages_zeroed, vm.report.bytes_read / 1048576.0,
            vm.report.seconds_to_resident >= 0
                ? (", resident after " + std::to_string(static_cast<int>(vm.report.seconds_to_resident * 1000)) + " ms").c_str()
                : "");
    (void)ring->update_file(vm.uffd_file_slot, -1);
    free_file_slots.push_back(vm.uffd_file_slot);
    if (vm.prefetching) prefetch_rr.erase(std::find(prefetch_rr.begin(), prefetch_rr.end(), vm.slot));
    const uint32_t slot = vm.slot;
    {
        std::lock_guard lock(shared.mu);
        shared.reports.push_back(vm.report);
    }
    vms[slot].reset();  // closes the uffd, the connection and the pidfd
    free_vm_slots.push_back(slot);
    counters.vms_active.fetch_sub(1, std::memory_order_relaxed);
    shared.vms_released.fetch_add(1);
    shared.notify();
}

void Reactor::Impl::process_turn() {
    // Turn order (DESIGN.md): events before faults, deferred installs first,
    // then new faults (issuing reads), then every read completed by now, then
    // the prefetcher.
    // Swap with a member so both vectors keep their capacity: no allocation per turn.
    this_turn.clear();
    this_turn.swap(turn_vms);
    for (uint32_t slot : this_turn) {
        Vm* vm = vms[slot].get();
        if (vm == nullptr) continue;
        vm->in_turn = false;
        if (!vm->closing) {
            apply_events(*vm);
            retry_deferred(*vm);
            serve_faults(*vm);       // may complete reads at once from the page cache
            install_completed(*vm);
            note_resident(*vm);
            arm_uffd_read(*vm);
        }
        if (vm->closing) {
            release_vm_jobs(*vm);
            if (vm->outstanding == 0) destroy_vm(*vm);
            continue;
        }
        const bool carry = !vm->deferred_jobs.empty() || !vm->deferred_zero.empty() ||
                           !vm->completed_jobs.empty() || !vm->fault_pages.empty();
        if (carry) {
            mark_turn(*vm);
            if (!vm->deferred_jobs.empty() || !vm->deferred_zero.empty()) arm_timer();
            else if (!vm->completed_jobs.empty()) more_work = true;
        }
    }
    prefetch_step();
}

}  // namespace ringpager
