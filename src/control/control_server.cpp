#include "control/control_server.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <thread>

#include "common/log.hpp"
#include "common/strict_json.hpp"
#include "server/listen_socket.hpp"

namespace ringpager {
namespace {

using nlohmann::json;

constexpr size_t kMaxRequestBytes = 4096;
constexpr size_t kMaxClients = 16;

json vm_json(const VmInfo& v, const std::vector<std::string>& listeners) {
    return json{{"id", v.id},
                {"pid", v.pid},
                {"listener", v.listener < listeners.size() ? listeners[v.listener] : std::string("?")},
                {"reactor", v.reactor},
                {"prefetching", v.prefetching},
                {"age_seconds", v.age_seconds},
                {"pages", {{"total", v.pages_total},
                           {"present", v.pages_present},
                           {"removed", v.pages_removed},
                           {"missing", v.pages_missing},
                           {"in_flight", v.pages_in_flight}}},
                {"faults", v.faults},
                {"resident", v.seconds_to_resident >= 0},
                {"seconds_to_resident", v.seconds_to_resident},
                {"fault_latency_seconds", {{"p50", v.fault_p50_seconds}, {"p99", v.fault_p99_seconds}}}};
}

json stats_json(const EngineStats& s) {
    return json{{"vms_accepted", s.vms_accepted},     {"vms_refused", s.vms_refused},
                {"vms_active", s.vms_active},         {"vms_released", s.vms_released},
                {"vms_failed", s.vms_failed},         {"vms_resident", s.vms_resident},
                {"faults", s.faults},                 {"pages_copied", s.pages_copied},
                {"pages_prefetched", s.pages_prefetched}, {"pages_zeroed", s.pages_zeroed},
                {"pages_poisoned", s.pages_poisoned}, {"bytes_read", s.bytes_read},
                {"removed_pages", s.removed_pages},   {"eagain_retries", s.eagain_retries},
                {"handshakes_pending", s.handshakes_pending}, {"vm_state_bytes", s.vm_state_bytes},
                {"accept_pauses", s.accept_pauses},   {"read_buffer_bytes", s.read_buffer_bytes},
                {"reactors_prefetch_paused", s.reactors_prefetch_paused},
                {"prefetch_pace_switches", s.prefetch_pace_switches},
                {"reactors_paced_by_vm_run_delay", s.reactors_paced_by_vm_run_delay},
                {"reactors_paced_by_host_pressure", s.reactors_paced_by_host_pressure}};
}

std::string error_line(const std::string& why) { return json{{"ok", false}, {"error", why}}.dump(); }

}  // namespace

std::string control_respond(const std::string& request, ControlTarget& target, bool& close_after) {
    close_after = false;
    json doc;
    std::string why;
    if (!parse_strict_json(request, doc, why)) {
        close_after = true;
        return error_line("the request is not JSON: " + why);
    }
    if (!doc.is_object() || !doc.contains("cmd") || !doc["cmd"].is_string()) {
        close_after = true;
        return error_line("a request is {\"cmd\":\"list|stats|vm|release|prefetch|record-ws|drain\"[,\"id\":N]}");
    }
    const std::string cmd = doc["cmd"].get<std::string>();
    const bool needs_id = cmd == "vm" || cmd == "release" || cmd == "prefetch" || cmd == "record-ws";
    uint64_t id = 0;
    if (needs_id) {
        if (!doc.contains("id") || !doc["id"].is_number_unsigned() || doc["id"].get<uint64_t>() == 0) {
            close_after = true;
            return error_line("\"" + cmd + "\" needs \"id\": a VM id (a positive integer; see \"list\")");
        }
        id = doc["id"].get<uint64_t>();
    }
    for (const auto& [key, value] : doc.items()) {
        (void)value;
        if (key != "cmd" && !(needs_id && key == "id")) {
            close_after = true;
            return error_line("unknown field \"" + escape_for_log(key) + "\" in a \"" + escape_for_log(cmd) + "\" request");
        }
    }
    const std::vector<std::string> listeners = target.listener_names();
    if (cmd == "stats") {
        json out = stats_json(target.totals());
        return json{{"ok", true}, {"stats", out}}.dump();
    }
    if (cmd == "drain") {
        target.stop_accepting();
        return json{{"ok", true}, {"accepting", false}}.dump();
    }
    if (cmd == "list" || needs_id) {
        const auto action = cmd == "release"     ? VmQuery::Action::release
                            : cmd == "prefetch"  ? VmQuery::Action::prefetch
                            : cmd == "record-ws" ? VmQuery::Action::record_ws
                                                 : VmQuery::Action::list;
        std::vector<VmInfo> vms;
        if (!target.query_vms(action, id, vms)) return error_line("a reactor did not answer in time; try again");
        if (cmd == "list") {
            json list = json::array();
            for (const VmInfo& v : vms) list.push_back(vm_json(v, listeners));
            return json{{"ok", true}, {"vms", list}}.dump();
        }
        if (vms.empty()) return error_line("no VM " + std::to_string(id) + " is being served");
        if (cmd == "record-ws") {
            const VmInfo& v = vms[0];
            if (!v.ws_error.empty())
                return error_line("VM " + std::to_string(id) + ": working set not written: " + v.ws_error);
            return json{{"ok", true},
                        {"working_set", {{"vm", id}, {"path", v.ws_path}, {"pages", v.ws_pages}, {"recording", true}}}}
                .dump();
        }
        return json{{"ok", true}, {"vm", vm_json(vms[0], listeners)}}.dump();
    }
    close_after = true;
    return error_line("unknown command \"" + escape_for_log(cmd) + "\" (list, stats, vm, release, prefetch, record-ws, drain)");
}

namespace {

class ControlServerImpl final : public ControlServer {
public:
    ControlServerImpl(ListenSocket socket, ControlTarget& target, FileDesc stop)
        : socket_(std::move(socket)), target_(target), stop_(std::move(stop)) {
        thread_ = std::thread([this] {
            pthread_setname_np(pthread_self(), "rp-control");
            run();
        });
    }
    ~ControlServerImpl() override {
        const uint64_t one = 1;
        (void)!write(stop_.get(), &one, sizeof one);
        thread_.join();
    }

private:
    struct Client {
        FileDesc fd;
        std::string pending;
    };

    void run() {
        for (;;) {
            std::vector<pollfd> fds = {{stop_.get(), POLLIN, 0}, {socket_.fd(), POLLIN, 0}};
            for (const Client& c : clients_) fds.push_back({c.fd.get(), POLLIN, 0});
            if (poll(fds.data(), fds.size(), -1) < 0) {
                if (errno == EINTR) continue;
                RP_ERROR("control socket %s: poll: %s; the control API stops", socket_.path().c_str(), std::strerror(errno));
                return;
            }
            if (fds[0].revents) return;
            for (size_t i = fds.size(); i-- > 2;)
                if (fds[i].revents && !serve(clients_[i - 2])) clients_.erase(clients_.begin() + static_cast<long>(i - 2));
            if (fds[1].revents) accept_one();
        }
    }

    void accept_one() {
        FileDesc conn(accept4(socket_.fd(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
        if (!conn.valid()) return;
        ucred cred{};
        socklen_t len = sizeof cred;
        if (getsockopt(conn.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
            (cred.uid != geteuid() && cred.uid != 0)) {
            RP_WARN("control connection from pid %d refused: uid %u is not the engine's", cred.pid, cred.uid);
            return;
        }
        if (clients_.size() >= kMaxClients) {
            send_line(conn.get(), error_line("too many control connections; try again"));
            return;
        }
        clients_.push_back({std::move(conn), {}});
    }

    // Reads what the client sent and answers each complete line. False: close it.
    bool serve(Client& c) {
        char buf[1024];
        const ssize_t n = recv(c.fd.get(), buf, sizeof buf, MSG_DONTWAIT);
        if (n == 0) return false;
        if (n < 0) return errno == EAGAIN || errno == EINTR;
        c.pending.append(buf, static_cast<size_t>(n));
        for (size_t end; (end = c.pending.find('\n')) != std::string::npos;) {
            if (end > kMaxRequestBytes) break;  // refused below, like a line still unterminated
            const std::string line = c.pending.substr(0, end);
            c.pending.erase(0, end + 1);
            bool close_after = false;
            if (!send_line(c.fd.get(), control_respond(line, target_, close_after)) || close_after) return false;
        }
        if (c.pending.find('\n') > kMaxRequestBytes && c.pending.size() > kMaxRequestBytes) {
            send_line(c.fd.get(), error_line("a request line is longer than " + std::to_string(kMaxRequestBytes) + " bytes"));
            return false;
        }
        return true;
    }

    // Writes one line, waiting at most a second for a slow reader.
    static bool send_line(int fd, std::string line) {
        line.push_back('\n');
        size_t done = 0;
        while (done < line.size()) {
            const ssize_t n = send(fd, line.data() + done, line.size() - done, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n > 0) {
                done += static_cast<size_t>(n);
                continue;
            }
            if (n < 0 && errno != EAGAIN && errno != EINTR) return false;
            pollfd p{fd, POLLOUT, 0};
            if (poll(&p, 1, 1000) <= 0) return false;
        }
        return true;
    }

    ListenSocket socket_;
    ControlTarget& target_;
    FileDesc stop_;
    std::vector<Client> clients_;
    std::thread thread_;
};

}  // namespace

std::unique_ptr<ControlServer> ControlServer::start(const std::string& path, ControlTarget& target, std::string& error) {
    auto socket = ListenSocket::bind(path, error);
    if (!socket) {
        error = "control socket: " + error;
        return nullptr;
    }
    FileDesc stop(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!stop.valid()) {
        error = std::string("control socket: eventfd: ") + std::strerror(errno);
        return nullptr;
    }
    return std::make_unique<ControlServerImpl>(std::move(*socket), target, std::move(stop));
}

}  // namespace ringpager
