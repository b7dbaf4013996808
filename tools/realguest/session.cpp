// A handler process serving real guests restored in parallel.
#include "realguest/session.hpp"

#include <sys/stat.h>

#include <filesystem>
#include <thread>

#include "handler_process.hpp"

namespace ringpager::realguest {

bool SessionResult::passed() const {
    if (!failure.empty() || !handler_clean) return false;
    for (const RestoreReport& r : vms) {
        if (!r.passed()) return false;
    }
    return true;
}

SessionResult run_session(const Snapshot& snapshot, const Binaries& bin, const std::vector<std::string>& kinds,
                          const std::string& work_dir, bool full_checks) {
    SessionResult result;
    std::filesystem::create_directories(work_dir);
    std::vector<std::string> sockets;
    for (size_t i = 0; i < kinds.size(); i++) sockets.push_back(work_dir + "/handler-" + std::to_string(i) + ".sock");
    const std::string log_path = work_dir + "/handler.log";
    std::filesystem::remove(log_path);
    std::string error;
    auto handler = bench::HandlerProcess::start(handler_argv(bin, sockets, kinds, snapshot.mem_path), sockets.front(),
                                                log_path, std::chrono::seconds(30), error);
    if (!handler) {
        result.failure = "handler did not start: " + error;
        return result;
    }
    // ringpager binds every socket before its reactors answer the readiness probe.
    for (const std::string& s : sockets) {
        struct stat st {};
        if (::lstat(s.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode)) result.failure = "handler is not listening on " + s;
    }
    result.vms.resize(kinds.size());
    if (result.failure.empty()) {
        std::vector<std::thread> threads;
        for (size_t i = 0; i < kinds.size(); i++) {
            threads.emplace_back([&, i] {
                RestoreOptions o;
                o.name = kinds.size() == 1 ? kinds[i] : kinds[i] + "-" + std::to_string(i);
                o.work_dir = work_dir + "/" + o.name;
                o.socket_path = sockets[i];
                o.shim_path = bin.shim;
                o.expect_resident = handler_becomes_resident(kinds[i]);
                o.full_checks = full_checks;
                result.vms[i] = restore_and_check(snapshot, o);
            });
        }
        for (std::thread& t : threads) t.join();
    }
    result.handler_exit = handler->stop(std::chrono::seconds(10), result.handler_clean);
    try {
        result.handler_log = read_file(log_path);
    } catch (const Failure&) {
        result.handler_log = "(no handler log)";
    }
    if (result.failure.empty() && !result.handler_clean) result.failure = "handler " + result.handler_exit;
    return result;
}

}  // namespace ringpager::realguest
