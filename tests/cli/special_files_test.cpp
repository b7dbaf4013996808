// Pins SPEC §5 for files: a memory file, manifest, layer or build input that
// is a FIFO, device or directory is refused with one exact line and exit 1,
// without blocking (every command runs under timeout(1), so a regression that
// blocks in open() fails with exit 137 instead of hanging the suite).
#include <gtest/gtest.h>
#include <sys/stat.h>

#include "common/engine_fixture.hpp"
#include "common/process.hpp"

using namespace ringpager;
using namespace ringpager::testing;

namespace {

constexpr uint64_t MiB = 1024 * 1024;

class SpecialFilesTest : public ::testing::Test {
protected:
    void SetUp() override {
        ringpager = tool_path("RP_RINGPAGER");
        ASSERT_FALSE(ringpager.empty()) << "run through meson test";
    }

    // Runs `ringpager args...`, killed after 20 s; returns the exit code
    // (137 when it had to be killed) and fills `out` with stdout + stderr.
    int run(const std::vector<std::string>& args, std::string& out) {
        std::vector<std::string> bounded = {"--signal=KILL", "20", ringpager};
        bounded.insert(bounded.end(), args.begin(), args.end());
        const int status = spawn("/usr/bin/timeout", bounded).wait(&out);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }

    std::string fifo(const std::string& name) {
        const std::string path = dir.file(name);
        EXPECT_EQ(mkfifo(path.c_str(), 0600), 0) << std::strerror(errno);
        return path;
    }

    // Builds a two-layer snapshot and replaces layer 1's file by a FIFO.
    std::string manifest_with_fifo_layer() {
        const std::string base = make_image(dir, "base", 4 * MiB);
        const std::string diff = make_image(dir, "diff", 4 * MiB, 0.3, 8);
        const std::string manifest = dir.file("snap.rpm");
        std::string out;
        EXPECT_EQ(run({"snapshot", "build", "--base", base, "--diff", diff, "--out", manifest, "--no-sync"}, out), 0)
            << out;
        EXPECT_EQ(unlink(layer1(manifest).c_str()), 0);
        fifo("snap.rpm.layer1.rpl");
        return manifest;
    }
    static std::string layer1(const std::string& manifest) { return manifest + ".layer1.rpl"; }

    // The last line of `out` (inspect prints its report before the error).
    static std::string last_line(const std::string& out) {
        const size_t end = out.size() > 0 && out.back() == '\n' ? out.size() - 1 : out.size();
        const size_t start = out.rfind('\n', end == 0 ? 0 : end - 1);
        return out.substr(start == std::string::npos ? 0 : start + 1);
    }

    TempDir dir;
    std::string ringpager;
};

TEST_F(SpecialFilesTest, ServeRefusesAFifoMemoryFileWithoutBlocking) {
    const std::string path = fifo("mem.fifo");
    std::string out;
    EXPECT_EQ(run({"serve", "--socket", dir.file("s"), "--mem-file", path}, out), 1) << out;
    EXPECT_EQ(out, "ringpager serve: memory file " + path + " is a FIFO, not a regular file\n");
}

TEST_F(SpecialFilesTest, ServeRefusesADeviceOrADirectoryAsMemoryFile) {
    std::string out;
    EXPECT_EQ(run({"serve", "--socket", dir.file("s"), "--mem-file", "/dev/null"}, out), 1) << out;
    EXPECT_EQ(out, "ringpager serve: memory file /dev/null is a character device, not a regular file\n");
    const std::string sub = dir.file("subdir");
    ASSERT_EQ(mkdir(sub.c_str(), 0700), 0);
    EXPECT_EQ(run({"serve", "--socket", dir.file("s"), "--mem-file", sub}, out), 1) << out;
    EXPECT_EQ(out, "ringpager serve: memory file " + sub + " is a directory, not a regular file\n");
}

TEST_F(SpecialFilesTest, ALayerReplacedByAFifoIsRefusedByInspectVerifyAndServe) {
    const std::string manifest = manifest_with_fifo_layer();
    const std::string cause =
        "layer 1 file " + layer1(manifest) + " is a FIFO, not a regular file (named by manifest " + manifest + ")";
    std::string out;
    EXPECT_EQ(run({"snapshot", "inspect", manifest}, out), 1) << out;
    EXPECT_EQ(last_line(out), "ringpager snapshot inspect: " + cause + "\n") << out;
    EXPECT_EQ(run({"snapshot", "verify", manifest}, out), 1) << out;
    EXPECT_EQ(out, "ringpager snapshot verify: " + cause + "\n");
    EXPECT_EQ(run({"serve", "--socket", dir.file("s"), "--snapshot", manifest}, out), 1) << out;
    EXPECT_EQ(out, "ringpager serve: " + cause + "\n");
}

TEST_F(SpecialFilesTest, AFifoManifestIsRefused) {
    const std::string path = fifo("snap.rpm");
    std::string out;
    EXPECT_EQ(run({"snapshot", "inspect", path}, out), 1) << out;
    EXPECT_EQ(out, "ringpager snapshot inspect: manifest " + path + " is a FIFO, not a regular file\n");
}

TEST_F(SpecialFilesTest, BuildRefusesAFifoBaseOrDiff) {
    const std::string base_fifo = fifo("base.fifo");
    std::string out;
    EXPECT_EQ(run({"snapshot", "build", "--base", base_fifo, "--out", dir.file("a.rpm"), "--no-sync"}, out), 1) << out;
    EXPECT_EQ(out, "ringpager snapshot build: base " + base_fifo + " is a FIFO, not a regular file\n");
    const std::string base = make_image(dir, "base", 4 * MiB);
    const std::string diff_fifo = fifo("diff.fifo");
    EXPECT_EQ(run({"snapshot", "build", "--base", base, "--diff", diff_fifo, "--out", dir.file("b.rpm"), "--no-sync"},
                  out), 1) << out;
    EXPECT_EQ(out, "ringpager snapshot build: diff 1 " + diff_fifo + " is a FIFO, not a regular file\n");
}

TEST_F(SpecialFilesTest, GuestsimRefusesAFifoImage) {
    const std::string guestsim = tool_path("RP_GUESTSIM");
    ASSERT_FALSE(guestsim.empty()) << "run through meson test";
    const std::string path = fifo("mem.fifo");
    std::string out;
    const int status = spawn("/usr/bin/timeout", {"--signal=KILL", "20", guestsim, "run", "--socket", dir.file("s"),
                                                  "--mem-file", path, "--regions", "4M"}).wait(&out);
    ASSERT_TRUE(WIFEXITED(status)) << out;
    EXPECT_EQ(WEXITSTATUS(status), 1) << out;
    EXPECT_EQ(out, "rp-guestsim run: memory file " + path + " is a FIFO, not a regular file\n");
}

}  // namespace
