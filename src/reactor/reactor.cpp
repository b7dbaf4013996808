// The per-core loop: setup, one turn at a time, completion dispatch.
#include "reactor/reactor.hpp"

#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <future>
#include <string>

#include "common/log.hpp"
#include "common/pidfd.hpp"
#include "reactor/reactor_impl.hpp"
#include "reactor/test_hooks.hpp"

namespace ringpager {
namespace {

// Without CAP_IPC_LOCK io_uring charges what it pins (its rings on some
// kernels, the registered read buffers on all) to RLIMIT_MEMLOCK, and
// systemd's default limit, 8 MiB, is less than one reactor registers. An
// ENOMEM from setup says so, with the limit and the fix.
std::string memlock_hint() {
    rlimit lim{};
    const std::string limit = getrlimit(RLIMIT_MEMLOCK, &lim) != 0 ? "unknown"
                              : lim.rlim_cur == RLIM_INFINITY    ? "unlimited"
                                                                 : std::to_string(lim.rlim_cur / 1024) + " KiB";
    return " (without CAP_IPC_LOCK, io_uring charges its rings and registered buffers to RLIMIT_MEMLOCK, now " + limit +
           ": raise it (ulimit -l; LimitMEMLOCK=infinity under systemd) or grant CAP_IPC_LOCK)";
}

}  // namespace

Reactor::Reactor(ReactorConfig config, ReactorCounters& counters, std::span<VmCounters> listener_counters,
                 ReactorSink& sink)
    : config_(std::move(config)), counters_(counters), listener_counters_(listener_counters), sink_(sink) {}

Reactor::~Reactor() {
    if (thread_.joinable()) {
        request_stop();
        thread_.join();
    }
    if (exit_efd_ >= 0) close(exit_efd_);
}

bool Reactor::start(std::string& error) {
    exit_efd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    auto mailbox = Mailbox::create(config_.mailbox_vms);
    if (exit_efd_ < 0 || !mailbox) {
        error = std::string("eventfd: ") + std::strerror(errno);
        return false;
    }
    mailbox_ = std::move(*mailbox);
    wake_efd_ = mailbox_->wake_fd();  // the mailbox owns it
    impl_ = std::make_unique<Impl>(*this, config_, counters_, listener_counters_, sink_);
    // The ring must be created by the thread that uses it (SINGLE_ISSUER).
    std::promise<std::string> ready;
    auto ready_future = ready.get_future();
    thread_ = std::thread([this, &ready] {
        // Named and prioritized before start() returns, so both are visible at once.
        char name[16];
        snprintf(name, sizeof name, "rp-reactor-%u", config_.index);
        pthread_setname_np(pthread_self(), name);
        apply_nice();
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

void Reactor::attach_service(std::unique_ptr<RingService> service) { mailbox_->post(AttachService{std::move(service)}); }

std::unique_ptr<VmSetup> Reactor::hand_off(std::unique_ptr<VmSetup> vm) { return mailbox_->post_vm(std::move(vm)); }

void Reactor::request_drain(std::chrono::steady_clock::time_point deadline) { mailbox_->post(Drain{deadline}); }

io::IoLoop& Reactor::io() { return *impl_->io; }

io::OpData Reactor::service_op(uint64_t cookie) { return op_data(OpKind::service, 0, 0, cookie); }

void Reactor::cancel_op(io::Tag tag) { impl_->io->cancel(tag); }

// A reactor serves every vCPU of its VMs, so under fair scheduling at the
// vCPUs' own priority it gets one thread's share of a core crowded with them
// while all of them wait on it. A lower nice value (config.reactor_nice,
// -10 by default) weights it like the handful of threads it stands for.
// Without CAP_SYS_NICE a negative value is refused; the reactor then runs
// at the inherited priority and the engine's summary line says so.
void Reactor::apply_nice() {
    const id_t tid = static_cast<id_t>(gettid());
    if (setpriority(PRIO_PROCESS, tid, config_.nice) != 0) nice_error_ = errno;
    errno = 0;
    const int now = getpriority(PRIO_PROCESS, tid);
    nice_ = (now == -1 && errno != 0) ? 0 : now;
}

void Reactor::thread_main() {
    impl_->loop();
    impl_.reset();  // ring first, then buffers (Impl's destructor order)
}

Reactor::Impl::~Impl() {
    io.reset();  // cancels whatever is still queued before the buffers (jobs) go away
}

bool Reactor::Impl::setup(std::string& error) {
    unsigned source_files = 0;
    for (const Source* source : config.sources) source_files += static_cast<unsigned>(source->file_fds().size());
    const unsigned file_slots = kFirstVmFileSlot + source_files + config.max_vms;
    auto created = io::IoLoop::create({1024, static_cast<unsigned>(kOps), file_slots});
    if (!created) {
        error = "cannot create io_uring with " + std::to_string(file_slots) +
                " fixed files: " + created.error().message();
        if (created.error().code == ENOMEM) error += memlock_hint();
        return false;
    }
    io = std::move(*created);
    self.setup_mode_ = io->setup_mode();
    // A ring without the task-run flag cannot be polled: such a reactor always sleeps.
    busy_poll = BusyPollWindow(io->can_busy_poll() ? std::chrono::nanoseconds(config.busy_poll_max)
                                                   : std::chrono::nanoseconds(0));
    unsigned efd_slots[2];
    const int efds[] = {self.exit_efd_, self.wake_efd_};
    for (unsigned i = 0; i < 2; i++) {
        auto slot = io->add_file(efds[i]);
        if (!slot) {
            error = "cannot register eventfd: " + slot.error().message();
            return false;
        }
        efd_slots[i] = *slot;
    }
    exit_file_slot = efd_slots[0];
    wake_file_slot = efd_slots[1];
    for (const Source* source : config.sources) {
        source_file_slots.emplace_back();
        for (int fd : source->file_fds()) {
            auto slot = io->add_file(fd);
            if (!slot) {
                error = "cannot register snapshot file: " + slot.error().message();
                return false;
            }
            source_file_slots.back().push_back(*slot);
        }
    }

    if (config.pace_prefetch) setup_pace();

    if (auto r = jobs.map(*io); !r) {
        error = "cannot set up read buffers: " + r.error().message();
        if (r.error().code == ENOMEM) error += memlock_hint();
        return false;
    }
    counters.buffers_pinned_bytes.store(jobs.pinned_bytes(), std::memory_order_relaxed);
    pager_context = std::make_unique<PagerContext>(PagerContext{*io, jobs, *this, config.pager});
    batch.reserve(kOps);
    // One worker per ring copies punted prefetch reads: enough to overlap the
    // reads with this thread's installs without crowding out vCPU threads.
    if (auto r = io->limit_workers(1, 1); !r)
        RP_DEBUG("reactor %u: io-wq worker limit not set: %s", config.index, r.error().message().c_str());
    arm_fixed_read(OpKind::exit_read, exit_file_slot, &exit_value);
    arm_fixed_read(OpKind::wake_read, wake_file_slot, &wake_value);
    return true;
}

void Reactor::Impl::arm_fixed_read(OpKind kind, unsigned file_slot, uint64_t* value) {
    io->read(op_data(kind), file_slot, value, sizeof *value);
}

io::Tag Reactor::Impl::arm_timeout(OpKind kind, __kernel_timespec& ts, std::chrono::nanoseconds after) {
    ts.tv_sec = after.count() / 1000000000;
    ts.tv_nsec = after.count() % 1000000000;
    return io->timeout(op_data(kind), &ts);
}

void Reactor::Impl::arm_timer() {
    if (timer_armed) return;
    timer_armed = true;
    // Retry installs that met EAGAIN within 50 µs, without spinning.
    arm_timeout(OpKind::timer, timer_ts, std::chrono::microseconds(50));
}

void Reactor::Impl::loop() {
    for (;;) {
        test_hooks::at_turn(config.index, io->faults());
        const bool work_waiting = more_work_next;
        more_work_next = false;
        if (auto r = work_waiting ? io->submit_and_wait(0) : wait_for_completion(); !r) {
            RP_ERROR("reactor %u: %s; stopping this reactor", config.index, r.error().message().c_str());
            self.failed_ = true;
            return;
        }
        if (work_waiting) io->flush_completions();
        batch.clear();
        io->reap(batch);
        for (const io::Completion& c : batch) dispatch(c);
        process_turn();
        if (stopping && vms.size() == free_vm_slots.size() && (!service || service->idle())) return;
    }
}

// Submits this turn's work and waits for a completion. While faults are
// flowing it busy-polls first (busy_poll.hpp): the next fault usually comes
// sooner than a sleep and a wake-up take.
Result<void> Reactor::Impl::wait_for_completion() {
    using clock = std::chrono::steady_clock;
    auto slept_from = clock::now();
    if (busy_poll.max().count() == 0 || slept_from - last_fault_seen > kBusyPollAfterFault)
        return io->submit_and_wait(1);
    if (busy_poll.window().count() != 0) {
        if (io->submit_and_poll(busy_poll.window())) {
            counters.add(counters.busy_poll_hits, 1);
            return {};
        }
        counters.add(counters.busy_poll_misses, 1);
        slept_from = clock::now();
    }
    auto r = io->submit_and_wait(1);
    busy_poll.woke_after(clock::now() - slept_from);
    return r;
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

void Reactor::Impl::dispatch(const io::Completion& c) {
    const io::OpData& op = c.data;
    Vm* vm = vm_at(op.slot, op.gen);
    if (is_pager_op(op)) {
        if (vm == nullptr) return;  // cannot happen: the VM outlives its pager's operations
        if (op.kind == static_cast<uint16_t>(PagerOp::page_read))
            vm->pager->on_read_done(static_cast<uint32_t>(op.arg), c.res, op.arg >> 32);
        else
            vm->pager->on_readahead_done();
        mark_turn(*vm);
        return;
    }
    const OpKind kind = kind_of(op);
    switch (kind) {
        case OpKind::exit_read:
            if (!stopping) {
                RP_DEBUG("reactor %u: stopping", config.index);
                if (service && !draining) service->stop(self);
                stopping = true;
                for (auto& v : vms)
                    if (v && !v->closing) release_at_stop(*v, "the engine stopped at once");
            }
            break;
        case OpKind::wake_read:
            take_mail();
            arm_fixed_read(OpKind::wake_read, wake_file_slot, &wake_value);
            break;
        case OpKind::timer:
            timer_armed = false;
            break;
        case OpKind::buffers_timer:
            buffers_timer_armed = false;
            if (!jobs.shrink())
                RP_INFO("reactor %u: idle: read buffers back to %llu KiB pinned", config.index,
                        (unsigned long long)(jobs.pinned_bytes() >> 10));
            counters.buffers_pinned_bytes.store(jobs.pinned_bytes(), std::memory_order_relaxed);
            sink.changed();  // whoever waits on the figures (tests, ctl)
            break;
        case OpKind::prefetch_timer:  // the turn that follows asks the prefetcher again
            prefetch_timer_armed = false;
            break;
        case OpKind::drain_timer:
            drain_timer_op = 0;
            if (!stopping) end_drain();
            break;
        case OpKind::uffd_read:
            vm->uffd_read_op = 0;
            vm->ops_outstanding--;
            on_uffd_read(*vm, c.res);
            break;
        case OpKind::pid_poll:
            vm->pid_poll_op = 0;
            vm->ops_outstanding--;
            if (c.res > 0 && !vm->closing) close_vm(*vm, "VM process exited", false);
            break;
        case OpKind::conn_poll:
            vm->conn_poll_op = 0;
            vm->ops_outstanding--;
            on_conn_ready(*vm, c.res);
            break;
        case OpKind::service:
            if (service) service->on_completion(self, op.arg, c);
            break;
        case OpKind::free:
            break;
    }
    if (vm != nullptr && vm->closing) mark_turn(*vm);
}

void Reactor::Impl::on_uffd_read(Vm& vm, int32_t res) {
    if (vm.closing) return;
    if (res < 0) {
        const int err = io::error_of(res);
        if (err == EAGAIN || err == EINTR) {
            mark_turn(vm);  // re-armed at the end of the turn
            return;
        }
        close_vm(vm, std::string("reading its userfaultfd failed: ") + std::strerror(err), true);
        return;
    }
    vm.pager->take_messages(static_cast<size_t>(res));
    mark_turn(vm);
    // The messages are copied out: read the next ones at once, so a fault
    // that comes while this turn installs or prefetches is seen by
    // fault_work_pending, not only after the turn (VmPager::take_messages
    // has drained the uffd; what comes next is applied next turn).
    arm_uffd_read(vm);
}

// Everything other threads posted: services to run, VMs to adopt, a
// graceful stop.
void Reactor::Impl::take_mail() {
    test_hooks::at(test_hooks::Point::before_take_mail, config.index, 0);
    mail.clear();
    self.mailbox_->take(mail);
    for (Message& m : mail) {
        if (auto* attach = std::get_if<AttachService>(&m)) {
            if (service) continue;  // one service per reactor
            service = std::move(attach->service);
            if (stopping || draining) service->stop(self);
            else service->start(self);
        } else if (auto* vm = std::get_if<AdoptVm>(&m)) {
            adopt(std::move(vm->vm));
        } else if (auto* drain = std::get_if<Drain>(&m)) {
            if (!draining && !stopping) begin_drain(drain->deadline);
        } else if (auto* query = std::get_if<Query>(&m)) {
            answer(*query->query);
        } else if (std::holds_alternative<StopAccepting>(m)) {
            if (service && !stopping && !draining) service->stop(self);
        } else if (auto* fetched = std::get_if<Fetched>(&m)) {
            // A VM gone meanwhile has nothing left to receive it.
            if (Vm* owner = vm_at(fetched->slot, fetched->gen); owner != nullptr && !owner->closing)
                owner->pager->on_fetched(fetched->cookie, fetched->error);
        }
    }
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
        VmPager& pager = *vm->pager;
        if (!vm->closing) {
            pager.apply_events();
            pager.retry_deferred();
            pager.serve_faults();       // may complete reads at once from the page cache
            pager.install_completed();
            pager.note_resident();
            arm_uffd_read(*vm);
        }
        if (vm->closing) {
            pager.release_jobs();
            if (vm->outstanding() == 0) destroy_vm(*vm);
            continue;
        }
        if (pager.has_carry()) {
            mark_turn(*vm);
            if (pager.waits_on_events()) arm_timer();
            else if (pager.has_completed()) more_work_next = true;
        }
    }
    const auto now = std::chrono::steady_clock::now();
    const bool faults_recent = now - last_fault_seen < config.fault_quiet_period;
    Prefetcher::Config pace = config.prefetch;
    if (prefetch_pace && !prefetcher.empty()) {
        const uint64_t switches = prefetch_pace->switches();
        pace.pause_during_faults = prefetch_pace->pause(now, faults_recent);
        if (prefetch_pace->switches() != switches)
            RP_DEBUG("reactor %u: prefetch %s while faults flow (%s %.3f over the last window)", config.index,
                     pace.pause_during_faults ? "paused" : "in steps",
                     prefetch_pace->signal() == PrefetchPace::Signal::vm_run_delay ? "VMs' run delay"
                                                                                   : "host CPU pressure",
                     prefetch_pace->last_share());
    }
    if (draining) pace.pause_during_faults = false;  // a graceful stop finishes restores
    if (prefetch_pace) {
        counters.prefetch_paused.store(pace.pause_during_faults ? 1 : 0, std::memory_order_relaxed);
        counters.prefetch_pace_switches.store(prefetch_pace->switches(), std::memory_order_relaxed);
        const auto signal = prefetch_pace->signal();
        counters.prefetch_pace_signal.store(!signal ? 0 : *signal == PrefetchPace::Signal::vm_run_delay ? 1 : 2,
                                            std::memory_order_relaxed);
    }
    if (prefetcher.step(jobs, *this, faults_recent, pace) && !prefetch_timer_armed) {
        // Held back: wake when faults may have gone quiet, or the pace's
        // window ends (it may resume steps).
        auto wake = last_fault_seen + config.fault_quiet_period;
        if (prefetch_pace) wake = std::min(wake, prefetch_pace->window_end());
        prefetch_timer_armed = true;
        arm_timeout(OpKind::prefetch_timer, prefetch_ts, std::max(wake - now, std::chrono::steady_clock::duration(0)));
    }
    counters.buffers_busy.store(jobs.busy(), std::memory_order_relaxed);
    counters.buffers_pinned_bytes.store(jobs.pinned_bytes(), std::memory_order_relaxed);
    if (jobs.above_minimum() && !buffers_timer_armed) {
        buffers_timer_armed = true;
        arm_timeout(OpKind::buffers_timer, buffers_ts, kBufferShrinkInterval);
    }
    if (draining && !stopping) drain_step();
}

// PrefetchDuringFaults::automatic. Without either signal the pace is steps.
void Reactor::Impl::setup_pace() {
    if (!config.proc_root.empty()) run_delay = std::make_unique<ThreadRunDelay>(config.proc_root);
    if (!config.cpu_pressure_path.empty()) {
        std::string why;
        cpu_pressure = std::make_unique<CpuPressure>(config.cpu_pressure_path, why);
        if (!why.empty()) {
            cpu_pressure.reset();
            if (run_delay)
                RP_WARN("reactor %u: host CPU pressure unavailable (%s): prefetch paced by its VMs' run delay alone",
                        config.index, why.c_str());
            else
                RP_WARN("reactor %u: prefetch pace by CPU pressure unavailable (%s): steps while faults flow",
                        config.index, why.c_str());
        }
    }
    if (run_delay || cpu_pressure)
        prefetch_pace = std::make_unique<PrefetchPace>(config.pace, [this] { return pace_stall(); });
}

// The run delay of the threads of up to ThreadRunDelay::kMaxProcesses of this
// reactor's VM processes still restoring; where none can be read, the host's
// CPU pressure. With no VM still restoring, nothing: there is no prefetch to
// pace.
std::optional<PrefetchPace::Stall> Reactor::Impl::pace_stall() {
    if (run_delay) {
        std::array<pid_t, ThreadRunDelay::kMaxProcesses> pids{};
        std::array<const FileDesc*, ThreadRunDelay::kMaxProcesses> pidfds{};
        size_t n = 0;
        for (const std::unique_ptr<Vm>& vm : vms) {
            if (n == pids.size()) break;
            if (!vm || vm->closing || !vm->pager || vm->resident()) continue;
            if (std::find(pids.begin(), pids.begin() + n, vm->setup.pid) != pids.begin() + n) continue;
            pidfds[n] = &vm->setup.pidfd;
            pids[n++] = vm->setup.pid;
        }
        if (n == 0) return std::nullopt;
        std::string why;
        if (auto total = run_delay->total_us(std::span<const pid_t>(pids.data(), n), why))
            return PrefetchPace::Stall{*total, PrefetchPace::Signal::vm_run_delay};
        // Said once, and not for a VM process that just ended (its reactor has
        // yet to see it). Asked through the pidfds: a raw pid may be another's.
        const auto alive = [](const FileDesc* pidfd) { return alive_through_pidfd(*pidfd); };
        if (!run_delay_warned && std::any_of(pidfds.begin(), pidfds.begin() + n, alive)) {
            run_delay_warned = true;
            RP_WARN("reactor %u: its VMs' run delay unreadable (%s): %s", config.index, why.c_str(),
                    cpu_pressure ? "prefetch paced by host CPU pressure" : "steps while faults flow");
        }
    }
    if (cpu_pressure) {
        if (auto total = cpu_pressure->read()) return PrefetchPace::Stall{*total, PrefetchPace::Signal::host_pressure};
    }
    return std::nullopt;
}

}  // namespace ringpager
