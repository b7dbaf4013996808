// Pins how the engine serves sockets it inherited (systemd socket
// activation): matched to listeners by path (absolute, lexically normal),
// served, and never unlinked; a socket no listener names, or a path passed
// twice, refuses the start with one line and binds nothing.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cstring>
#include <filesystem>

#include "common/engine_fixture.hpp"

using namespace ringpager;
using namespace ringpager::testing;

namespace {

constexpr uint64_t MiB = 1024 * 1024;

// A Unix stream socket listening on `path`, as systemd's socket unit makes it.
FileDesc listening_at(const std::string& path) {
    FileDesc fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.size());
    EXPECT_EQ(bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0) << std::strerror(errno);
    EXPECT_EQ(listen(fd.get(), 16), 0) << std::strerror(errno);
    return fd;
}

// What systemd passes: a second fd for the same listening socket (the
// manager keeps its own), and the path getsockname() reports.
InheritedSocket passed(const FileDesc& held, const std::string& path) {
    return InheritedSocket{FileDesc(fcntl(held.get(), F_DUPFD_CLOEXEC, 3)), path, "vm"};
}

bool still_listening(const FileDesc& fd) {
    int listening = 0;
    socklen_t len = sizeof listening;
    return getsockopt(fd.get(), SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) == 0 && listening == 1;
}

class SocketActivationTest : public ::testing::Test {
protected:
    void SetUp() override {
        mem = make_image(dir, "mem", 4 * MiB);
        std::string error;
        source = open_raw_source(mem, error);
        ASSERT_TRUE(source) << error;
    }

    std::unique_ptr<Engine> start(const std::vector<std::string>& sockets, std::vector<InheritedSocket> inherited,
                                  std::string& error) {
        EngineConfig config;
        for (const std::string& s : sockets) config.listeners.push_back({s, source, ServeMode::lazy});
        config.reactors = 1;
        return Engine::start(std::move(config), std::move(inherited), error);
    }

    TempDir dir;
    std::string mem;
    std::shared_ptr<const Source> source;
};

// The listener names the path another way ("sub/../vm.sock", where "sub"
// does not exist, so binding it would fail): it serves the inherited socket,
// a second listener binds its own path, and at the stop only that one goes.
TEST_F(SocketActivationTest, AnInheritedSocketIsServedAndItsPathLeftInPlace) {
    const std::string path = dir.file("vm.sock");
    FileDesc held = listening_at(path);
    struct stat before {};
    ASSERT_EQ(stat(path.c_str(), &before), 0);
    std::string error;
    auto engine = start({dir.file("sub/../vm.sock"), dir.file("own.sock")}, [&] {
        std::vector<InheritedSocket> v;
        v.push_back(passed(held, path));
        return v;
    }(), error);
    ASSERT_TRUE(engine) << error;
    EXPECT_NE(engine->setup_summary().find(dir.file("sub/../vm.sock") + " (from systemd) <- "), std::string::npos)
        << engine->setup_summary();
    auto opened = sim::ExpectedImage::open(mem);
    ASSERT_TRUE(opened.ok());
    for (const std::string& socket : {path, dir.file("own.sock")}) {
        sim::Guest guest = make_guest(socket, {4 * MiB});
        ASSERT_TRUE(guest.connect_and_send().ok()) << socket;
        guest.touch(sim::Pattern::random, 2, 1.0, 3);
        EXPECT_EQ(guest.verify(opened.value()).mismatches, 0u) << socket;
    }
    engine->request_stop();
    EXPECT_TRUE(engine->wait());
    engine.reset();
    struct stat after {};
    ASSERT_EQ(stat(path.c_str(), &after), 0) << "the inherited socket's path was removed";
    EXPECT_EQ(after.st_ino, before.st_ino);
    EXPECT_TRUE(still_listening(held));  // the manager's own fd is untouched
    EXPECT_FALSE(std::filesystem::exists(dir.file("own.sock")));
}

TEST_F(SocketActivationTest, ASocketNoListenerNamesOrOnePassedTwiceRefusesTheStart) {
    const std::string path = dir.file("other.sock");
    FileDesc held = listening_at(path);
    const std::string line = "socket activation: the passed socket " + path +
                             " (fd %) is no listener's --socket (or config \"socket\"), or is passed twice: make the "
                             "socket unit's ListenStream= and the listeners agree";
    for (const std::vector<std::string>& sockets : {std::vector<std::string>{dir.file("vm.sock")},
                                                    std::vector<std::string>{path}}) {
        std::vector<InheritedSocket> inherited;
        inherited.push_back(passed(held, path));
        inherited.push_back(passed(held, path));  // matches the second case's listener once, then no more
        const int second_fd = inherited[sockets[0] == path ? 1 : 0].fd.get();
        std::string error;
        EXPECT_EQ(start(sockets, std::move(inherited), error), nullptr);
        std::string expected = line;
        expected.replace(expected.find('%'), 1, std::to_string(second_fd));
        EXPECT_EQ(error, expected);
        EXPECT_FALSE(std::filesystem::exists(dir.file("vm.sock")));
        EXPECT_TRUE(still_listening(held));
    }
}

}  // namespace
