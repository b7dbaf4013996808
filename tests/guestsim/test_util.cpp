// Implementation of the shared test helpers.
#include "test_util.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include <gtest/gtest.h>

#include "guestsim/expected_image.hpp"
#include "guestsim/file_io.hpp"
#include "ringpager/file_desc.hpp"

extern char** environ;

namespace ringpager::sim::test {

TempDir::TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/rp-guestsim-test.XXXXXX";
    std::vector<char> buffer(pattern.begin(), pattern.end());
    buffer.push_back('\0');
    if (::mkdtemp(buffer.data()) == nullptr) {
        ADD_FAILURE() << "mkdtemp(" << pattern << "): " << std::strerror(errno);
        return;
    }
    path_ = buffer.data();
}

TempDir::~TempDir() {
    std::error_code ignored;
    if (!path_.empty()) std::filesystem::remove_all(path_, ignored);
}

std::vector<std::byte> read_file(const std::string& path) {
    auto fd = FileDesc::open(path.c_str(), O_RDONLY);
    if (!fd) {
        ADD_FAILURE() << "open " << path << ": " << fd.error().message();
        return {};
    }
    auto size = file_size(fd->get());
    if (!size) {
        ADD_FAILURE() << "fstat " << path << ": " << size.error().message();
        return {};
    }
    std::vector<std::byte> bytes(*size);
    if (auto read = pread_all(fd->get(), bytes.data(), bytes.size(), 0); !read) {
        ADD_FAILURE() << "read " << path << ": " << read.error().message();
        return {};
    }
    return bytes;
}

std::vector<uint64_t> page_hashes(const std::string& path, uint64_t page_size) {
    std::vector<std::byte> bytes = read_file(path);
    std::vector<uint64_t> hashes;
    for (uint64_t off = 0; off + page_size <= bytes.size(); off += page_size) {
        hashes.push_back(hash_bytes(bytes.data() + off, page_size));
    }
    return hashes;
}

std::unique_ptr<baseline::Server> start_baseline(const std::string& socket_path, const std::string& mem_file,
                                                 bool copy_all) {
    baseline::Options options;
    options.socket_path = socket_path;
    options.mem_file_path = mem_file;
    options.copy_all_on_first_fault = copy_all;
    auto server = baseline::Server::create(options);
    if (!server) {
        ADD_FAILURE() << "baseline server: " << server.error().message();
        return nullptr;
    }
    // The socket is listening once create() returns, so guests may connect
    // at once; faults wait until the accept thread serves them.
    (*server)->start();
    return std::move(*server);
}

std::unique_ptr<Child> Child::spawn(const std::vector<std::string>& argv) {
    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
        ADD_FAILURE() << "pipe2: " << std::strerror(errno);
        return nullptr;
    }
    FileDesc read_end(pipe_fds[0]);
    FileDesc write_end(pipe_fds[1]);
    posix_spawn_file_actions_t actions;
    if (int err = posix_spawn_file_actions_init(&actions); err != 0) {
        ADD_FAILURE() << "posix_spawn_file_actions_init: " << std::strerror(err);
        return nullptr;
    }
    if (int err = posix_spawn_file_actions_adddup2(&actions, write_end.get(), STDOUT_FILENO); err != 0) {
        posix_spawn_file_actions_destroy(&actions);
        ADD_FAILURE() << "posix_spawn_file_actions_adddup2: " << std::strerror(err);
        return nullptr;
    }
    std::vector<char*> args;
    for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
    args.push_back(nullptr);
    pid_t pid = -1;
    int err = ::posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (err != 0) {
        ADD_FAILURE() << "posix_spawn " << argv[0] << ": " << std::strerror(err);
        return nullptr;
    }
    return std::unique_ptr<Child>(new Child(pid, read_end.release()));
}

Child::~Child() {
    if (!reaped_) {
        // Our own unreaped child: kill cannot fail (ESRCH needs a reaped pid).
        if (::kill(pid_, SIGKILL) != 0) ADD_FAILURE() << "kill: " << std::strerror(errno);
        wait();
    }
}

std::string Child::read_line() {
    std::string line;
    char c;
    for (;;) {
        ssize_t n = ::read(stdout_fd_.get(), &c, 1);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        line += c;
        if (c == '\n') break;
    }
    return line;
}

std::string Child::read_all() {
    std::string out;
    char buffer[4096];
    for (;;) {
        ssize_t n = ::read(stdout_fd_.get(), buffer, sizeof buffer);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        out.append(buffer, static_cast<size_t>(n));
    }
    return out;
}

int Child::wait() {
    if (reaped_) return status_;
    while (::waitpid(pid_, &status_, 0) < 0) {
        if (errno != EINTR) {
            ADD_FAILURE() << "waitpid: " << std::strerror(errno);
            break;
        }
    }
    reaped_ = true;
    return status_;
}

ProcessResult run_process(const std::vector<std::string>& argv) {
    ProcessResult result;
    auto child = Child::spawn(argv);
    if (!child) return result;
    result.output = child->read_all();
    result.status = child->wait();
    return result;
}

std::string binary_from_env(const char* variable) {
    const char* value = std::getenv(variable);
    if (value == nullptr || *value == '\0') {
        ADD_FAILURE() << variable << " is not set; run this test through meson test";
        return {};
    }
    return value;
}

}  // namespace ringpager::sim::test
