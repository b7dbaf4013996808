// QEMU as a child process, read through one poll loop.
#include "realguest/qemu.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

extern char** environ;

namespace ringpager::realguest {
namespace {

constexpr size_t kRecentSerialLines = 25;

int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

int poll_timeout_ms(Clock::time_point deadline) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    return static_cast<int>(std::clamp<long>(left + 1, 0, 60'000));
}

std::string strip_cr(std::string s) {
    s.erase(std::remove(s.begin(), s.end(), '\r'), s.end());
    return s;
}

}  // namespace

std::string VmShape::describe() const {
    return std::to_string(ram_mib) + " MiB, " + std::to_string(vcpus) + " vCPUs, data " + std::to_string(file_mib) +
           " MiB file + " + std::to_string(heap_mib) + " MiB heap";
}

std::vector<std::string> qemu_command(const GuestImage& image, const VmShape& shape, const std::string& ram_path,
                                      const std::string& qmp_path, bool incoming) {
    const std::string ram = std::to_string(shape.ram_mib) + "M";
    // init_on_free=1: the guest zeroes pages it frees and trusts them to stay zero, so a page
    // the host discarded must come back as zeros, never as old snapshot bytes.
    const std::string append = "console=ttyS0 quiet panic=-1 oops=panic init_on_free=1 rg.file_mib=" +
                               std::to_string(shape.file_mib) + " rg.heap_mib=" + std::to_string(shape.heap_mib) +
                               " rg.hb_ms=" + std::to_string(shape.hb_ms);
    std::vector<std::string> argv = {
        "qemu-system-x86_64", "-accel", "tcg,thread=multi", "-smp", std::to_string(shape.vcpus), "-m", ram,
        // share=on: the RAM block is "shared", which x-ignore-shared needs on both sides.
        "-object", "memory-backend-file,id=ram0,size=" + ram + ",mem-path=" + ram_path + ",share=on,merge=off",
        "-machine", "pc,memory-backend=ram0", "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none",
        "-no-reboot", "-kernel", image.kernel_path, "-initrd", image.initrd_path, "-append", append,
        "-device", "virtio-balloon-pci,id=balloon0,free-page-reporting=on",
        "-chardev", "stdio,id=ser0,signal=off", "-serial", "chardev:ser0",
        "-chardev", "socket,id=qmp,path=" + qmp_path + ",server=on,wait=off", "-mon", "chardev=qmp,mode=control"};
    if (incoming) {
        for (const char* a : {"-incoming", "defer", "-S"}) argv.push_back(a);
    }
    return argv;
}

std::string qemu_version() {
    const CommandResult r = run_command({"qemu-system-x86_64", "--version"});
    if (!r.ok()) {
        throw Failure("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86; ./ringpager.sh build "
                      "installs it): " + tail_of(r.output, 300));
    }
    return r.output.substr(0, r.output.find('\n'));
}

std::unique_ptr<Qemu> Qemu::start(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                                  const std::string& log_path) {
    std::unique_ptr<Qemu> q(new Qemu());
    q->log_ = FileDesc(::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
    if (!q->log_.valid()) throw Failure("open " + log_path + ": " + std::strerror(errno));
    int in[2], out[2], err[2];
    if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) {
        throw Failure(std::string("pipe2: ") + std::strerror(errno));
    }
    std::vector<std::string> env_strings;
    for (char** e = environ; *e != nullptr; ++e) env_strings.emplace_back(*e);
    for (const std::string& e : env) env_strings.push_back(e);
    std::vector<char*> args, envp;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    for (const std::string& e : env_strings) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
    const pid_t pid = ::fork();
    if (pid < 0) throw Failure(std::string("fork: ") + std::strerror(errno));
    if (pid == 0) {
        // Only async-signal-safe calls until exec. PDEATHSIG: no QEMU outlives the harness
        // thread that started it.
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::dup2(in[0], 0) < 0 || ::dup2(out[1], 1) < 0 || ::dup2(err[1], 2) < 0) ::_exit(126);
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        ::execvpe(args[0], args.data(), envp.data());
        ::_exit(127);
    }
    ::close(in[0]);
    ::close(out[1]);
    ::close(err[1]);
    q->pid_ = pid;
    q->pidfd_ = FileDesc(pidfd_open(pid));
    if (!q->pidfd_.valid()) throw Failure(std::string("pidfd_open(qemu): ") + std::strerror(errno));
    q->stdin_fd_ = FileDesc(in[1]);
    q->stdout_fd_ = FileDesc(out[0]);
    q->stderr_fd_ = FileDesc(err[0]);
    for (int fd : {q->stdout_fd_.get(), q->stderr_fd_.get()}) {
        if (::fcntl(fd, F_SETFL, O_NONBLOCK) != 0) throw Failure(std::string("fcntl: ") + std::strerror(errno));
    }
    return q;
}

Qemu::~Qemu() {
    if (pid_ > 0 && !exited_) {
        ::kill(pid_, SIGKILL);
        int status = 0;
        while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
        }
    }
}

void Qemu::reap() {
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
        exited_ = true;
        wait_status_ = status;
    }
}

void Qemu::take_lines(int fd, std::string& partial, bool is_serial) {
    char buf[8192];
    for (;;) {
        const ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;  // EAGAIN (drained) or EOF (QEMU exiting; the pidfd tells)
        partial.append(buf, static_cast<size_t>(n));
    }
    size_t nl;
    while ((nl = partial.find('\n')) != std::string::npos) {
        Line line{Clock::now(), strip_cr(partial.substr(0, nl))};
        partial.erase(0, nl + 1);
        const std::string logged = (is_serial ? "serial: " : "stderr: ") + line.text + "\n";
        if (::write(log_.get(), logged.data(), logged.size()) < 0) {
            // The log is for people; a full disk must not fail the run.
        }
        if (is_serial) {
            serial_recent_.push_back(line.text);
            if (serial_recent_.size() > kRecentSerialLines) serial_recent_.pop_front();
            serial_.push_back(line);
            if (on_serial) on_serial(line);
        } else {
            stderr_all_.push_back(line);
            stderr_.push_back(std::move(line));
        }
    }
}

void Qemu::pump(Clock::time_point deadline) {
    pollfd fds[4] = {{stdout_fd_.get(), POLLIN, 0}, {stderr_fd_.get(), POLLIN, 0}, {pidfd_.get(), POLLIN, 0},
                     {qmp_.get(), POLLIN, 0}};
    const nfds_t n = qmp_.valid() ? 4 : 3;
    const int ready = ::poll(fds, n, exited_ ? 0 : poll_timeout_ms(deadline));
    if (ready < 0 && errno != EINTR) throw Failure(std::string("poll: ") + std::strerror(errno));
    take_lines(stdout_fd_.get(), serial_partial_, true);
    take_lines(stderr_fd_.get(), stderr_partial_, false);
    if (qmp_.valid() && (fds[3].revents & (POLLIN | POLLHUP))) {
        char buf[8192];
        const ssize_t got = ::read(qmp_.get(), buf, sizeof buf);
        if (got > 0) qmp_partial_.append(buf, static_cast<size_t>(got));
        size_t nl;
        while ((nl = qmp_partial_.find('\n')) != std::string::npos) {
            const std::string text = qmp_partial_.substr(0, nl);
            qmp_partial_.erase(0, nl + 1);
            nlohmann::json msg = nlohmann::json::parse(text, nullptr, false);
            if (msg.is_discarded()) throw Failure("QMP sent something that is not JSON: " + text);
            (msg.contains("event") ? events_ : replies_).push_back(std::move(msg));
        }
        if (got == 0) qmp_.reset();  // QEMU closed the monitor (it is exiting)
    }
    if (fds[2].revents & POLLIN) reap();
}

void Qemu::connect_qmp(const std::string& path, Clock::time_point deadline) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path) throw Failure("QMP socket path too long: " + path);
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    FileDesc sock(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!sock.valid()) throw Failure(std::string("socket: ") + std::strerror(errno));
    if (::connect(sock.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
        throw Failure("connect to QMP " + path + ": " + std::strerror(errno) + "\n" + tail());
    }
    qmp_ = std::move(sock);
    // The greeting is not an event and has no id; it lands in replies_.
    while (replies_.empty()) {
        if (Clock::now() >= deadline || exited_) throw Failure("no QMP greeting\n" + tail());
        pump(deadline);
    }
    replies_.pop_front();
    qmp("qmp_capabilities", nlohmann::json::object(), deadline);
}

nlohmann::json Qemu::qmp(const std::string& command, const nlohmann::json& arguments, Clock::time_point deadline) {
    if (!qmp_.valid()) throw Failure("QMP is not connected (" + command + ")");
    const uint64_t id = next_qmp_id_++;
    nlohmann::json request = {{"execute", command}, {"id", id}};
    if (!arguments.empty()) request["arguments"] = arguments;
    const std::string text = request.dump() + "\n";
    if (::send(qmp_.get(), text.data(), text.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(text.size())) {
        throw Failure("QMP send " + command + ": " + std::strerror(errno));
    }
    for (;;) {
        for (auto it = replies_.begin(); it != replies_.end(); ++it) {
            if (!it->contains("id") || (*it)["id"] != id) continue;
            nlohmann::json reply = std::move(*it);
            replies_.erase(it);
            if (reply.contains("error")) throw Failure("QMP " + command + " failed: " + reply["error"].dump());
            return reply.value("return", nlohmann::json::object());
        }
        if (Clock::now() >= deadline || exited_ || !qmp_.valid()) {
            throw Failure("no QMP reply to " + command + "\n" + tail());
        }
        pump(deadline);
    }
}

nlohmann::json Qemu::wait_event(const std::function<bool(const nlohmann::json&)>& match,
                                Clock::time_point deadline, const std::string& what) {
    for (;;) {
        while (!events_.empty()) {
            nlohmann::json e = std::move(events_.front());
            events_.pop_front();
            if (match(e)) return e;
        }
        if (exited_) throw Failure("QEMU exited while waiting for " + what + "\n" + tail());
        if (Clock::now() >= deadline) throw Failure("timed out waiting for " + what + "\n" + tail());
        pump(deadline);
    }
}

Line Qemu::wait_serial(const std::function<bool(const std::string&)>& match, Clock::time_point deadline,
                       const std::string& what) {
    for (;;) {
        while (!serial_.empty()) {
            Line line = std::move(serial_.front());
            serial_.pop_front();
            if (match(line.text)) return line;
        }
        if (exited_) throw Failure("QEMU exited while waiting for " + what + "\n" + tail());
        if (Clock::now() >= deadline) throw Failure("timed out waiting for " + what + "\n" + tail());
        pump(deadline);
    }
}

Line Qemu::wait_stderr(const std::function<bool(const std::string&)>& match, Clock::time_point deadline,
                       const std::string& what) {
    for (;;) {
        while (!stderr_.empty()) {
            Line line = std::move(stderr_.front());
            stderr_.pop_front();
            if (match(line.text)) return line;
        }
        if (exited_) throw Failure("QEMU exited while waiting for " + what + "\n" + tail());
        if (Clock::now() >= deadline) throw Failure("timed out waiting for " + what + "\n" + tail());
        pump(deadline);
    }
}

void Qemu::send_serial(const std::string& line) {
    const std::string text = line + "\n";
    if (::write(stdin_fd_.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
        throw Failure("write to the serial console: " + std::string(std::strerror(errno)));
    }
}

int Qemu::wait_exit(Clock::time_point deadline) {
    while (!exited_) {
        if (Clock::now() >= deadline) {
            ::kill(pid_, SIGKILL);
            throw Failure("QEMU did not exit in time (killed)\n" + tail());
        }
        pump(deadline);
    }
    // Whatever it wrote last (the shim's exit line) is read before returning.
    take_lines(stdout_fd_.get(), serial_partial_, true);
    take_lines(stderr_fd_.get(), stderr_partial_, false);
    return wait_status_;
}

std::string Qemu::tail() const {
    std::string out = "--- console (last lines):\n";
    for (const std::string& l : serial_recent_) out += "  " + l + "\n";
    out += "--- QEMU stderr (last lines):\n";
    const size_t from = stderr_all_.size() > 10 ? stderr_all_.size() - 10 : 0;
    for (size_t i = from; i < stderr_all_.size(); i++) out += "  " + stderr_all_[i].text + "\n";
    if (exited_) {
        out += "--- QEMU exited: " + (WIFEXITED(wait_status_) ? "status " + std::to_string(WEXITSTATUS(wait_status_))
                                                              : "signal " + std::to_string(WTERMSIG(wait_status_)));
        out += "\n";
    }
    return out;
}

}  // namespace ringpager::realguest
