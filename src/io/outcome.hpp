// What an io_uring result means, decided in one table (STYLE.md: convert
// `-res` to an errno in exactly one place and name every expected one).
#pragma once

#include <cstdint>

namespace ringpager::io {

enum class OpType : uint8_t { nop, read_fixed, read, poll, poll_until, accept, fadvise, timeout, cancel };

enum class Outcome : uint8_t {
    ok,           // res >= 0 (bytes, events, an accepted fd)
    retry,        // EINTR: issue it again
    would_block,  // EAGAIN: nothing there yet, try later
    cancelled,    // ECANCELED: cancelled, or its linked timeout fired
    timed_out,    // ETIME: a timeout that expired (its normal end)
    gone,         // the object went away (EBADF, ENOENT, ESRCH, EPIPE, ECONNRESET, ...)
    no_fds,       // EMFILE, ENFILE, ENOBUFS, ENOMEM: out of a resource, back off
    failed,       // anything else: unexpected, logged by the owner
};

// `res` is the raw CQE result of an operation of `type`.
Outcome classify(OpType type, int32_t res);

// The positive errno of a failed result (0 for a success).
inline int error_of(int32_t res) { return res < 0 ? -res : 0; }

const char* op_name(OpType type);

}  // namespace ringpager::io
