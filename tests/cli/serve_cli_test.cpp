// Pins the `ringpager serve` command line (SPEC §4): exit codes, one-line
// errors (config file refusals included), a full restore served by the real
// binary, and clean shutdown on SIGTERM with the socket removed.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "common/engine_fixture.hpp"
#include "common/process.hpp"
#include "common/socket.hpp"
#include "common/wait_for_file.hpp"

using namespace ringpager;
using namespace ringpager::testing;

namespace {

constexpr uint64_t MiB = 1024 * 1024;

class ServeCliTest : public ::testing::Test {
protected:
    void SetUp() override {
        ringpager = tool_path("RP_RINGPAGER");
        guestsim = tool_path("RP_GUESTSIM");
        ASSERT_FALSE(ringpager.empty() || guestsim.empty()) << "run through meson test";
    }

    int run(const std::vector<std::string>& args, std::string& out) { return spawn(ringpager, args).wait(&out); }

    // Writes `text` to a file in the temp dir and returns its path.
    std::string write_config(const std::string& name, const std::string& text) const {
        const std::string path = dir.file(name);
        FILE* f = fopen(path.c_str(), "w");
        fputs(text.c_str(), f);
        fclose(f);
        return path;
    }

    TempDir dir;
    std::string ringpager, guestsim;
};

TEST_F(ServeCliTest, UsageErrorsExitTwoWithOneLine) {
    std::string out;
    EXPECT_EQ(WEXITSTATUS(run({"serve"}, out)), 2);
    EXPECT_NE(out.find("serve needs --socket and --mem-file"), std::string::npos) << out;
    EXPECT_EQ(WEXITSTATUS(run({"serve", "--socket", "/tmp/x", "--mem-file", "a", "--snapshot", "b"}, out)), 2);
    EXPECT_NE(out.find("not both"), std::string::npos) << out;
    EXPECT_EQ(WEXITSTATUS(run({"serve", "--socket", "/tmp/x", "--mem-file", "a", "--mode", "eager"}, out)), 2);
    EXPECT_EQ(WEXITSTATUS(run({"serve", "--socket", "/tmp/x", "--mem-file", "a", "--busy-poll-us", "5000"}, out)), 2);
    EXPECT_NE(out.find("--busy-poll-us"), std::string::npos) << out;
    EXPECT_EQ(WEXITSTATUS(run({"serve", "--socket", "/tmp/x", "--mem-file", "a", "--reactor-nice", "30"}, out)), 2);
    EXPECT_NE(out.find("--reactor-nice"), std::string::npos) << out;
    EXPECT_EQ(WEXITSTATUS(run({"serve", "--socket", "/tmp/x", "--mem-file", "a", "--prefetch-pressure", "5,101"}, out)),
              2);
    EXPECT_NE(out.find("--prefetch-pressure"), std::string::npos) << out;
    EXPECT_EQ(WEXITSTATUS(run({"serve", "--socket", "/tmp/x", "--mem-file", "a", "--prefetch-pressure", "5"}, out)), 2);
    EXPECT_NE(out.find("--prefetch-pressure"), std::string::npos) << out;
    EXPECT_EQ(WEXITSTATUS(run({"serve", "--socket", "/tmp/x", "--mem-file", "a", "--prefetch-pressure", "20,10"}, out)),
              2);
    EXPECT_EQ(out, "ringpager serve: --prefetch-pressure: RESUME (20 %) is above PAUSE (10 %) (see --help)\n");
    EXPECT_EQ(WEXITSTATUS(run({"frobnicate"}, out)), 2);
    EXPECT_NE(out.find("unknown command 'frobnicate'"), std::string::npos);
}

TEST_F(ServeCliTest, BadConfigFilesExitTwoWithOneExactLine) {
    const std::string prefix = "ringpager serve: config file ";
    std::string out;
    const std::string mistyped = write_config("mistyped.json", R"({"listeners":[{"socket":"a.sock","mem_file":"m","mode":3}]})");
    EXPECT_EQ(WEXITSTATUS(run({"serve", "--config", mistyped}, out)), 2);
    EXPECT_EQ(out, prefix + mistyped + ": listener 0: \"mode\" is not a string\n");
    const std::string socket_number = write_config("socket.json", R"({"listeners":[{"socket":1,"mem_file":"m"}]})");
    EXPECT_EQ(WEXITSTATUS(run({"serve", "--config", socket_number}, out)), 2);
    EXPECT_EQ(out, prefix + socket_number + ": listener 0: \"socket\" is not a string\n");
    const std::string unknown = write_config("unknown.json", R"({"listeners":[{"socket":"a.sock","mem_file":"m","mdoe":"lazy"}]})");
    EXPECT_EQ(WEXITSTATUS(run({"serve", "--config", unknown}, out)), 2);
    EXPECT_EQ(out, prefix + unknown + ": listener 0: unknown key \"mdoe\" (expected socket, mem_file, snapshot, mode, "
                   "record_ws, working_set)\n");
    const std::string duplicate = write_config("dup.json", R"({"listeners":[{"socket":"a.sock","mem_file":"m","mode":"lazy","mode":"prefetch"}]})");
    EXPECT_EQ(WEXITSTATUS(run({"serve", "--config", duplicate}, out)), 2);
    EXPECT_EQ(out, prefix + duplicate + ": duplicate key \"mode\" in object at depth 3\n");
}

TEST_F(ServeCliTest, ConfigFileThatIsAFifoIsRefusedWithoutBlocking) {
    const std::string fifo = dir.file("config.fifo");
    ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
    Child server = spawn(ringpager, {"serve", "--config", fifo});
    // No writer ever opens the FIFO: a reader that blocked would never exit.
    pollfd p{server.stderr_fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(std::chrono::milliseconds(kWait).count())) <= 0) {
        kill(server.pid, SIGKILL);
        ADD_FAILURE() << "ringpager serve blocked on a FIFO config file";
    }
    std::string out;
    EXPECT_EQ(WEXITSTATUS(server.wait(&out)), 2);
    EXPECT_EQ(out, "ringpager serve: config file " + fifo + " is a FIFO, not a regular file\n");
}

TEST_F(ServeCliTest, ConfigFileExcludesListenerFlags) {
    const std::string config = write_config("c.json", R"({"listeners":[{"socket":"a.sock","mem_file":"m"}]})");
    std::string out;
    EXPECT_EQ(WEXITSTATUS(run({"serve", "--config", config, "--socket", dir.file("s")}, out)), 2);
    EXPECT_EQ(out, "ringpager serve: --socket cannot be given with --config: the config file names every listener "
                   "(see --help)\n");
    EXPECT_EQ(WEXITSTATUS(run({"serve", "--mode", "prefetch", "--config", config}, out)), 2);
    EXPECT_EQ(out, "ringpager serve: --mode cannot be given with --config: the config file names every listener "
                   "(see --help)\n");
}

TEST_F(ServeCliTest, ReactorsAreBoundedByTheAcceptorTable) {
    std::string out;
    EXPECT_EQ(WEXITSTATUS(run({"serve", "--socket", dir.file("s"), "--mem-file", "m", "--reactors", "257"}, out)), 2);
    EXPECT_EQ(out, "ringpager serve: --reactors: Value 257 not in range 0 to 256 (see --help)\n");
    EXPECT_EQ(WEXITSTATUS(run({"serve", "--socket", dir.file("s"), "--mem-file", "m", "--reactors", "-1"}, out)), 2);
    EXPECT_EQ(out, "ringpager serve: --reactors: Value -1 not in range 0 to 256 (see --help)\n");
}

TEST_F(ServeCliTest, HelpExitsZero) {
    std::string out;
    EXPECT_EQ(WEXITSTATUS(run({"serve", "--help"}, out)), 0);
    EXPECT_NE(out.find("--kill-on-failure"), std::string::npos);
    EXPECT_EQ(WEXITSTATUS(run({"--help"}, out)), 0);
}

TEST_F(ServeCliTest, S3SnapshotsNeedACacheDirAndAUsableUrl) {
    std::string out;
    EXPECT_EQ(WEXITSTATUS(run({"serve", "--socket", dir.file("s"), "--snapshot", "s3://bucket/snap"}, out)), 2);
    EXPECT_EQ(out, "ringpager serve: an s3:// snapshot needs --cache-dir DIR (see --help)\n");
    EXPECT_EQ(WEXITSTATUS(run({"serve", "--socket", dir.file("s"), "--mem-file", "m", "--cache-dir", dir.file("c")}, out)),
              2);
    EXPECT_EQ(out, "ringpager serve: --cache-dir is for s3:// snapshots only (see --help)\n");
    EXPECT_EQ(WEXITSTATUS(run({"serve", "--socket", dir.file("s"), "--snapshot", "s3://B/snap", "--cache-dir",
                               dir.file("c")},
                              out)),
              1);
    EXPECT_EQ(out, "ringpager serve: 's3://B/snap' is not an s3://BUCKET/NAME URL: bucket name 'B' breaks S3's rules "
                   "(3 to 63 of a-z 0-9 . -, starting and ending with a letter or digit)\n");
}

TEST_F(ServeCliTest, MissingOrBadSnapshotIsARuntimeError) {
    std::string out;
    EXPECT_EQ(WEXITSTATUS(run({"serve", "--socket", dir.file("s"), "--mem-file", dir.file("nope")}, out)), 1);
    EXPECT_EQ(out, "ringpager serve: memory file " + dir.file("nope") + ": open: No such file or directory\n");
    const std::string odd = dir.file("odd");
    FILE* f = fopen(odd.c_str(), "w");
    fputs("not a memory image", f);
    fclose(f);
    EXPECT_EQ(WEXITSTATUS(run({"serve", "--socket", dir.file("s"), "--mem-file", odd}, out)), 1);
    EXPECT_NE(out.find("not a non-zero multiple of 4096"), std::string::npos) << out;
    EXPECT_EQ(WEXITSTATUS(run({"serve", "--socket", dir.file("s"), "--snapshot", odd}, out)), 1);
}

TEST_F(ServeCliTest, ServesARestoreAndShutsDownCleanlyOnSigterm) {
    const std::string mem = make_image(dir, "mem", 8 * MiB);
    const std::string socket = dir.file("serve.sock");
    Child server = spawn(ringpager, {"serve", "--socket", socket, "--mem-file", mem, "--mode", "prefetch",
                                     "--reactors", "2"});
    ASSERT_TRUE(wait_for_file(socket));
    EXPECT_EQ(std::filesystem::status(socket).permissions() & std::filesystem::perms::all,
              std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    std::string guest_out;
    Child guest = spawn(guestsim, {"run", "--socket", socket, "--mem-file", mem, "--regions", "4M,4M", "--vcpus",
                                   "2", "--pattern", "random"});
    EXPECT_EQ(guest.wait(&guest_out), 0) << guest_out;
    kill(server.pid, SIGTERM);
    std::string log;
    const int status = server.wait(&log);
    EXPECT_TRUE(WIFEXITED(status)) << log;
    EXPECT_EQ(WEXITSTATUS(status), 0) << log;
    EXPECT_FALSE(std::filesystem::exists(socket));
    EXPECT_NE(log.find("allocator mimalloc"), std::string::npos) << log;
    EXPECT_NE(log.find("2 reactor(s) at nice -10"), std::string::npos) << log;
    EXPECT_NE(log.find("stopped: 1 VMs served (0 refused, 0 failed)"), std::string::npos) << log;
    EXPECT_NE(log.find("busy polls"), std::string::npos) << log;
}

TEST_F(ServeCliTest, ASecondServeOnALiveSocketExitsOneAndTheFirstKeepsServing) {
    const std::string mem = make_image(dir, "mem", 4 * MiB);
    const std::string socket = dir.file("serve.sock");
    Child first = spawn(ringpager, {"serve", "--socket", socket, "--mem-file", mem, "--reactors", "1"});
    ASSERT_TRUE(wait_for_file(socket));
    std::string out;
    EXPECT_EQ(WEXITSTATUS(run({"serve", "--socket", socket, "--mem-file", mem, "--reactors", "1"}, out)), 1) << out;
    EXPECT_EQ(out, "ringpager serve: cannot listen on " + socket +
                       ": another process is listening on it (stop it, or choose another --socket)\n");
    std::string guest_out;
    EXPECT_EQ(spawn(guestsim, {"run", "--socket", socket, "--mem-file", mem, "--regions", "4M"}).wait(&guest_out), 0)
        << guest_out;
    kill(first.pid, SIGTERM);
    std::string log;
    EXPECT_EQ(WEXITSTATUS(first.wait(&log)), 0) << log;
    EXPECT_NE(log.find("stopped: 1 VMs served"), std::string::npos) << log;
    EXPECT_FALSE(std::filesystem::exists(socket));
}

TEST_F(ServeCliTest, BusyPollingOffNeverPolls) {
    const std::string mem = make_image(dir, "mem", 4 * MiB);
    const std::string socket = dir.file("serve.sock");
    Child server = spawn(ringpager, {"serve", "--socket", socket, "--mem-file", mem, "--busy-poll-us", "0"});
    ASSERT_TRUE(wait_for_file(socket));
    std::string guest_out;
    Child guest = spawn(guestsim, {"run", "--socket", socket, "--mem-file", mem, "--regions", "4M", "--vcpus", "2",
                                   "--pattern", "random"});
    EXPECT_EQ(guest.wait(&guest_out), 0) << guest_out;
    kill(server.pid, SIGTERM);
    std::string log;
    EXPECT_EQ(WEXITSTATUS(server.wait(&log)), 0) << log;
    EXPECT_NE(log.find("busy polls 0 hit, 0 missed"), std::string::npos) << log;
}

TEST_F(ServeCliTest, ConfigFileServesSeveralSockets) {
    const std::string mem = make_image(dir, "mem", 4 * MiB);
    const std::string config = dir.file("config.json");
    FILE* f = fopen(config.c_str(), "w");
    fprintf(f, R"({"listeners":[{"socket":"%s","mem_file":"%s","mode":"lazy"},{"socket":"%s","mem_file":"%s","mode":"prefetch"}]})",
            dir.file("a.sock").c_str(), mem.c_str(), dir.file("b.sock").c_str(), mem.c_str());
    fclose(f);
    Child server = spawn(ringpager, {"serve", "--config", config});
    ASSERT_TRUE(wait_for_file(dir.file("b.sock")));
    for (const char* s : {"a.sock", "b.sock"}) {
        std::string out;
        EXPECT_EQ(spawn(guestsim, {"run", "--socket", dir.file(s), "--mem-file", mem, "--regions", "4M"}).wait(&out), 0)
            << out;
    }
    kill(server.pid, SIGINT);
    std::string log;
    EXPECT_EQ(WEXITSTATUS(server.wait(&log)), 0) << log;
    EXPECT_NE(log.find("stopped: 2 VMs served"), std::string::npos) << log;
}

// Reads a child's output until `needle` appears (or it closes its output).
bool read_until(Child& child, const std::string& needle, std::string& said) {
    char buf[512];
    ssize_t n;
    while (said.find(needle) == std::string::npos && (n = read(child.stderr_fd, buf, sizeof buf)) > 0)
        said.append(buf, static_cast<size_t>(n));
    return said.find(needle) != std::string::npos;
}

// SIGTERM with a VM mid-restore: the engine stops accepting, makes the VM
// resident, releases it and exits 0; the VM then reads every page right
// with no pager left.
TEST_F(ServeCliTest, SigtermFinishesARestoreInProgressBeforeExiting) {
    const std::string mem = make_image(dir, "mem", 8 * MiB);
    const std::string socket = dir.file("serve.sock");
    Child server = spawn(ringpager, {"serve", "--socket", socket, "--mem-file", mem, "--reactors", "2"});
    ASSERT_TRUE(wait_for_file(socket));
    Child guest = spawn(guestsim, {"run", "--socket", socket, "--mem-file", mem, "--regions", "4M,4M", "--pattern",
                                   "random", "--fraction", "0.1", "--hold"});
    std::string said;
    ASSERT_TRUE(read_until(guest, "holding after", said)) << said;
    kill(server.pid, SIGTERM);
    std::string log;
    const int status = server.wait(&log);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << log;
    EXPECT_NE(log.find("Terminated received: no new VMs; finishing restores within 30.0 s"), std::string::npos) << log;
    EXPECT_NE(log.find("released (engine stopping (restore finished))"), std::string::npos) << log;
    EXPECT_NE(log.find("stopped: 1 VMs served (0 refused, 0 failed)"), std::string::npos) << log;
    kill(guest.pid, SIGUSR1);
    std::string guest_out;
    EXPECT_EQ(guest.wait(&guest_out), 0) << said << guest_out;
}

// With --stop-timeout 0 a VM mid-restore is left at once: named in one line
// and, under --kill-on-failure, killed through its pidfd.
TEST_F(ServeCliTest, AVmLeftAtStopIsNamedAndKilledUnderKillOnFailure) {
    const std::string mem = make_image(dir, "mem", 4 * MiB);
    const std::string socket = dir.file("serve.sock");
    Child server = spawn(ringpager, {"serve", "--socket", socket, "--mem-file", mem, "--stop-timeout", "0",
                                     "--kill-on-failure"});
    ASSERT_TRUE(wait_for_file(socket));
    Child guest = spawn(guestsim, {"run", "--socket", socket, "--mem-file", mem, "--regions", "4M", "--pattern",
                                   "sequential", "--fraction", "0.5", "--hold"});
    std::string said;
    ASSERT_TRUE(read_until(guest, "holding after 512 touches", said)) << said;
    kill(server.pid, SIGTERM);
    std::string log;
    const int status = server.wait(&log);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << log;
    EXPECT_NE(log.find("released before it was resident: the stop timeout passed; 512 of 1024 pages were never "
                       "served and it hangs on its next fault there"),
              std::string::npos)
        << log;
    EXPECT_NE(log.find("killed with SIGKILL through its pidfd (--kill-on-failure)"), std::string::npos) << log;
    const int guest_status = guest.wait();
    EXPECT_TRUE(WIFSIGNALED(guest_status) && WTERMSIG(guest_status) == SIGKILL);
}

// `ringpager ctl` against a running `ringpager serve --control`: JSON on
// stdout and exit 0 when the engine says ok; its one line on stderr and exit
// 1 when it says why not; exit 2 for a usage error.
TEST_F(ServeCliTest, CtlAsksARunningEngine) {
    const std::string mem = make_image(dir, "mem", 4 * MiB);
    const std::string socket = dir.file("serve.sock"), control = dir.file("control.sock");
    Child server = spawn(ringpager, {"serve", "--socket", socket, "--mem-file", mem, "--control", control});
    ASSERT_TRUE(wait_for_file(socket));
    ASSERT_TRUE(wait_for_file(control));
    std::string out;
    EXPECT_EQ(WEXITSTATUS(run({"ctl", control, "stats"}, out)), 0) << out;
    EXPECT_NE(out.find("\"vms_active\": 0"), std::string::npos) << out;
    EXPECT_EQ(WEXITSTATUS(run({"ctl", control, "list"}, out)), 0) << out;
    EXPECT_NE(out.find("\"vms\": []"), std::string::npos) << out;
    EXPECT_EQ(WEXITSTATUS(run({"ctl", control, "vm", "99"}, out)), 1);
    EXPECT_EQ(out, "ringpager ctl: no VM 99 is being served\n");
    EXPECT_EQ(WEXITSTATUS(run({"ctl", control, "vm"}, out)), 2);
    EXPECT_EQ(WEXITSTATUS(run({"ctl", dir.file("nothing.sock"), "stats"}, out)), 1);
    EXPECT_NE(out.find("cannot connect to"), std::string::npos) << out;
    kill(server.pid, SIGTERM);
    std::string log;
    const int status = server.wait(&log);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << log;
    EXPECT_FALSE(std::filesystem::exists(control));
}

// --log-format json: every line of the log is one JSON object; the VM
// lifecycle events carry their fields, so a pipeline needs no regex.
TEST_F(ServeCliTest, JsonLogCarriesTheLifecycleEvents) {
    const std::string mem = make_image(dir, "mem", 4 * MiB);
    const std::string socket = dir.file("serve.sock");
    Child server = spawn(ringpager, {"serve", "--socket", socket, "--mem-file", mem, "--mode", "prefetch",
                                     "--log-format", "json"});
    ASSERT_TRUE(wait_for_file(socket));
    {  // a peer that sends bytes that are no handshake
        FileDesc peer = connect_to(socket);
        ASSERT_TRUE(peer.valid());
        ASSERT_EQ(write(peer.get(), "}", 1), 1);
        shutdown(peer.get(), SHUT_WR);
        char c;
        (void)!read(peer.get(), &c, 1);  // the engine closes it on refusal
    }
    std::string guest_out;
    Child guest = spawn(guestsim, {"run", "--socket", socket, "--mem-file", mem, "--regions", "4M", "--pattern",
                                   "random", "--fraction", "0.25"});
    EXPECT_EQ(guest.wait(&guest_out), 0) << guest_out;
    kill(server.pid, SIGTERM);
    std::string log;
    const int status = server.wait(&log);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << log;
    std::map<std::string, nlohmann::json> events;
    size_t lines = 0;
    for (size_t at = 0, end; (end = log.find('\n', at)) != std::string::npos; at = end + 1) {
        const auto j = nlohmann::json::parse(log.substr(at, end - at), nullptr, false);
        ASSERT_FALSE(j.is_discarded()) << log.substr(at, end - at);
        ASSERT_TRUE(j.contains("time") && j.contains("level") && j.contains("msg")) << j;
        ++lines;
        if (j.contains("event")) events[j["event"]] = j;
    }
    EXPECT_GE(lines, 5u) << log;
    ASSERT_EQ(events.count("vm_refused"), 1u) << log;
    EXPECT_EQ(events["vm_refused"]["cause"], "handshake");
    EXPECT_EQ(events["vm_refused"]["listener"], socket);
    ASSERT_EQ(events.count("vm_connected"), 1u) << log;
    const auto& connected = events["vm_connected"];
    EXPECT_EQ(connected["pid"].get<int>(), guest.pid);
    EXPECT_EQ(connected["bytes"].get<uint64_t>(), 4 * MiB);
    EXPECT_EQ(connected["mode"], "prefetch");
    ASSERT_EQ(events.count("vm_resident"), 1u) << log;
    EXPECT_EQ(events["vm_resident"]["vm"], connected["vm"]);
    ASSERT_EQ(events.count("vm_released"), 1u) << log;
    const auto& released = events["vm_released"];
    EXPECT_EQ(released["vm"], connected["vm"]);
    EXPECT_EQ(released["result"], "served");
    EXPECT_EQ(released["pages_copied_on_fault"].get<uint64_t>() + released["pages_prefetched"].get<uint64_t>() +
                  released["pages_zeroed"].get<uint64_t>(),
              4 * MiB / 4096);
}

}  // namespace

namespace {

// Issue 11: `serve --record-ws` writes the set when the VM is released;
// `serve --mode prefetch --working-set` replays it; a corrupt, truncated or
// foreign file is one line at start and the VM is still served byte exact.
class WorkingSetCliTest : public ServeCliTest {
protected:
    // Serves one guestsim run (random 10%, fixed seed) and returns the log.
    // `source` replaces "--mem-file MEM" (a snapshot of MEM's bytes).
    std::string serve_one(const std::string& mem, std::vector<std::string> extra,
                          std::vector<std::string> source = {}) {
        const std::string socket = dir.file("ws.sock");
        if (source.empty()) source = {"--mem-file", mem};
        std::vector<std::string> args = {"serve", "--socket", socket};
        args.insert(args.end(), source.begin(), source.end());
        args.insert(args.end(), extra.begin(), extra.end());
        Child server = spawn(ringpager, args);
        EXPECT_TRUE(wait_for_file(socket));
        std::string guest_out;
        Child guest = spawn(guestsim, {"run", "--socket", socket, "--mem-file", mem, "--regions", "4M", "--pattern",
                                       "random", "--fraction", "0.1", "--seed", "5"});
        EXPECT_EQ(guest.wait(&guest_out), 0) << guest_out;
        kill(server.pid, SIGTERM);
        std::string log;
        const int status = server.wait(&log);
        EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << log;
        return log;
    }
    static std::string read_file(const std::string& path) {
        std::ifstream in(path, std::ios::binary);
        return std::string(std::istreambuf_iterator<char>(in), {});
    }
    static void write_file(const std::string& path, const std::string& bytes) {
        std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
    }
};

TEST_F(WorkingSetCliTest, RecordedByServeThenReplayed) {
    const std::string mem = make_image(dir, "mem", 4 * MiB);
    const std::string ws = dir.file("vm.ws");
    std::string log = serve_one(mem, {"--record-ws", ws});
    ASSERT_TRUE(std::filesystem::exists(ws)) << log;
    EXPECT_NE(log.find("written to " + ws), std::string::npos) << log;
    log = serve_one(mem, {"--mode", "prefetch", "--working-set", ws});
    EXPECT_NE(log.find("working set " + ws + ": "), std::string::npos) << log;
    EXPECT_NE(log.find("replayed first to VMs of"), std::string::npos) << log;
    EXPECT_NE(log.find("installed ahead of a fault (faults saved)"), std::string::npos) << log;
}

// A VM that stays up (guestsim --hold) gets its working set written without
// a release: `ringpager ctl PATH record-ws 1` for that VM, SIGUSR1 for every
// recording VM; each file holds the pages touched so far, and the VM is
// served on (it verifies every page afterwards).
TEST_F(WorkingSetCliTest, CtlRecordWsAndSigusr1WriteTheSetOfAVmStillServed) {
    const std::string mem = make_image(dir, "mem", 4 * MiB);
    const std::string socket = dir.file("ws.sock"), control = dir.file("control.sock");
    const std::string ws = dir.file("vm-{vm}.ws"), ws1 = dir.file("vm-1.ws");
    Child server = spawn(ringpager, {"serve", "--socket", socket, "--mem-file", mem, "--record-ws", ws, "--control",
                                     control});
    ASSERT_TRUE(wait_for_file(socket));
    ASSERT_TRUE(wait_for_file(control));
    Child guest = spawn(guestsim, {"run", "--socket", socket, "--mem-file", mem, "--regions", "4M", "--pattern",
                                   "random", "--fraction", "0.1", "--seed", "5", "--hold"});
    std::string said;
    ASSERT_TRUE(read_until(guest, "holding after", said)) << said;
    const size_t at = said.find("holding after ");
    const uint64_t touched = std::stoull(said.substr(at + 14));
    ASSERT_GT(touched, 50u);
    std::string out;
    ASSERT_EQ(WEXITSTATUS(run({"ctl", control, "record-ws", "1"}, out)), 0) << out;
    EXPECT_NE(out.find("\"pages\": " + std::to_string(touched)), std::string::npos) << out;
    EXPECT_NE(out.find("\"path\": \"" + ws1 + "\""), std::string::npos) << out;
    const std::string by_ctl = read_file(ws1);
    ASSERT_FALSE(by_ctl.empty());
    std::filesystem::remove(ws1);
    kill(server.pid, SIGUSR1);
    std::string log;
    ASSERT_TRUE(read_until(server, "working set(s) written", log)) << log;
    EXPECT_NE(log.find("User defined signal 1 received: 1 working set(s) written; recording goes on"),
              std::string::npos) << log;
    EXPECT_EQ(read_file(ws1), by_ctl);  // nothing touched in between: the same set
    EXPECT_EQ(WEXITSTATUS(run({"ctl", control, "record-ws", "2"}, out)), 1);
    EXPECT_EQ(out, "ringpager ctl: no VM 2 is being served\n");
    kill(guest.pid, SIGUSR1);
    std::string guest_out;
    EXPECT_EQ(guest.wait(&guest_out), 0) << said << guest_out;
    kill(server.pid, SIGTERM);
    std::string rest;
    const int status = server.wait(&rest);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << log << rest;
}

TEST_F(WorkingSetCliTest, WsMergeWritesTheUnionAndRefusesBadInputs) {
    const std::string mem = make_image(dir, "mem", 4 * MiB);
    const std::string ws = dir.file("vm.ws"), merged = dir.file("merged.ws");
    serve_one(mem, {"--record-ws", ws});
    std::string out;
    ASSERT_EQ(WEXITSTATUS(run({"ws", "merge", ws, ws, "--out", merged, "--min-count", "2"}, out)), 0) << out;
    EXPECT_NE(out.find("from 2 recordings (pages in at least 2)"), std::string::npos) << out;
    EXPECT_EQ(read_file(merged), read_file(ws));  // a set merged with itself is itself
    EXPECT_EQ(WEXITSTATUS(run({"ws", "merge", ws, "--out", merged, "--min-count", "2"}, out)), 2);
    EXPECT_EQ(out, "ringpager ws merge: --min-count 2 is more than the 1 recordings given\n");
    write_file(dir.file("bad.ws"), "nonsense");
    EXPECT_EQ(WEXITSTATUS(run({"ws", "merge", ws, dir.file("bad.ws"), "--out", merged}, out)), 1);
    EXPECT_EQ(out, "ringpager ws merge: working set " + dir.file("bad.ws") +
                       ": truncated: 8 bytes, shorter than its header\n");
}

TEST_F(WorkingSetCliTest, BadFilesAreOneLineAndTheVmIsServedWithoutReplay) {
    const std::string mem = make_image(dir, "mem", 4 * MiB);
    const std::string other = make_image(dir, "other", 4 * MiB, 0.3, 99);
    const std::string ws = dir.file("vm.ws");
    serve_one(mem, {"--record-ws", ws});
    const std::string good = read_file(ws);
    ASSERT_GT(good.size(), 72u);
    const std::string socket = dir.file("ws.sock");
    const std::string tail = "; " + socket + " is served without replay";

    const std::string corrupt = dir.file("corrupt.ws");
    write_file(corrupt, good.substr(0, good.size() - 1) + static_cast<char>(good.back() ^ 1));
    std::string log = serve_one(mem, {"--mode", "prefetch", "--working-set", corrupt});
    EXPECT_NE(log.find("working set " + corrupt + ": corrupt: checksum mismatch" + tail + "\n"), std::string::npos) << log;
    EXPECT_EQ(log.find("replayed first"), std::string::npos) << log;

    const std::string truncated = dir.file("truncated.ws");
    write_file(truncated, good.substr(0, 40));
    log = serve_one(mem, {"--mode", "prefetch", "--working-set", truncated});
    EXPECT_NE(log.find("working set " + truncated + ": truncated: 40 bytes, shorter than its header" + tail + "\n"),
              std::string::npos) << log;

    log = serve_one(other, {"--mode", "prefetch", "--working-set", ws});
    EXPECT_NE(log.find("working set " + ws + ": recorded from another snapshot (content fingerprint differs)" + tail +
                       "\n"), std::string::npos) << log;

    std::string out;
    EXPECT_EQ(WEXITSTATUS(run({"serve", "--socket", socket, "--mem-file", mem, "--working-set", ws}, out)), 2);
    EXPECT_NE(out.find("--working-set needs --mode prefetch"), std::string::npos) << out;
}

// A compressed snapshot's identity comes from its manifest's block
// checksums, so a set recorded on its zstd build replays on its lz4 build;
// a set of another snapshot is one line and the VM is served without replay.
TEST_F(WorkingSetCliTest, CompressedSnapshotsRecordAndReplayAndRefuseAForeignSet) {
    const std::string mem = make_image(dir, "mem", 4 * MiB);
    const std::string other = make_image(dir, "other", 4 * MiB, 0.3, 99);
    const std::string zstd = dir.file("zstd.manifest"), lz4 = dir.file("lz4.manifest");
    const std::string other_lz4 = dir.file("other.manifest");
    std::string out;
    ASSERT_EQ(WEXITSTATUS(run({"snapshot", "build", "--base", mem, "--compress", "zstd", "--out", zstd}, out)), 0)
        << out;
    ASSERT_EQ(WEXITSTATUS(run({"snapshot", "build", "--base", mem, "--compress", "lz4", "--out", lz4}, out)), 0)
        << out;
    ASSERT_EQ(WEXITSTATUS(run({"snapshot", "build", "--base", other, "--compress", "lz4", "--out", other_lz4}, out)),
              0)
        << out;
    const std::string ws = dir.file("vm.ws");
    std::string log = serve_one(mem, {"--record-ws", ws}, {"--snapshot", zstd});
    ASSERT_TRUE(std::filesystem::exists(ws)) << log;
    log = serve_one(mem, {"--mode", "prefetch", "--working-set", ws}, {"--snapshot", lz4});
    EXPECT_NE(log.find("replayed first to VMs of"), std::string::npos) << log;
    EXPECT_NE(log.find("installed ahead of a fault (faults saved)"), std::string::npos) << log;

    // The foreign set: guestsim verifies every page it touched against `other`.
    const std::string tail = "; " + dir.file("ws.sock") + " is served without replay\n";
    log = serve_one(other, {"--mode", "prefetch", "--working-set", ws}, {"--snapshot", other_lz4});
    EXPECT_NE(log.find("working set " + ws + ": recorded from another snapshot (content fingerprint differs)" + tail),
              std::string::npos)
        << log;
    EXPECT_EQ(log.find("replayed first"), std::string::npos) << log;
    EXPECT_NE(log.find(": released ("), std::string::npos) << log;   // served (guestsim verified its pages)
    EXPECT_EQ(log.find("working set of"), std::string::npos) << log;
}

}  // namespace
