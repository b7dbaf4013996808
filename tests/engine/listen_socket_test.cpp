// Pins SPEC §5 for socket paths: a path where a live listener answers is
// refused with one line and that listener keeps serving; a stale socket is
// replaced; the path appears by rename, already listening, with no temporary
// name left behind, and is removed when the engine stops; a path that is not
// a socket is refused and left alone.
#include <gtest/gtest.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "common/engine_fixture.hpp"

using namespace ringpager;
using namespace ringpager::testing;

namespace {

constexpr uint64_t MiB = 1024 * 1024;

std::string live_line(const std::string& path) {
    return "cannot listen on " + path + ": another process is listening on it (stop it, or choose another --socket)";
}

sockaddr_un address(const std::string& path) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.size());
    return addr;
}

// A Unix socket bound to `path` and listening with `backlog`.
FileDesc listening_socket(const std::string& path, int backlog) {
    FileDesc fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    const sockaddr_un addr = address(path);
    EXPECT_EQ(bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0) << std::strerror(errno);
    EXPECT_EQ(listen(fd.get(), backlog), 0) << std::strerror(errno);
    return fd;
}

ino_t inode_of(const std::string& path) {
    struct stat st {};
    return lstat(path.c_str(), &st) == 0 ? st.st_ino : 0;
}

class ListenSocketTest : public ::testing::Test {
protected:
    void SetUp() override {
        mem = make_image(dir, "mem", 4 * MiB);
        std::string error;
        source = open_raw_source(mem, error);
        ASSERT_TRUE(source) << error;
        auto opened = sim::ExpectedImage::open(mem);
        ASSERT_TRUE(opened.ok());
        image = std::make_unique<sim::ExpectedImage>(std::move(opened.value()));
    }

    // An engine listening on `socket`, or nullptr with `error`.
    std::unique_ptr<Engine> start(const std::string& socket, std::string& error) {
        EngineConfig config;
        config.listeners.push_back({socket, source, ServeMode::lazy});
        config.reactors = 1;
        return Engine::start(std::move(config), error);
    }

    // A simulated VM restores through `socket`, every byte verified.
    void serves_a_vm(const std::string& socket) {
        sim::Guest guest = make_guest(socket, {4 * MiB});
        ASSERT_TRUE(guest.connect_and_send().ok());
        guest.touch(sim::Pattern::random, 2, 1.0, 9);
        EXPECT_EQ(guest.verify(*image).mismatches, 0u);
    }

    // The names in `directory` (default: the test's directory), sorted.
    std::vector<std::string> names(std::string directory = "") const {
        if (directory.empty()) directory = std::filesystem::path(mem).parent_path();
        std::vector<std::string> out;
        for (const auto& entry : std::filesystem::directory_iterator(directory))
            out.push_back(entry.path().filename());
        std::sort(out.begin(), out.end());
        return out;
    }

    TempDir dir;
    std::string mem;
    std::shared_ptr<const Source> source;
    std::unique_ptr<sim::ExpectedImage> image;
};

TEST_F(ListenSocketTest, ASecondEngineOnALivePathIsRefusedAndTheFirstKeepsServing) {
    const std::string socket = dir.file("uffd.sock");
    std::string error;
    auto first = start(socket, error);
    ASSERT_TRUE(first) << error;
    const ino_t inode = inode_of(socket);
    auto second = start(socket, error);
    EXPECT_EQ(second, nullptr);
    EXPECT_EQ(error, live_line(socket));
    EXPECT_EQ(inode_of(socket), inode);  // not unlinked, not replaced
    EXPECT_EQ(names(), (std::vector<std::string>{"mem", "uffd.sock"}));
    serves_a_vm(socket);
    first->request_stop();
    EXPECT_TRUE(first->wait());
    EXPECT_FALSE(std::filesystem::exists(socket));
}

TEST_F(ListenSocketTest, ALiveListenerWithAFullBacklogCountsAsLive) {
    const std::string socket = dir.file("busy.sock");
    FileDesc live = listening_socket(socket, 0);
    // Fill the backlog: non-blocking connects until the kernel answers EAGAIN.
    std::vector<FileDesc> clients;
    for (int i = 0; i < 64; i++) {
        FileDesc c(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
        const sockaddr_un addr = address(socket);
        if (connect(c.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
            ASSERT_EQ(errno, EAGAIN) << std::strerror(errno);
            break;
        }
        clients.push_back(std::move(c));
    }
    ASSERT_LT(clients.size(), 64u) << "the backlog never filled";
    const ino_t inode = inode_of(socket);
    std::string error;
    EXPECT_EQ(start(socket, error), nullptr);
    EXPECT_EQ(error, live_line(socket));
    EXPECT_EQ(inode_of(socket), inode);
}

TEST_F(ListenSocketTest, AStaleSocketIsReplaced) {
    const std::string socket = dir.file("uffd.sock");
    listening_socket(socket, 8);  // closed at once: the file stays, a connect is refused
    ASSERT_TRUE(std::filesystem::is_socket(socket));
    const ino_t stale = inode_of(socket);
    std::string error;
    auto engine = start(socket, error);
    ASSERT_TRUE(engine) << error;
    EXPECT_NE(inode_of(socket), stale);
    serves_a_vm(socket);
}

TEST_F(ListenSocketTest, ThePathAppearsByRenameWithMode0600AndNoTemporaryNameIsLeft) {
    const std::string directory = std::filesystem::path(mem).parent_path();
    FileDesc watch(inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
    ASSERT_GE(inotify_add_watch(watch.get(), directory.c_str(), IN_CREATE | IN_MOVED_FROM | IN_MOVED_TO), 0);
    const std::string socket = dir.file("uffd.sock");
    std::string error;
    auto engine = start(socket, error);
    ASSERT_TRUE(engine) << error;

    // The kernel queued the events during start(): read them without waiting.
    std::vector<std::string> events;
    alignas(inotify_event) char buf[4096];
    ssize_t n;
    while ((n = read(watch.get(), buf, sizeof buf)) > 0) {
        for (char* p = buf; p < buf + n;) {
            auto* e = reinterpret_cast<inotify_event*>(p);
            const char* kind = (e->mask & IN_CREATE) ? "create " : (e->mask & IN_MOVED_FROM) ? "from " : "to ";
            events.push_back(kind + std::string(e->len > 0 ? e->name : ""));
            p += sizeof(inotify_event) + e->len;
        }
    }
    const std::string temp = "uffd.sock." + std::to_string(getpid());
    ASSERT_EQ(events.size(), 3u);
    EXPECT_EQ(events[0].rfind("create " + temp, 0), 0u) << events[0];
    EXPECT_EQ(events[1], "from " + events[0].substr(7));
    EXPECT_EQ(events[2], "to uffd.sock");
    EXPECT_EQ(events[0].substr(events[0].size() - 4), ".tmp");

    EXPECT_EQ(names(), (std::vector<std::string>{"mem", "uffd.sock"}));
    struct stat st {};
    ASSERT_EQ(lstat(socket.c_str(), &st), 0);
    EXPECT_TRUE(S_ISSOCK(st.st_mode));
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    engine->request_stop();
    EXPECT_TRUE(engine->wait());
    EXPECT_EQ(names(), (std::vector<std::string>{"mem"}));
}

TEST_F(ListenSocketTest, StoppingLeavesAPathThatNoLongerNamesItsSocket) {
    const std::string socket = dir.file("uffd.sock");
    std::string error;
    auto engine = start(socket, error);
    ASSERT_TRUE(engine) << error;
    ASSERT_EQ(unlink(socket.c_str()), 0);
    std::ofstream(socket) << "someone else's";
    engine->request_stop();
    EXPECT_TRUE(engine->wait());
    EXPECT_TRUE(std::filesystem::is_regular_file(socket));
}

TEST_F(ListenSocketTest, APathThatIsNotASocketIsRefusedAndLeftAlone) {
    const std::string file = dir.file("file");
    std::ofstream(file) << "keep me";
    const std::string fifo = dir.file("fifo");
    ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
    const std::string directory = dir.file("directory");
    ASSERT_EQ(mkdir(directory.c_str(), 0700), 0);
    for (const std::string& path : {file, fifo, directory}) {
        std::string error;
        EXPECT_EQ(start(path, error), nullptr) << path;
        EXPECT_EQ(error, "cannot listen on " + path + ": the path exists and is not a socket");
    }
    std::ifstream in(file);
    EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), "keep me");
    EXPECT_EQ(names(), (std::vector<std::string>{"directory", "fifo", "file", "mem"}));
}

TEST_F(ListenSocketTest, ALongPathBindsItsTemporaryNameBesideIt) {
    // PATH.<pid>.<n>.tmp does not fit sun_path (107 bytes); DIR/.<pid>.<n>.tmp does.
    const std::string prefix = dir.file("");
    const std::string socket = prefix + std::string(107 - prefix.size(), 's');
    std::string error;
    auto engine = start(socket, error);
    ASSERT_TRUE(engine) << error;
    EXPECT_EQ(names(), (std::vector<std::string>{"mem", std::string(107 - prefix.size(), 's')}));
    serves_a_vm(socket);
}

TEST_F(ListenSocketTest, APathWithNoRoomForATemporaryNameIsRefused) {
    // A directory so long that not even DIR/.<pid>.<n>.tmp fits beside "s".
    const std::string prefix = dir.file("");
    const std::string deep = prefix + std::string(105 - prefix.size(), 'd');
    ASSERT_EQ(mkdir(deep.c_str(), 0700), 0);
    const std::string socket = deep + "/s";
    ASSERT_EQ(socket.size(), 107u);
    std::string error;
    EXPECT_EQ(start(socket, error), nullptr);
    EXPECT_EQ(error, "cannot listen on " + socket +
                         ": no room in the 107 bytes of a socket path for a temporary name in its directory (the "
                         "socket is bound there first, then renamed): choose a shorter --socket path");
    EXPECT_TRUE(names(deep).empty());
}

}  // namespace
