// Pidfds of peers: the only handle through which ringpager signals a VM
// process. A raw pid can be reused by an unrelated process once the peer
// exits; a pidfd names one process for its whole life (SPEC §5: "any kill of
// a VM: only through its pidfd, never a raw pid").
#pragma once

#include <sys/types.h>

#include <string>

#include "ringpager/file_desc.hpp"

namespace ringpager {

// The pidfd of the process at the other end of the connected Unix socket
// `conn`, taken right after accept. SO_PEERPIDFD (Linux 6.5+) names exactly
// the process that connected. Older kernels fall back to pidfd_open on the
// SO_PEERCRED pid, kept only while the connection is still up (a peer that
// has already hung up may have exited and its pid been reused). Returns an
// invalid FileDesc when neither works: such a peer can never be killed.
FileDesc open_peer_pidfd(int conn, pid_t pid);

// Sends SIGKILL through `pidfd`. Returns "" on success, else why not (the
// process already exited: "No such process").
std::string kill_through_pidfd(const FileDesc& pidfd);

// Whether the process behind `pidfd` is still alive (signal 0 through it);
// true when there is no pidfd, as nothing says otherwise.
bool alive_through_pidfd(const FileDesc& pidfd);

}  // namespace ringpager
