// Helpers shared by the guest simulator tests: temporary directories, page
// hashing of files, a baseline handler running in-process, child processes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <sys/types.h>

#include "baseline/server.hpp"
#include "ringpager/file_desc.hpp"

namespace ringpager::sim::test {

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it.
class TempDir {
public:
    TempDir();
    ~TempDir();
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const std::string& path() const { return path_; }
    std::string file(const std::string& name) const { return path_ + "/" + name; }

private:
    std::string path_;
};

// Reads a whole file; fails the current test (and returns empty) on error.
std::vector<std::byte> read_file(const std::string& path);
// XXH3-64 of every `page_size` page of a file.
std::vector<uint64_t> page_hashes(const std::string& path, uint64_t page_size = 4096);

// Starts the baseline handler on a background thread; stopped on destruction.
std::unique_ptr<baseline::Server> start_baseline(const std::string& socket_path, const std::string& mem_file,
                                                 bool copy_all = false);

// A child process with its stdout on a pipe; killed (SIGKILL) and reaped on
// destruction if still running.
class Child {
public:
    static std::unique_ptr<Child> spawn(const std::vector<std::string>& argv);
    ~Child();
    // Reads stdout up to and including the next newline (or EOF).
    std::string read_line();
    std::string read_all();
    int wait();  // the waitpid status
    pid_t pid() const { return pid_; }

private:
    Child(pid_t pid, int stdout_fd) : pid_(pid), stdout_fd_(stdout_fd) {}
    pid_t pid_ = -1;
    bool reaped_ = false;
    int status_ = -1;
    FileDesc stdout_fd_;
};

struct ProcessResult {
    int status = -1;      // as from waitpid
    std::string output;   // everything the child wrote to stdout
};

// Runs argv[0] with argv, capturing stdout; stderr passes through.
ProcessResult run_process(const std::vector<std::string>& argv);
// The path in an environment variable set by meson; fails the test if unset.
std::string binary_from_env(const char* variable);

}  // namespace ringpager::sim::test
