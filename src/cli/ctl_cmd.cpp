// `ringpager ctl PATH list|stats|vm ID|release ID|prefetch ID|record-ws ID|drain`: one
// request to a running engine's control socket (serve --control PATH), its
// response printed as JSON. Exit 0 when the engine says ok, 1 when it says
// why not (that line on stderr), 2 on a usage error.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>

#include "ringpager/file_desc.hpp"

namespace {

int usage() {
    fprintf(stderr, "usage: ringpager ctl PATH list|stats|drain\n"
                    "       ringpager ctl PATH vm|release|prefetch|record-ws ID\n"
                    "PATH is the engine's control socket (ringpager serve --control PATH).\n");
    return 2;
}

}  // namespace

int ctl_main(int argc, char** argv) {
    if (argc >= 2 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0)) {
        usage();
        return 0;
    }
    if (argc < 3) return usage();
    const std::string path = argv[1], cmd = argv[2];
    nlohmann::json request = {{"cmd", cmd}};
    const bool needs_id = cmd == "vm" || cmd == "release" || cmd == "prefetch" || cmd == "record-ws";
    if (needs_id) {
        char* end = nullptr;
        const unsigned long long id = argc == 4 ? std::strtoull(argv[3], &end, 10) : 0;
        if (argc != 4 || end == argv[3] || *end != '\0' || id == 0) return usage();
        request["id"] = id;
    } else if (argc != 3 || (cmd != "list" && cmd != "stats" && cmd != "drain")) {
        return usage();
    }
    sockaddr_un addr{};
    if (path.size() >= sizeof addr.sun_path) {
        fprintf(stderr, "ringpager ctl: socket path '%s' is too long\n", path.c_str());
        return 2;
    }
    ringpager::FileDesc sock(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.size());
    if (!sock.valid() || connect(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        fprintf(stderr, "ringpager ctl: cannot connect to %s: %s (is ringpager serve --control %s running?)\n",
                path.c_str(), std::strerror(errno), path.c_str());
        return 1;
    }
    const std::string line = request.dump() + "\n";
    if (send(sock.get(), line.data(), line.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(line.size())) {
        fprintf(stderr, "ringpager ctl: sending to %s: %s\n", path.c_str(), std::strerror(errno));
        return 1;
    }
    std::string response;
    char buf[4096];
    while (response.find('\n') == std::string::npos) {
        const ssize_t n = recv(sock.get(), buf, sizeof buf, 0);
        if (n <= 0) break;
        response.append(buf, static_cast<size_t>(n));
        if (response.size() > (64u << 20)) break;  // a list of 1,000 VMs is well under a MiB
    }
    const auto reply = nlohmann::json::parse(response, nullptr, false);
    if (reply.is_discarded() || !reply.is_object() || !reply.contains("ok")) {
        fprintf(stderr, "ringpager ctl: %s answered something that is not a control response\n", path.c_str());
        return 1;
    }
    if (!reply["ok"].is_boolean() || !reply["ok"].get<bool>()) {
        const auto& error = reply.contains("error") && reply["error"].is_string() ? reply["error"].get<std::string>()
                                                                                  : std::string("refused");
        fprintf(stderr, "ringpager ctl: %s\n", error.c_str());
        return 1;
    }
    printf("%s\n", reply.dump(2).c_str());
    return 0;
}
