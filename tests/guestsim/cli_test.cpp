// Pins the command lines as processes: rp-guestsim's subcommands (usage,
// image files, run with its exit codes and JSON, a mid-restore death) and
// rp-baseline serving until SIGTERM.
#include <signal.h>
#include <sys/wait.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "guestsim/image.hpp"
#include "test_util.hpp"

namespace ringpager::sim {
namespace {

constexpr uint64_t kMiB = 1 << 20;

int exit_code(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : -1; }

class Cli : public ::testing::Test {
protected:
    void SetUp() override {
        guestsim_ = test::binary_from_env("RP_GUESTSIM");
        baseline_ = test::binary_from_env("RP_BASELINE");
        ASSERT_FALSE(guestsim_.empty() || baseline_.empty());
    }

    test::ProcessResult guestsim(std::vector<std::string> args) {
        args.insert(args.begin(), guestsim_);
        return test::run_process(args);
    }

    std::string guestsim_;
    std::string baseline_;
    test::TempDir dir_;
};

TEST_F(Cli, HelpEverywhereAndUsageErrorsExitTwo) {
    for (const char* sub : {"", "generate", "diff", "flatten", "run"}) {
        std::vector<std::string> args;
        if (*sub != '\0') args.push_back(sub);
        args.push_back("--help");
        auto result = guestsim(args);
        EXPECT_EQ(exit_code(result.status), 0) << sub;
        EXPECT_NE(result.output.find("--"), std::string::npos) << sub;
    }
    EXPECT_EQ(exit_code(guestsim({}).status), 2);
    EXPECT_EQ(exit_code(guestsim({"generate", "--out", dir_.file("x"), "--size", "12Q"}).status), 2);
    EXPECT_EQ(exit_code(guestsim({"run", "--socket", "/x", "--mem-file", "/y", "--page-size", "8K"}).status), 2);
    EXPECT_EQ(exit_code(test::run_process({baseline_, "--help"}).status), 0);
    EXPECT_EQ(exit_code(test::run_process({baseline_}).status), 2);
}

TEST_F(Cli, ImageCommandsMatchTheLibrary) {
    auto generated = guestsim({"generate", "--out", dir_.file("cli"), "--size", "4M", "--zero-fraction", "0.5",
                               "--dup-fraction", "0.1", "--seed", "3", "--sparse"});
    ASSERT_EQ(exit_code(generated.status), 0);
    ASSERT_TRUE(generate_image(dir_.file("lib"), 4 * kMiB, GenerateOptions{0.5, 0.1, 3, 4096, true}).ok());
    EXPECT_EQ(test::read_file(dir_.file("cli")), test::read_file(dir_.file("lib")));

    ASSERT_EQ(exit_code(guestsim({"diff", "--base", dir_.file("cli"), "--out", dir_.file("d1"),
                                  "--changed-fraction", "0.2", "--seed", "4"}).status), 0);
    ASSERT_EQ(exit_code(guestsim({"flatten", "--base", dir_.file("cli"), "--diff", dir_.file("d1"), "--out",
                                  dir_.file("flat-cli")}).status), 0);
    DiffOptions options;
    options.changed_fraction = 0.2;
    options.seed = 4;
    ASSERT_TRUE(generate_diff(dir_.file("lib"), dir_.file("d1-lib"), options).ok());
    ASSERT_TRUE(flatten(dir_.file("lib"), {dir_.file("d1-lib")}, dir_.file("flat-lib")).ok());
    EXPECT_EQ(test::read_file(dir_.file("flat-cli")), test::read_file(dir_.file("flat-lib")));
    EXPECT_NE(test::read_file(dir_.file("flat-cli")), test::read_file(dir_.file("cli")));
}

TEST_F(Cli, RunAgainstTheBaselineBinaryUntilSigterm) {
    ASSERT_TRUE(generate_image(dir_.file("mem"), 8 * kMiB, GenerateOptions{0.3, 0.1, 5, 4096, false}).ok());
    auto handler = test::Child::spawn({baseline_, "--socket", dir_.file("sock"), "--mem-file", dir_.file("mem")});
    ASSERT_NE(handler, nullptr);
    // The handler prints this line once it is listening: no polling for the socket.
    ASSERT_EQ(handler->read_line(), "rp-baseline: listening on " + dir_.file("sock") + "\n");

    auto run = guestsim({"run", "--socket", dir_.file("sock"), "--mem-file", dir_.file("mem"), "--regions",
                         "4M,2M,1M", "--vcpus", "2", "--pattern", "random", "--fraction", "0.5", "--balloon", "0.2",
                         "--shape", "1.7", "--json"});
    ASSERT_EQ(exit_code(run.status), 0) << run.output;
    auto report = nlohmann::json::parse(run.output);
    EXPECT_EQ(report["pages"], 7 * kMiB / 4096);
    EXPECT_EQ(report["verified_pages"], 7 * kMiB / 4096);
    EXPECT_EQ(report["mismatches"], 0);
    EXPECT_GT(report["balloon_pages"].get<uint64_t>(), 0u);
    EXPECT_EQ(report["zero_pages_checked"], report["balloon_pages"]);
    EXPECT_LE(report["fault_latency_us"]["p50"].get<double>(), report["fault_latency_us"]["max"].get<double>());

    ASSERT_EQ(::kill(handler->pid(), SIGTERM), 0);
    EXPECT_EQ(exit_code(handler->wait()), 0);
}

TEST_F(Cli, MismatchExitsOneAndKillAtDiesMidRestore) {
    ASSERT_TRUE(generate_image(dir_.file("mem"), 4 * kMiB, GenerateOptions{}).ok());
    ASSERT_TRUE(generate_image(dir_.file("other"), 4 * kMiB, GenerateOptions{0.0, 0.0, 2, 4096, false}).ok());
    auto server = test::start_baseline(dir_.file("sock"), dir_.file("other"));
    ASSERT_NE(server, nullptr);

    // Served from another image: every page mismatches, exit status 1.
    auto wrong = guestsim({"run", "--socket", dir_.file("sock"), "--mem-file", dir_.file("mem"), "--regions", "2M",
                           "--json"});
    EXPECT_EQ(exit_code(wrong.status), 1);
    EXPECT_EQ(nlohmann::json::parse(wrong.output)["mismatches"], 512);

    // Killed by SIGKILL partway through touching; the handler sees the VM go.
    auto killed = guestsim({"run", "--socket", dir_.file("sock"), "--mem-file", dir_.file("other"), "--regions",
                            "2M,1M", "--vcpus", "2", "--pattern", "random", "--kill-at", "0.3"});
    ASSERT_TRUE(WIFSIGNALED(killed.status));
    EXPECT_EQ(WTERMSIG(killed.status), SIGKILL);
    EXPECT_TRUE(server->wait_for_finished(2, std::chrono::seconds(30)));
    const baseline::Stats stats = server->stats();
    EXPECT_EQ(stats.connections_active, 0u);
    EXPECT_GT(stats.pages_copied, 512u);
    EXPECT_LT(stats.pages_copied, 512u + 768u);
}

}  // namespace
}  // namespace ringpager::sim
