// Spawning, watching, measuring and stopping a handler process.
#include "handler_process.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace ringpager::bench {
namespace {

using Clock = std::chrono::steady_clock;

int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

// Forks and execs `argv` with stdout/stderr on `log_fd`. Everything the child
// runs between fork and exec is async-signal-safe (the parent has threads).
pid_t spawn(const std::vector<std::string>& argv, int log_fd) {
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid != 0) return pid;
    // Child. PDEATHSIG fires when the forking thread exits: rp-bench forks
    // from its main thread, which lives for the whole run.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    ::dup2(log_fd, STDOUT_FILENO);
    ::dup2(log_fd, STDERR_FILENO);
    // The handler must not inherit a blocked signal mask from a benchmark thread.
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
}

bool is_socket_file(const std::string& path) {
    struct stat st {};
    return ::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
}

// Waits for `socket_path` to exist as a socket; false with `error` set
// otherwise. ringpager renames its socket onto the path once it listens;
// rp-baseline binds the path and listens after, which probe_ready covers.
bool wait_listening(const std::string& socket_path, int pidfd, Clock::time_point deadline, std::string& error) {
    const std::string dir = std::filesystem::path(socket_path).parent_path().string();
    FileDesc inotify(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
    if (inotify.valid()) ::inotify_add_watch(inotify.get(), dir.c_str(), IN_CREATE | IN_MOVED_TO);
    for (;;) {
        if (is_socket_file(socket_path)) return true;
        const auto now = Clock::now();
        if (now >= deadline) {
            error = "handler did not listen on " + socket_path + " in time";
            return false;
        }
        // Capped at 2 ms to re-check, in case the inotify watch could not be set up.
        const auto left_ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count();
        pollfd fds[2] = {{pidfd, POLLIN, 0}, {inotify.get(), POLLIN, 0}};
        const int ready = ::poll(fds, inotify.valid() ? 2 : 1, static_cast<int>(std::min<long>(left_ms, 2)));
        if (ready > 0 && (fds[0].revents & POLLIN)) {
            error = "handler exited before listening on " + socket_path;
            return false;
        }
        if (ready > 0 && (fds[1].revents & POLLIN)) {
            char buf[4096];
            while (::read(inotify.get(), buf, sizeof buf) > 0) {
            }
        }
    }
}

// Proves the handler is serving, not just listening: ringpager binds its
// sockets before its reactors are up, and a connection made in between waits
// in the backlog, which would charge handler startup to the first VM's first
// fault. An empty connection that is closed at once is taken through the
// handler's accept and handshake path and refused; the handler closing its
// end is the proof. (The handler logs one refused handshake for it.) A
// refused or vanished path (a stale socket file not yet replaced, or a
// handler between bind() and listen()) is retried every 2 ms until `deadline`.
bool probe_ready(const std::string& socket_path, int pidfd, Clock::time_point deadline, std::string& error) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, socket_path.c_str(), std::min(socket_path.size() + 1, sizeof addr.sun_path - 1));
    FileDesc sock;
    for (;;) {
        sock = FileDesc(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        if (!sock.valid()) {
            error = std::string("readiness probe: socket: ") + std::strerror(errno);
            return false;
        }
        if (::connect(sock.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) break;
        if ((errno != ECONNREFUSED && errno != ENOENT) || Clock::now() >= deadline) {
            error = std::string("readiness probe: cannot connect to ") + socket_path + ": " + std::strerror(errno);
            return false;
        }
        pollfd exited{pidfd, POLLIN, 0};
        if (::poll(&exited, 1, 2) > 0) {
            error = "handler exited before listening on " + socket_path;
            return false;
        }
    }
    ::shutdown(sock.get(), SHUT_WR);
    for (;;) {
        const auto left_ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (left_ms <= 0) {
            error = "handler did not answer a readiness probe on " + socket_path + " in time";
            return false;
        }
        pollfd fds[2] = {{sock.get(), POLLIN | POLLRDHUP, 0}, {pidfd, POLLIN, 0}};
        if (::poll(fds, 2, static_cast<int>(left_ms)) <= 0) continue;
        if (fds[1].revents & POLLIN) {
            error = "handler exited while answering a readiness probe";
            return false;
        }
        char byte;
        const ssize_t n = ::recv(sock.get(), &byte, 1, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return true;
    }
}

std::string describe_status(int status) {
    if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) return std::string("signal ") + std::to_string(WTERMSIG(status)) + " (" +
                                    strsignal(WTERMSIG(status)) + ")";
    return "status " + std::to_string(status);
}

}  // namespace

Result<HandlerProcess> HandlerProcess::start(const std::vector<std::string>& argv, const std::string& socket_path,
                                             const std::string& log_path, std::chrono::milliseconds deadline,
                                             std::string& error) {
    auto log = FileDesc::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (!log) {
        error = "cannot open handler log " + log_path;
        return log.error();
    }
    HandlerProcess process;
    process.log_path_ = log_path;
    process.pid_ = spawn(argv, log->get());
    if (process.pid_ < 0) {
        error = "fork failed";
        return errno_error("fork");
    }
    process.pidfd_ = FileDesc(pidfd_open(process.pid_));
    if (!process.pidfd_.valid()) {
        error = "pidfd_open failed";
        return errno_error("pidfd_open");
    }
    const auto until = Clock::now() + deadline;
    if (!wait_listening(socket_path, process.pidfd_.get(), until, error) ||
        !probe_ready(socket_path, process.pidfd_.get(), until, error)) {
        error += " (" + argv[0] + "); log tail:\n" + process.log_tail();
        return Error{ETIMEDOUT, "handler start"};
    }
    return process;
}

HandlerProcess::HandlerProcess(HandlerProcess&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)), pidfd_(std::move(other.pidfd_)), log_path_(std::move(other.log_path_)) {}

HandlerProcess& HandlerProcess::operator=(HandlerProcess&& other) noexcept {
    if (this != &other) {
        kill_and_reap();
        pid_ = std::exchange(other.pid_, -1);
        pidfd_ = std::move(other.pidfd_);
        log_path_ = std::move(other.log_path_);
    }
    return *this;
}

HandlerProcess::~HandlerProcess() { kill_and_reap(); }

void HandlerProcess::kill_and_reap() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
}

bool HandlerProcess::exited() const {
    pollfd fd{pidfd_.get(), POLLIN, 0};
    return ::poll(&fd, 1, 0) > 0;
}

Result<ProcUsage> HandlerProcess::usage() const {
    ProcUsage usage;
    const std::string proc = "/proc/" + std::to_string(pid_);
    std::ifstream stat(proc + "/stat");
    std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    // The command name (field 2) may contain spaces; fields after it are plain.
    const size_t close = text.rfind(')');
    if (close == std::string::npos) return Error{ENOENT, "read /proc/PID/stat"};
    std::istringstream fields(text.substr(close + 2));
    std::string field;
    unsigned long long utime = 0, stime = 0;
    for (int index = 3; index <= 15 && fields >> field; ++index) {
        if (index == 14) utime = std::stoull(field);
        if (index == 15) stime = std::stoull(field);
    }
    usage.cpu_seconds = static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
    std::ifstream status(proc + "/status");
    std::string line;
    while (std::getline(status, line)) {
        if (line.rfind("VmHWM:", 0) == 0) usage.peak_rss_mib = std::stod(line.substr(6)) / 1024.0;  // kB
    }
    return usage;
}

std::string HandlerProcess::stop(std::chrono::milliseconds grace, bool& clean) {
    clean = false;
    if (pid_ <= 0) return "not running";
    ::kill(pid_, SIGTERM);
    pollfd fd{pidfd_.get(), POLLIN, 0};
    int ready;
    do {
        ready = ::poll(&fd, 1, static_cast<int>(grace.count()));
    } while (ready < 0 && errno == EINTR);
    std::string suffix;
    if (ready == 0) {
        ::kill(pid_, SIGKILL);
        suffix = " (killed: did not stop within " + std::to_string(grace.count()) + " ms of SIGTERM)";
    }
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
    clean = ready > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    return describe_status(status) + suffix;
}

std::string HandlerProcess::log_tail(size_t max_bytes) const {
    std::ifstream in(log_path_);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (text.size() > max_bytes) text = "..." + text.substr(text.size() - max_bytes);
    return text;
}

}  // namespace ringpager::bench
