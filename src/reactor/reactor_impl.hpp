// Internals of a Reactor, shared by its translation units: reactor.cpp (the
// loop), lifecycle.cpp (adopt, watch, close, destroy a VM), vm.cpp (events,
// faults, prefetch issue) and copy_batch.cpp (installing completed reads).
#pragma once

#include <sys/mman.h>

#include <cassert>
#include <vector>

#include "pager/install.hpp"
#include "reactor/busy_poll.hpp"
#include "reactor/reactor.hpp"

namespace ringpager {

// What each of the reactor's io operations is for (io::OpData::kind).
enum class OpKind : uint16_t {
    free, exit_read, wake_read, timer, drain_timer, uffd_read, pid_poll, conn_poll, page_read, readahead, service
};

// The io payload of an operation of `kind` for VM (slot, gen).
inline io::OpData op_data(OpKind kind, uint32_t slot = 0, uint32_t gen = 0, uint64_t arg = 0) {
    return io::OpData{static_cast<uint16_t>(kind), slot, gen, arg};
}
inline OpKind kind_of(const io::OpData& data) { return static_cast<OpKind>(data.kind); }

// One read-then-install unit: contiguous guest pages read into one buffer
// slot. Job index == buffer slot index.
struct ReadJob {
    bool busy = false;
    bool prefetch = false;
    uint32_t vm_slot = 0;
    uint32_t vm_gen = 0;
    uint64_t first_page = 0;
    uint32_t pages = 0;
    uint64_t page_size = 0;
    uint64_t file_offset = 0;   // source offset of the first page
    uint32_t pending_reads = 0;
    int error = 0;              // first failed read's errno (EIO for a short read)
    const char* error_what = "";
    // Pages whose bytes must not be served (read failed, checksum failed):
    // 1 = poison that page instead. Empty for every healthy job.
    std::vector<uint8_t> poison_pages;
};

// Registered read buffers: small slots for 4 KiB-page faults, big slots
// (2 MiB) for prefetch batches and huge-page faults.
struct BufferPool {
    static constexpr size_t kSmallBytes = 64 * 1024;
    static constexpr size_t kBigBytes = 2 * 1024 * 1024;
    size_t small_count = 0;
    size_t big_count = 0;
    uint8_t* small_base = nullptr;
    uint8_t* big_base = nullptr;
    std::vector<uint32_t> small_free;
    std::vector<uint32_t> big_free;

    size_t slots() const { return small_count + big_count; }
    bool is_big(uint32_t slot) const { return slot >= small_count; }
    uint8_t* data(uint32_t slot) const {
        return is_big(slot) ? big_base + (slot - small_count) * kBigBytes : small_base + slot * kSmallBytes;
    }
    unsigned iovec_index(uint32_t slot) const { return is_big(slot) ? 1 : 0; }
    size_t capacity(uint32_t slot) const { return is_big(slot) ? kBigBytes : kSmallBytes; }
    void release(uint32_t slot) { (is_big(slot) ? big_free : small_free).push_back(slot); }
};

struct Reactor::Impl {
    Impl(Reactor& reactor, EngineShared& engine, ReactorCounters& stats)
        : self(reactor), shared(engine), counters(stats) {}
    ~Impl();

    static constexpr size_t kOps = 8192;
    // Registered buffers are pinned for the reactor's life: 4 MiB of fault
    // slots and 24 MiB of big slots (prefetch batches, huge-page faults).
    static constexpr unsigned kSmallSlots = 64;
    static constexpr unsigned kBigSlots = 12;
    static constexpr unsigned kBigReservedForFaults = 4;
    static constexpr unsigned kMaxVmsPerReactor = 2000;  // fixed-file slots, when RLIMIT_NOFILE allows
    static constexpr unsigned kFirstVmFileSlot = 2;  // 0: exit eventfd, 1: wake eventfd
    static constexpr std::chrono::milliseconds kFaultQuietPeriod{2};
    static constexpr uint64_t kBusyPrefetchBatchBytes = 64 * 1024;
    // Busy polling is considered only this soon after the last fault.
    static constexpr std::chrono::milliseconds kBusyPollAfterFault{1};

    Reactor& self;
    EngineShared& shared;
    ReactorCounters& counters;
    std::unique_ptr<io::IoLoop> io;
    std::vector<std::vector<unsigned>> source_file_slots;  // per engine source, per file
    BufferPool pool;
    std::vector<ReadJob> jobs;
    void* zero_buffer = nullptr;  // 2 MiB of zeros (never written), for hugetlb zero fills
    std::unique_ptr<RingService> service;

    std::vector<std::unique_ptr<Vm>> vms;
    std::vector<uint32_t> free_vm_slots;
    uint32_t vm_generation = 0;
    std::vector<uint32_t> turn_vms;   // VMs with work next turn
    std::vector<uint32_t> this_turn;  // the list being processed
    std::vector<uint32_t> prefetch_rr;
    size_t prefetch_rr_pos = 0;
    unsigned prefetch_inflight = 0;
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
    bool more_work = false;  // something to do next turn without waiting
    __kernel_timespec timer_ts{};

    // reactor.cpp and lifecycle.cpp
    bool setup(std::string& error);
    void loop();
    Result<void> wait_for_completion();
    void dispatch(const io::Completion& c);
    void process_turn();
    void adopt_inbox();
    void adopt(std::unique_ptr<VmSetup> setup);
    void arm_uffd_read(Vm& vm);
    void arm_poll(Vm& vm, OpKind kind, int fd, unsigned events);
    void arm_fixed_read(OpKind kind, unsigned file_slot, uint64_t* value);
    io::Tag arm_timeout(OpKind kind, __kernel_timespec& ts, std::chrono::nanoseconds after);
    void arm_timer();
    void on_conn_ready(Vm& vm, int32_t res);
    void close_vm(Vm& vm, const std::string& reason, bool failure);
    void release_at_stop(Vm& vm, const std::string& why);
    void kill_if_asked(const VmSetup& setup, const std::string& who);
    void start_prefetch(Vm& vm);
    void begin_drain();
    void drain_step();
    void end_drain();
    void release_vm_jobs(Vm& vm);
    void destroy_vm(Vm& vm);
    void mark_turn(Vm& vm);
    Vm* vm_at(uint32_t slot, uint32_t gen);
    unsigned file_slot_of(const Vm& vm, uint32_t file_index) const;

    // vm.cpp
    void on_uffd_read(Vm& vm, int32_t res);
    void apply_events(Vm& vm);
    void note_unmapped(Vm& vm, const InstallResult& r);
    void serve_faults(Vm& vm);
    bool issue_read_job(Vm& vm, uint64_t first_page, uint32_t pages, bool prefetch);
    bool install_zero_source_run(Vm& vm, uint64_t first_page, uint64_t pages);
    void prefetch_step();
    void maybe_readahead(Vm& vm, uint32_t file_index, uint64_t file_offset);
    bool read_from_page_cache(Vm& vm, const SourceExtent& e, uint8_t* into);
    void note_resident(Vm& vm);

    // copy_batch.cpp
    void on_page_read(uint32_t job_index, int32_t res, uint64_t expected);
    // Installs what it can; returns false when the VM must retry later (EAGAIN).
    bool install_job(Vm& vm, uint32_t job_index);
    bool install_zero_pages(Vm& vm, DeferredZero run);
    InstallTarget install_target(Vm& vm);
    bool apply_install(Vm& vm, const InstallResult& r, bool prefetch);
    void release_job(uint32_t job_index);
    void install_completed(Vm& vm);
    bool fault_work_pending();
    bool check_job(Vm& vm, uint32_t slot);
    void retry_deferred(Vm& vm);
};

}  // namespace ringpager
