// Internals of a Reactor, shared by its translation units: reactor.cpp (the
// loop and its turn) and lifecycle.cpp (adopt, watch, close, destroy a VM;
// the graceful stop). A VM's memory is served by its VmPager (src/pager/);
// the reactor implements the PagerHost and PagerEvents the pagers call.
#pragma once

#include <chrono>
#include <memory>
#include <span>
#include <vector>

#include "pager/prefetcher.hpp"
#include "pager/read_jobs.hpp"
#include "pager/vm_pager.hpp"
#include "reactor/busy_poll.hpp"
#include "reactor/prefetch_pace.hpp"
#include "reactor/reactor.hpp"
#include "reactor/run_delay.hpp"

namespace ringpager {

// What each of the reactor's io operations is for (io::OpData::kind).
// Kinds from 0x100 on are the pagers' (PagerOp).
enum class OpKind : uint16_t {
    free, exit_read, wake_read, timer, drain_timer, buffers_timer, prefetch_timer, uffd_read, pid_poll, conn_poll, service
};

// The io payload of an operation of `kind` for VM (slot, gen).
inline io::OpData op_data(OpKind kind, uint32_t slot = 0, uint32_t gen = 0, uint64_t arg = 0) {
    return io::OpData{static_cast<uint16_t>(kind), slot, gen, arg};
}
inline OpKind kind_of(const io::OpData& data) { return static_cast<OpKind>(data.kind); }

// Where the figures of one listener's VMs on this reactor go (VmCounters).
class ListenerEvents final : public PagerEvents {
public:
    ListenerEvents(Reactor::Impl& reactor, VmCounters& counters) : reactor_(reactor), c_(counters) {}
    VmCounters& counters() { return c_; }

    void on_faults(uint64_t count) override;
    void on_removed(uint64_t pages) override { bump(c_.removed_pages, pages); }
    void on_other_event() override { bump(c_.events_other); }
    void on_read(uint64_t bytes, bool page_cache_hit) override;
    void on_installed(const InstallResult& r, bool prefetch) override;
    void on_faults_served(double seconds, uint64_t pages) override { c_.fault_service.observe(seconds, pages); }
    void on_resident(const VmPager& pager, double seconds) override;

private:
    Reactor::Impl& reactor_;
    VmCounters& c_;
};

struct Reactor::Impl final : PagerHost {
    Impl(Reactor& reactor, const ReactorConfig& cfg, ReactorCounters& stats, std::span<VmCounters> per_listener,
         ReactorSink& engine)
        : self(reactor), config(cfg), counters(stats), sink(engine) {
        for (VmCounters& c : per_listener) listener_events.push_back(std::make_unique<ListenerEvents>(*this, c));
    }
    ~Impl() override;

    static constexpr size_t kOps = 8192;
    static constexpr unsigned kFirstVmFileSlot = 2;      // the exit and wake eventfds come first
    // Busy polling is considered only this soon after the last fault.
    static constexpr std::chrono::milliseconds kBusyPollAfterFault{1};
    static constexpr std::chrono::seconds kBufferShrinkInterval{1};

    Reactor& self;
    const ReactorConfig& config;
    ReactorCounters& counters;
    ReactorSink& sink;
    std::vector<std::unique_ptr<ListenerEvents>> listener_events;  // one per listener of the engine
    std::vector<Message> mail;  // taken from the mailbox, one batch at a time
    std::unique_ptr<io::IoLoop> io;
    std::vector<std::vector<unsigned>> source_file_slots;  // per engine source, per file
    ReadJobs jobs;
    std::unique_ptr<PagerContext> pager_context;
    Prefetcher prefetcher;
    // PrefetchDuringFaults::automatic: the pace and its two signals (null: not read).
    std::unique_ptr<ThreadRunDelay> run_delay;
    std::unique_ptr<CpuPressure> cpu_pressure;
    std::unique_ptr<PrefetchPace> prefetch_pace;
    bool run_delay_warned = false;  // a VM process's threads could not be read (said once)
    std::unique_ptr<RingService> service;

    std::vector<std::unique_ptr<Vm>> vms;
    std::vector<uint32_t> free_vm_slots;
    uint32_t vm_generation = 0;
    std::vector<uint32_t> turn_vms;   // VMs with work next turn
    std::vector<uint32_t> this_turn;  // the list being processed
    std::chrono::steady_clock::time_point last_fault_seen{};
    BusyPollWindow busy_poll{std::chrono::nanoseconds(0)};

    std::vector<io::Completion> batch;
    unsigned exit_file_slot = 0;  // the eventfds' fixed-file slots
    unsigned wake_file_slot = 0;
    uint64_t exit_value = 0;
    uint64_t wake_value = 0;
    bool stopping = false;
    bool draining = false;    // graceful stop: finishing restores until the deadline
    uint64_t drain_timer_op = 0;
    __kernel_timespec drain_ts{};
    bool timer_armed = false;
    // While more read buffers are pinned than an idle reactor keeps, a
    // timer asks ReadJobs every kBufferShrinkInterval to give some back.
    bool buffers_timer_armed = false;
    __kernel_timespec buffers_ts{};
    // A prefetcher paused while faults flow (PrefetchDuringFaults::pause)
    // is woken by this once they may have gone quiet.
    bool prefetch_timer_armed = false;
    __kernel_timespec prefetch_ts{};
    bool more_work_next = false;  // something to do next turn without waiting
    __kernel_timespec timer_ts{};

    // reactor.cpp
    bool setup(std::string& error);
    void loop();
    Result<void> wait_for_completion();
    void dispatch(const io::Completion& c);
    void on_uffd_read(Vm& vm, int32_t res);
    void process_turn();
    void arm_fixed_read(OpKind kind, unsigned file_slot, uint64_t* value);
    io::Tag arm_timeout(OpKind kind, __kernel_timespec& ts, std::chrono::nanoseconds after);
    void arm_timer();
    void setup_pace();
    std::optional<PrefetchPace::Stall> pace_stall();
    void mark_turn(Vm& vm);
    Vm* vm_at(uint32_t slot, uint32_t gen);
    Vm& vm_of(const VmPager& pager);

    // lifecycle.cpp
    void take_mail();
    void answer(VmQuery& query);
    void adopt(std::unique_ptr<VmSetup> setup);
    void arm_uffd_read(Vm& vm);
    void arm_poll(Vm& vm, OpKind kind, int fd, unsigned events);
    void on_conn_ready(Vm& vm, int32_t res);
    void close_vm(Vm& vm, const std::string& reason, bool failure);
    void release_at_stop(Vm& vm, const std::string& why);
    void kill_if_asked(const VmSetup& setup, const std::string& who);
    void start_prefetch(Vm& vm);
    void use_working_sets(Vm& vm);
    // Writes the VM's recorded working set; false with `error` if it could not.
    bool write_working_set(Vm& vm, std::string& path, uint64_t& pages, std::string& error);
    void begin_drain(std::chrono::steady_clock::time_point deadline);
    void drain_step();
    void end_drain();
    void destroy_vm(Vm& vm);

    // PagerHost
    void close(VmPager& pager, const std::string& reason, bool failure) override;
    void schedule(VmPager& pager) override;
    void more_work() override { more_work_next = true; }
    bool fault_work_pending() override;
    unsigned file_slot(unsigned source_index, uint32_t file_index) const override;
    std::shared_ptr<FetchSink> fetch_sink(VmPager& pager) override;
};

}  // namespace ringpager
