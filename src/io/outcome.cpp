#include "io/outcome.hpp"

#include <cerrno>

namespace ringpager::io {

Outcome classify(OpType type, int32_t res) {
    if (res >= 0) return Outcome::ok;
    switch (-res) {
        case EINTR: return Outcome::retry;
        case EAGAIN: return Outcome::would_block;
        case ECANCELED: return Outcome::cancelled;
        case ETIME: return type == OpType::timeout ? Outcome::timed_out : Outcome::failed;
        case EMFILE:
        case ENFILE:
        case ENOBUFS:
        case ENOMEM: return type == OpType::accept ? Outcome::no_fds : Outcome::failed;
        case EBADF:
        case ENOENT:
        case ESRCH:
        case EPIPE:
        case ECONNRESET:
        case ECONNABORTED:
        case ENOTCONN: return Outcome::gone;
        default: return Outcome::failed;
    }
}

const char* op_name(OpType type) {
    switch (type) {
        case OpType::nop: return "nop";
        case OpType::read_fixed: return "read";
        case OpType::read: return "read";
        case OpType::poll: return "poll";
        case OpType::poll_until: return "poll";
        case OpType::accept: return "accept";
        case OpType::fadvise: return "fadvise";
        case OpType::timeout: return "timeout";
        case OpType::cancel: return "cancel";
    }
    return "?";
}

}  // namespace ringpager::io
