// IoLoop: the only place io_uring operations are prepared (DESIGN.md "The
// shape of the house"). One per reactor thread. It offers typed operations,
// tags every one with an index+generation into a preallocated table (one
// completion-tag scheme; 0 means "ignore"), classifies each result once
// (io/outcome.hpp), registers files in a sparse fixed table at run time, and
// parks operations that find the submission queue full instead of spinning.
// Tests inject results through IoFaults (the fake backend): an injected
// operation never reaches the kernel and completes with the given result.
#pragma once

#include <liburing.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "io/outcome.hpp"
#include "io/ring.hpp"
#include "ringpager/result.hpp"

namespace ringpager::io {

// What the owner of an operation gets back with its completion, unchanged:
// which of its handlers (`kind`), for which of its objects (`slot`, `gen`),
// plus one word of its own.
struct OpData {
    uint16_t kind = 0;
    uint32_t slot = 0;
    uint32_t gen = 0;
    uint64_t arg = 0;
};

using Tag = uint64_t;  // index+generation of the operation; 0: none

struct Completion {
    OpData data;
    OpType type = OpType::nop;
    int32_t res = 0;       // the kernel's result (or the injected one)
    Outcome outcome = Outcome::ok;
    bool more = false;     // a multishot operation stays armed
};

// Results tests inject instead of the kernel's (the fake io backend).
class IoFaults {
public:
    // The next `times` operations of `type` complete with `result` (a
    // negative errno, or a byte count for a short read) without being issued.
    void inject(OpType type, int32_t result, unsigned times = 1);
    // The next `times` submissions fail with `error` (a positive errno).
    void fail_submit(int error, unsigned times = 1);
    // The next `times` file registrations fail with `error`.
    void fail_file_registration(int error, unsigned times = 1);
    // The next `times` operations find the submission queue full (they park).
    void fill_sq(unsigned times);

    bool armed() const { return armed_; }
    // True while some armed fault has not happened yet.
    bool pending() const {
        return !injections_.empty() || submit_times_ != 0 || registration_times_ != 0 || sq_full_times_ != 0;
    }
    bool take_sq_full();
    bool take(OpType type, int32_t& result);
    bool take_submit_failure(int& error);
    bool take_registration_failure(int& error);

private:
    struct Injection {
        OpType type;
        int32_t result;
        unsigned times;
    };
    std::vector<Injection> injections_;
    int submit_error_ = 0;
    unsigned submit_times_ = 0;
    int registration_error_ = 0;
    unsigned registration_times_ = 0;
    unsigned sq_full_times_ = 0;
    bool armed_ = false;
};

class IoLoop {
public:
    struct Setup {
        unsigned sq_entries = 1024;
        unsigned cq_entries = 8192;   // also the number of operations in flight at most
        unsigned file_slots = 64;     // sparse fixed-file table
    };
    // Creates the ring on the calling thread (SINGLE_ISSUER where the kernel
    // allows) and its sparse file table.
    static Result<std::unique_ptr<IoLoop>> create(const Setup& setup);
    ~IoLoop();
    IoLoop(const IoLoop&) = delete;
    IoLoop& operator=(const IoLoop&) = delete;

    // ---- operations (each returns its tag) --------------------------------
    // Reads into a registered buffer from a registered file; `async` sends it
    // to an io-wq worker at once (a page cache hit would otherwise be copied
    // inline in this thread's io_uring_enter).
    Tag read_fixed(const OpData& data, unsigned file_slot, void* buf, uint32_t len, uint64_t offset,
                   uint16_t buf_index, bool async);
    // A plain read from a registered file (eventfds, userfaultfds).
    Tag read(const OpData& data, unsigned file_slot, void* buf, uint32_t len);
    Tag poll(const OpData& data, int fd, unsigned events);
    // A poll that is cancelled (completes with ECANCELED) after `timeout`;
    // `timeout` must stay valid until the poll completes.
    Tag poll_until(const OpData& data, int fd, unsigned events, const __kernel_timespec* timeout);
    Tag accept(const OpData& data, int listen_fd);
    Tag fadvise(const OpData& data, unsigned file_slot, uint64_t offset, uint64_t len, int advice);
    // Completes after `after` (must stay valid until then) with timed_out.
    Tag timeout(const OpData& data, const __kernel_timespec* after);
    // Asks the kernel to cancel `tag`; its own completion says how it ended.
    void cancel(Tag tag);

    // Operations that can still be started; callers keep a margin.
    size_t ops_free() const { return free_.size(); }

    // ---- submission and completion -----------------------------------------
    // Submits everything prepared (parked operations first) and waits for at
    // least `wait_nr` completions.
    Result<void> submit_and_wait(unsigned wait_nr);
    // Submits, then polls for a completion up to `max` without sleeping.
    bool submit_and_poll(std::chrono::nanoseconds max);
    bool can_busy_poll() const;
    void flush_completions();
    // Submits what is prepared without waiting, so operations armed during a
    // turn (a uffd read) start now rather than at the turn's end. A submit
    // error resurfaces from the loop's next submit_and_wait.
    void submit_prepared();
    // Cheap (no syscall): false only when nothing can have completed since
    // the last reap and nothing waits to be submitted.
    bool maybe_completions() const;
    // Moves every available completion into `out`; each operation's slot is
    // freed unless it stays armed (more).
    size_t reap(std::vector<Completion>& out);
    // True when a completion already in the queue satisfies `match(OpData)`;
    // consumes nothing.
    template <typename Match>
    bool any_completion(Match match) {
        return ring_->any_completion([&](uint64_t user_data) {
            const Op* op = find(user_data);
            return op != nullptr && match(op->data);
        });
    }

    // ---- registration -------------------------------------------------------
    // Registers `fd` in a free fixed-file slot; the slot or the errno.
    Result<unsigned> add_file(int fd);
    void remove_file(unsigned slot);
    Result<void> register_buffers(std::span<const iovec> buffers);
    // A sparse table of `count` buffer entries and its run-time updates (a
    // null iovec empties an entry; reads still using the old buffer keep it).
    Result<void> register_buffers_sparse(unsigned count);
    Result<void> update_buffer(unsigned index, const iovec& buffer);
    Result<void> limit_workers(unsigned bounded, unsigned unbounded);

    const std::string& setup_mode() const;
    IoFaults& faults() { return faults_; }
    size_t parked() const { return parked_.size(); }

private:
    struct Request {
        OpType type = OpType::nop;
        Tag tag = 0;
        int fd = -1;          // or the fixed file slot
        void* buf = nullptr;
        uint64_t len = 0;
        uint64_t offset = 0;
        uint16_t buf_index = 0;
        unsigned flags = 0;   // poll events, fadvise advice, accept flags
        bool async = false;
        const __kernel_timespec* ts = nullptr;
        Tag target = 0;       // cancel
    };
    struct Op {
        OpData data;
        OpType type = OpType::nop;
        uint32_t gen = 0;
        bool busy = false;
    };

    IoLoop() = default;
    Tag start(OpType type, const OpData& data, Request request);
    bool prepare(const Request& request);
    void flush_parked();
    Op* find(Tag tag);
    const Op* find(Tag tag) const;

    std::unique_ptr<Ring> ring_;
    std::vector<Op> ops_;
    std::vector<uint32_t> free_;
    std::deque<Request> parked_;           // found the SQ full; prepared at the next submit
    struct Synthetic {
        Tag tag;
        int32_t result;
    };
    std::vector<Synthetic> synthetic_;     // injected results, delivered at the next reap
    std::vector<unsigned> free_file_slots_;
    IoFaults faults_;
};

}  // namespace ringpager::io
