// Sockets passed by systemd (socket activation: LISTEN_FDS, LISTEN_PID,
// LISTEN_FDNAMES). A passed fd is hostile until validated: only a listening
// AF_UNIX SOCK_STREAM socket bound to a filesystem path is taken, and it is
// matched to a configured listener by that path.
#pragma once

#include <string>
#include <vector>

#include "ringpager/engine.hpp"

namespace ringpager {

// Takes the sockets systemd passed to this process (none unless LISTEN_PID
// names it) and removes LISTEN_* from the environment, so nothing started
// later inherits them. Every passed fd is validated; the first that is not a
// listening Unix stream socket bound to a path fails the whole set with a
// one-line `error` (every passed fd is closed then).
bool take_activated_sockets(std::vector<InheritedSocket>& out, std::string& error);

// Whether `fd` is a listening AF_UNIX SOCK_STREAM socket bound to a
// filesystem path; on success sets `path`, otherwise `why` says what it is
// instead ("not a socket", "a datagram socket", "not listening", ...).
bool listening_unix_socket_path(int fd, std::string& path, std::string& why);

// `path` made absolute and lexically normal, the form listeners and passed
// sockets are compared in ("run/a.sock" from / equals "/run/./a.sock").
std::string comparable_socket_path(const std::string& path);

}  // namespace ringpager
