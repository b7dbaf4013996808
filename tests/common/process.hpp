// Child processes for tests: spawn a program with arguments, capture its
// stderr, wait for it. Used to run rp-guestsim as a real separate VM process
// and to drive the `ringpager` CLI.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

extern char** environ;

namespace ringpager::testing {

struct Child {
    pid_t pid = -1;
    int stderr_fd = -1;  // read end of the child's stderr (and stdout)

    // Waits for exit; returns the raw wait status and fills `output`.
    int wait(std::string* output = nullptr) {
        std::string text;
        char buf[4096];
        ssize_t n;
        while ((n = read(stderr_fd, buf, sizeof buf)) > 0) text.append(buf, static_cast<size_t>(n));
        close(stderr_fd);
        int status = 0;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
        if (output) *output = text;
        return status;
    }
};

// What a child gets beyond this process's environment: extra "NAME=value"
// entries, and fds handed over at fixed numbers ({from, to}; `from` must
// not be one of the `to` numbers).
struct SpawnExtras {
    std::vector<std::string> env;
    std::vector<std::pair<int, int>> fds;
};

inline Child spawn(const std::string& program, const std::vector<std::string>& args, const SpawnExtras& extras = {}) {
    int pipe_fds[2];
    if (pipe2(pipe_fds, O_CLOEXEC) != 0) abort();
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 1);
    posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 2);
    for (auto [from, to] : extras.fds) posix_spawn_file_actions_adddup2(&actions, from, to);  // dup2 clears CLOEXEC
    std::vector<char*> argv;
    std::string name = program;
    argv.push_back(name.data());
    std::vector<std::string> copy = args;
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<std::string> env_copy = extras.env;
    std::vector<char*> envp;
    for (auto& e : env_copy) envp.push_back(e.data());
    for (char** e = environ; *e != nullptr; e++) envp.push_back(*e);
    envp.push_back(nullptr);
    Child child;
    if (posix_spawn(&child.pid, program.c_str(), &actions, nullptr, argv.data(), envp.data()) != 0) abort();
    posix_spawn_file_actions_destroy(&actions);
    close(pipe_fds[1]);
    child.stderr_fd = pipe_fds[0];
    return child;
}

// Path of a tool built by meson, passed in the test's environment.
inline std::string tool_path(const char* env_name) {
    const char* value = getenv(env_name);
    return value ? value : "";
}

}  // namespace ringpager::testing
