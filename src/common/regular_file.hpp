// Opening a user-named snapshot file (memory file, manifest, layer, build
// input) for reading. A plain open() of a FIFO blocks until a writer appears,
// possibly forever, and a device or directory is never a snapshot, so every
// such path is refused without blocking (SPEC §5) before a byte is read.
// Header-only so the tools (rp-guestsim, rp-baseline) use the same rule
// without linking the engine.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <string_view>

#include "ringpager/file_desc.hpp"

namespace ringpager {

// "a FIFO", "a directory", ...: what a file that is not a regular file is.
inline const char* file_kind(mode_t mode) {
    if (S_ISFIFO(mode)) return "a FIFO";
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    if (S_ISSOCK(mode)) return "a socket";
    return S_ISREG(mode) ? "a regular file" : "of an unknown file type";
}

// Opens `path` O_RDONLY|O_NONBLOCK|O_NOCTTY|O_CLOEXEC, so that no file type
// can block the open, refuses anything but a regular file, then clears
// O_NONBLOCK so reads (and io_uring reads) of the file behave as usual.
// `st`, when given, receives the file's fstat.
//
// On failure `error` is one line naming `what` (the caller's noun: "memory
// file", "base", "layer 2 file") and `path`:
//   "memory file /x is a FIFO, not a regular file"
//   "memory file /x: open: No such file or directory"
// and the Error is the failed call (open, fstat, fcntl), or EINVAL with
// what = "not a regular file" for a file of another type.
inline Result<FileDesc> open_regular_file(const std::string& path, std::string_view what, std::string& error,
                                          struct stat* st = nullptr) {
    const std::string name = std::string(what) + " " + path;
    auto not_regular = [&](mode_t mode) -> Result<FileDesc> {
        error = name + " is " + file_kind(mode) + ", not a regular file";
        return Error{EINVAL, "not a regular file"};
    };
    auto failed = [&](const char* call) -> Result<FileDesc> {
        const Error e = errno_error(call);
        error = name + ": " + e.message();
        return e;
    };
    FileDesc fd(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
    if (!fd.valid()) {
        const int open_errno = errno;
        // open() of a Unix socket fails with ENXIO; name the socket rather than the errno.
        struct stat named {};
        if (open_errno == ENXIO && ::stat(path.c_str(), &named) == 0 && !S_ISREG(named.st_mode))
            return not_regular(named.st_mode);
        errno = open_errno;
        return failed("open");
    }
    struct stat own {};
    if (st == nullptr) st = &own;
    if (::fstat(fd.get(), st) != 0) return failed("fstat");
    if (!S_ISREG(st->st_mode)) return not_regular(st->st_mode);
    const int flags = ::fcntl(fd.get(), F_GETFL);
    if (flags < 0) return failed("fcntl(F_GETFL)");
    if (::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK) != 0) return failed("fcntl(F_SETFL)");
    return fd;
}

}  // namespace ringpager
