// Pins `ringpager serve` under systemd: the notify protocol as a manager
// reads it from NOTIFY_SOCKET (READY=1 once the socket accepts, STATUS= with
// the VM counts, WATCHDOG=1 only when asked for, STOPPING=1 on SIGTERM), and
// socket activation (a VM served through a socket systemd-socket-activate
// passed, left in place at exit; a passed fd that is not a listening Unix
// stream socket refused with one exact line), and what the unit's sandbox
// leans on (LimitMEMLOCK when there is no CAP_IPC_LOCK).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "common/engine_fixture.hpp"
#include "common/process.hpp"

using namespace ringpager;
using namespace ringpager::testing;

namespace {

constexpr uint64_t MiB = 1024 * 1024;
const std::string kSocketActivate = "/usr/bin/systemd-socket-activate";

int ms_left(std::chrono::steady_clock::time_point deadline) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    return static_cast<int>(std::max<int64_t>(0, left.count()));
}

sockaddr_un unix_address(const std::string& path) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), std::min(path.size(), sizeof addr.sun_path - 1));
    return addr;
}

// The manager's end of NOTIFY_SOCKET: a datagram socket bound in the test's
// directory; every message the service sends is one datagram.
class NotifyReader {
public:
    explicit NotifyReader(std::string path) : path_(std::move(path)), fd_(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) {
        const sockaddr_un addr = unix_address(path_);
        EXPECT_EQ(bind(fd_.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0) << std::strerror(errno);
    }
    std::string env() const { return "NOTIFY_SOCKET=" + path_; }

    // Reads messages (all kept in seen()) until one contains `needle`; false
    // after kWait without one.
    bool wait_for(const std::string& needle, std::string* found = nullptr) {
        const auto deadline = std::chrono::steady_clock::now() + kWait;
        for (;;) {
            pollfd p{fd_.get(), POLLIN, 0};
            if (poll(&p, 1, ms_left(deadline)) <= 0) return false;
            char buf[4096];
            const ssize_t n = recv(fd_.get(), buf, sizeof buf, 0);
            if (n < 0) return false;
            seen_.emplace_back(buf, static_cast<size_t>(n));
            if (seen_.back().find(needle) != std::string::npos) {
                if (found) *found = seen_.back();
                return true;
            }
        }
    }
    const std::vector<std::string>& seen() const { return seen_; }
    size_t count(const std::string& message) const { return std::count(seen_.begin(), seen_.end(), message); }

private:
    std::string path_;
    FileDesc fd_;
    std::vector<std::string> seen_;
};

// Reads a child's output until `needle` appears; false after kWait or when it closes its output.
bool read_until(Child& child, const std::string& needle, std::string& said) {
    const auto deadline = std::chrono::steady_clock::now() + kWait;
    while (said.find(needle) == std::string::npos) {
        pollfd p{child.stderr_fd, POLLIN, 0};
        if (poll(&p, 1, ms_left(deadline)) <= 0) return false;
        char buf[512];
        const ssize_t n = read(child.stderr_fd, buf, sizeof buf);
        if (n <= 0) return false;
        said.append(buf, static_cast<size_t>(n));
    }
    return true;
}

// An fd numbered above 3, so handing it to a child as fd 3 is a real dup2.
FileDesc high(int fd) {
    FileDesc owned(fd);
    return FileDesc(fcntl(owned.get(), F_DUPFD_CLOEXEC, 10));
}

FileDesc unix_socket(int type, const std::string& path, bool abstract, bool do_listen) {
    FileDesc fd = high(socket(AF_UNIX, type | SOCK_CLOEXEC, 0));
    sockaddr_un addr = unix_address(path);
    socklen_t len = sizeof addr;
    if (abstract) {
        addr.sun_path[0] = '\0';
        len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
    }
    EXPECT_EQ(bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), len), 0) << std::strerror(errno);
    if (do_listen) {
        EXPECT_EQ(listen(fd.get(), 16), 0) << std::strerror(errno);
    }
    return fd;
}

class SystemdTest : public ::testing::Test {
protected:
    void SetUp() override {
        ringpager = tool_path("RP_RINGPAGER");
        guestsim = tool_path("RP_GUESTSIM");
        ASSERT_FALSE(ringpager.empty() || guestsim.empty()) << "run through meson test";
        mem = make_image(dir, "mem", 4 * MiB);
        socket_path = dir.file("vm.sock");
    }

    Child guest(const std::vector<std::string>& extra = {}) {
        std::vector<std::string> args{"run", "--socket", socket_path, "--mem-file", mem, "--regions", "4M"};
        args.insert(args.end(), extra.begin(), extra.end());
        return spawn(guestsim, args);
    }

    // `ringpager serve` with `fd` as its fd 3 and LISTEN_FDS=1 (what systemd
    // does): /bin/sh sets LISTEN_PID to its own pid and execs, so the pid is
    // the server's. Returns the exit status and the output.
    int serve_with_passed_fd(int fd, const std::vector<std::string>& env, std::string& out) {
        SpawnExtras extras{env, {{fd, 3}}};
        extras.env.push_back("LISTEN_FDS=1");
        return spawn("/bin/sh", {"-c", "LISTEN_PID=$$ exec \"$0\" \"$@\"", ringpager, "serve", "--socket", socket_path,
                                 "--mem-file", mem, "--reactors", "1"},
                     extras)
            .wait(&out);
    }

    TempDir dir;
    std::string ringpager, guestsim, mem, socket_path;
};

// READY=1 comes once the socket accepts: a guest started the moment it
// arrives (connecting once, as Firecracker does) is served. STATUS= follows
// the VM counts, STOPPING=1 comes on SIGTERM, and with no WATCHDOG_USEC
// there is never a WATCHDOG=1.
TEST_F(SystemdTest, ReadyOnceTheSocketAcceptsThenStatusAndStoppingOnSigterm) {
    NotifyReader notify(dir.file("notify.sock"));
    Child server = spawn(ringpager, {"serve", "--socket", socket_path, "--mem-file", mem, "--reactors", "1"},
                         {{notify.env()}, {}});
    std::string ready;
    ASSERT_TRUE(notify.wait_for("READY=1", &ready));
    EXPECT_EQ(notify.seen().size(), 1u);
    EXPECT_EQ(ready, "READY=1\nSTATUS=serving: 0 VMs active, 0 accepted, 0 refused, 0 released, 0 failed");
    Child held = guest({"--pattern", "sequential", "--fraction", "0.5", "--hold"});
    std::string said;
    ASSERT_TRUE(read_until(held, "holding after 512 touches", said)) << said;
    EXPECT_TRUE(notify.wait_for("STATUS=serving: 1 VMs active, 1 accepted, 0 refused, 0 released, 0 failed"));
    kill(server.pid, SIGTERM);
    std::string stopping;
    ASSERT_TRUE(notify.wait_for("STOPPING=1", &stopping));
    EXPECT_EQ(stopping, "STOPPING=1\nSTATUS=stopping: 1 VMs active, 1 accepted, 0 refused, 0 released, 0 failed");
    std::string log;
    const int status = server.wait(&log);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << log;
    EXPECT_NE(log.find("stopped: 1 VMs served (0 refused, 0 failed)"), std::string::npos) << log;
    kill(held.pid, SIGUSR1);
    std::string guest_out;
    EXPECT_EQ(held.wait(&guest_out), 0) << said << guest_out;
    for (const std::string& m : notify.seen()) EXPECT_EQ(m.find("WATCHDOG=1"), std::string::npos) << m;
}

// With WATCHDOG_USEC set the pings come at half that period while the
// reactors answer; a WATCHDOG_PID naming another process turns them off.
TEST_F(SystemdTest, WatchdogPingsOnlyWhenWatchdogUsecIsForThisProcess) {
    NotifyReader notify(dir.file("notify.sock"));
    Child server = spawn(ringpager, {"serve", "--socket", socket_path, "--mem-file", mem, "--reactors", "2"},
                         {{notify.env(), "WATCHDOG_USEC=100000"}, {}});
    ASSERT_TRUE(notify.wait_for("READY=1"));
    for (int i = 0; i < 3; i++) ASSERT_TRUE(notify.wait_for("WATCHDOG=1")) << "ping " << i;
    EXPECT_EQ(notify.count("WATCHDOG=1"), 3u);
    kill(server.pid, SIGTERM);
    EXPECT_TRUE(notify.wait_for("STOPPING=1"));
    std::string log;
    EXPECT_EQ(WEXITSTATUS(server.wait(&log)), 0) << log;

    // The notifier's first turn pings (when it may) before it looks at the
    // counts, so a STATUS= change after a VM proves the turn was taken.
    NotifyReader other(dir.file("notify2.sock"));
    Child server2 = spawn(ringpager, {"serve", "--socket", socket_path, "--mem-file", mem, "--reactors", "1"},
                          {{other.env(), "WATCHDOG_USEC=100000", "WATCHDOG_PID=1"}, {}});
    ASSERT_TRUE(other.wait_for("READY=1"));
    std::string guest_out;
    EXPECT_EQ(guest().wait(&guest_out), 0) << guest_out;
    EXPECT_TRUE(other.wait_for("1 released"));
    kill(server2.pid, SIGTERM);
    EXPECT_TRUE(other.wait_for("STOPPING=1"));
    EXPECT_EQ(WEXITSTATUS(server2.wait(&log)), 0) << log;
    EXPECT_EQ(other.count("WATCHDOG=1"), 0u);
}

// systemd-socket-activate binds the socket, passes it as fd 3 once a guest
// connects, and execs `serve` in its place: the guest (which connected once,
// before serve ran) is served through the passed socket, and at exit the
// socket's path is left where it was (the socket unit owns it).
TEST_F(SystemdTest, ServesAVmThroughASocketPassedBySystemdSocketActivate) {
    if (access(kSocketActivate.c_str(), X_OK) != 0) GTEST_SKIP() << kSocketActivate << " missing (Debian package systemd)";
    NotifyReader notify(dir.file("notify.sock"));
    Child server = spawn(kSocketActivate, {"-l", socket_path, "--fdname=vm", "-E", notify.env(), "--", ringpager,
                                           "serve", "--socket", socket_path, "--mem-file", mem, "--reactors", "1"});
    std::string said;
    ASSERT_TRUE(read_until(server, "Listening on " + socket_path + " as 3.", said)) << said;
    struct stat before {};
    ASSERT_EQ(stat(socket_path.c_str(), &before), 0);
    std::string guest_out;
    EXPECT_EQ(guest({"--vcpus", "2", "--pattern", "random"}).wait(&guest_out), 0) << guest_out;
    ASSERT_TRUE(notify.wait_for("READY=1"));
    kill(server.pid, SIGTERM);  // systemd-socket-activate exec'd serve: the same pid
    ASSERT_TRUE(notify.wait_for("STOPPING=1"));
    std::string log;
    const int status = server.wait(&log);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << said << log;
    EXPECT_NE(log.find(socket_path + " (from systemd) <- raw memory file"), std::string::npos) << log;
    EXPECT_NE(log.find("stopped: 1 VMs served (0 refused, 0 failed)"), std::string::npos) << log;
    struct stat after {};
    ASSERT_EQ(stat(socket_path.c_str(), &after), 0) << "the passed socket's path was removed";
    EXPECT_EQ(after.st_ino, before.st_ino);
}

// A passed fd is hostile until validated: anything but a listening AF_UNIX
// SOCK_STREAM socket bound to a path is refused with one exact line, and so
// is a passed socket whose path no listener names; nothing is bound then.
TEST_F(SystemdTest, APassedFdThatIsNotAListeningUnixSocketIsRefusedWithOneLine) {
    const std::string prefix = "ringpager serve: socket activation: passed fd 3";
    const std::string not_listening = " is not a listening Unix stream socket bound to a path: it is ";
    int pipe_fds[2];
    ASSERT_EQ(pipe2(pipe_fds, O_CLOEXEC), 0);
    FileDesc pipe_read = high(pipe_fds[0]), pipe_write(pipe_fds[1]);
    int pair[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
    FileDesc connected = high(pair[0]), peer(pair[1]);
    FileDesc tcp = high(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in loopback{};
    loopback.sin_family = AF_INET;
    loopback.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(bind(tcp.get(), reinterpret_cast<const sockaddr*>(&loopback), sizeof loopback), 0);
    ASSERT_EQ(listen(tcp.get(), 4), 0);
    FileDesc datagram = unix_socket(SOCK_DGRAM, dir.file("dgram.sock"), false, false);
    FileDesc abstract = unix_socket(SOCK_STREAM, "ringpager-test-" + std::to_string(getpid()), true, true);
    FileDesc elsewhere = unix_socket(SOCK_STREAM, dir.file("elsewhere.sock"), false, true);
    const struct {
        int fd;
        std::vector<std::string> env;
        std::string line;
    } cases[] = {
        {pipe_read.get(), {}, prefix + not_listening + "a pipe or FIFO"},
        {connected.get(), {}, prefix + not_listening + "a stream socket that is not listening"},
        {tcp.get(), {}, prefix + not_listening + "an AF_INET socket"},
        {datagram.get(), {"LISTEN_FDNAMES=vm"}, prefix + " (\"vm\")" + not_listening + "a datagram socket"},
        {abstract.get(), {}, prefix + not_listening + "an abstract socket (no path in the filesystem)"},
        {elsewhere.get(), {},
         "ringpager serve: socket activation: the passed socket " + dir.file("elsewhere.sock") +
             " (fd 3) is no listener's --socket (or config \"socket\"), or is passed twice: make the socket unit's "
             "ListenStream= and the listeners agree"},
    };
    for (const auto& c : cases) {
        std::string out;
        const int status = serve_with_passed_fd(c.fd, c.env, out);
        EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << out;
        EXPECT_EQ(out, c.line + "\n");
        EXPECT_FALSE(std::filesystem::exists(socket_path)) << c.line;
    }
}

// The same protocol without systemd-socket-activate: a listening socket at
// the --socket path passed as fd 3 is served, and left in place at exit.
TEST_F(SystemdTest, APassedListeningSocketAtTheSocketPathIsServedAndLeftInPlace) {
    FileDesc passed = unix_socket(SOCK_STREAM, socket_path, false, true);
    Child server = spawn("/bin/sh", {"-c", "LISTEN_PID=$$ exec \"$0\" \"$@\"", ringpager, "serve", "--socket",
                                     socket_path, "--mem-file", mem, "--reactors", "1"},
                         {{"LISTEN_FDS=1"}, {{passed.get(), 3}}});
    std::string guest_out;
    EXPECT_EQ(guest().wait(&guest_out), 0) << guest_out;
    kill(server.pid, SIGTERM);
    std::string log;
    EXPECT_EQ(WEXITSTATUS(server.wait(&log)), 0) << log;
    EXPECT_NE(log.find("(from systemd)"), std::string::npos) << log;
    EXPECT_NE(log.find("stopped: 1 VMs served"), std::string::npos) << log;
    EXPECT_TRUE(std::filesystem::exists(socket_path));
}

// The unit's LimitMEMLOCK=infinity: without CAP_IPC_LOCK (the unit has no
// capabilities) a reactor's registered read buffers are charged to
// RLIMIT_MEMLOCK, and a limit below them stops startup with one line that
// names the limit and the fix.
TEST_F(SystemdTest, WithoutCapIpcLockALowMemlockLimitIsRefusedWithTheFix) {
    const std::string setpriv = "/usr/bin/setpriv";
    if (access(setpriv.c_str(), X_OK) != 0) GTEST_SKIP() << setpriv << " missing (Debian package util-linux)";
    std::string out;
    const int status = spawn("/bin/sh", {"-c", "ulimit -l 64 && exec \"$0\" \"$@\"", setpriv, "--inh-caps=-ipc_lock",
                                         "--bounding-set=-ipc_lock", "--", ringpager, "serve", "--socket", socket_path,
                                         "--mem-file", mem, "--reactors", "1"})
                           .wait(&out);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << out;
    // The ring or its buffers, whichever the kernel charges first.
    const std::string start = "ringpager serve: reactor 0: cannot ";
    const std::string end = ": Cannot allocate memory (without CAP_IPC_LOCK, io_uring charges its rings and registered "
                            "buffers to RLIMIT_MEMLOCK, now 64 KiB: raise it (ulimit -l; LimitMEMLOCK=infinity under "
                            "systemd) or grant CAP_IPC_LOCK)\n";
    EXPECT_EQ(out.rfind(start, 0), 0u) << out;
    EXPECT_TRUE(out.size() > end.size() && out.compare(out.size() - end.size(), end.size(), end) == 0) << out;
    EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
    EXPECT_FALSE(std::filesystem::exists(socket_path));
}

}  // namespace
