// Runs `ringpager snapshot ...` in-process through snapshot_main and captures
// what it prints: the snapshot CLI tests and the push tests share it.
#pragma once

#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

int snapshot_main(int argc, char** argv);

namespace snaptest {

struct CliRun {
    int code = -1;
    std::string out;
    std::string err;
};

// `args` follow "snapshot", e.g. {"build", "--base", FILE, "--out", MANIFEST}.
inline CliRun run_snapshot(std::vector<std::string> args) {
    args.insert(args.begin(), "snapshot");
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    CliRun r;
    testing::internal::CaptureStdout();
    testing::internal::CaptureStderr();
    r.code = snapshot_main(static_cast<int>(args.size()), argv.data());
    std::fflush(stdout);
    r.out = testing::internal::GetCapturedStdout();
    r.err = testing::internal::GetCapturedStderr();
    return r;
}

}  // namespace snaptest
