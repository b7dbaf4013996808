// Process and file helpers of the real-guest harness.
#include "realguest/common.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace ringpager::realguest {

uint64_t monotonic_ns() {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

Clock::time_point from_monotonic_ns(uint64_t ns) {
    // steady_clock is CLOCK_MONOTONIC in libstdc++; computed as an offset from now so the
    // result stays right even if that ever changed.
    const int64_t delta_ns = static_cast<int64_t>(ns) - static_cast<int64_t>(monotonic_ns());
    return Clock::now() + std::chrono::nanoseconds(delta_ns);
}

bool CommandResult::ok() const { return WIFEXITED(status) && WEXITSTATUS(status) == 0; }

CommandResult run_command(const std::vector<std::string>& argv, const std::string& cwd) {
    int out[2];
    if (::pipe2(out, O_CLOEXEC) != 0) throw Failure(std::string("pipe2: ") + std::strerror(errno));
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    const pid_t pid = ::fork();
    if (pid < 0) throw Failure(std::string("fork: ") + std::strerror(errno));
    if (pid == 0) {
        // Only async-signal-safe calls until exec: the harness has threads.
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        const int null_fd = ::open("/dev/null", O_RDONLY);
        if (null_fd < 0 || ::dup2(null_fd, 0) < 0 || ::dup2(out[1], 1) < 0 || ::dup2(out[1], 2) < 0) ::_exit(126);
        if (!cwd.empty() && ::chdir(cwd.c_str()) != 0) ::_exit(126);
        ::execvp(args[0], args.data());
        ::_exit(127);
    }
    ::close(out[1]);
    CommandResult result;
    char buf[4096];
    for (;;) {
        const ssize_t n = ::read(out[0], buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        result.output.append(buf, static_cast<size_t>(n));
    }
    ::close(out[0]);
    while (::waitpid(pid, &result.status, 0) < 0) {
        if (errno != EINTR) throw Failure(std::string("waitpid: ") + std::strerror(errno));
    }
    if (WIFEXITED(result.status) && WEXITSTATUS(result.status) == 127) {
        result.output += "\n" + argv[0] + ": command not found";
    }
    return result;
}

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Failure("cannot read " + path + ": " + std::strerror(errno));
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
    const std::string tmp = path + ".tmp";
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
        out.flush();
        if (!out) throw Failure("cannot write " + tmp);
    }
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    if (ec) throw Failure("rename " + tmp + " -> " + path + ": " + ec.message());
}

std::string tail_of(const std::string& text, size_t max_bytes) {
    if (text.size() <= max_bytes) return text;
    size_t from = text.size() - max_bytes;
    const size_t nl = text.find('\n', from);
    if (nl != std::string::npos) from = nl + 1;
    return "..." + text.substr(from);
}

std::string self_dir() {
    std::error_code ec;
    const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
    return ec ? std::string(".") : exe.parent_path().string();
}

}  // namespace ringpager::realguest
