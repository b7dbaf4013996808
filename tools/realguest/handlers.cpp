// Handler command lines and binary discovery for the real-guest harness.
#include "realguest/handlers.hpp"

#include <cstdlib>
#include <filesystem>

#include "realguest/common.hpp"

namespace ringpager::realguest {
namespace {

std::string from_env_or(const char* name, const std::string& fallback) {
    const char* v = std::getenv(name);
    return v != nullptr && *v != '\0' ? std::string(v) : fallback;
}

}  // namespace

Binaries Binaries::find() {
    // This program lives in <build>/tools/realguest (rp-realguest) or <build>/tests/realguest.
    const std::string build = std::filesystem::path(self_dir()).parent_path().parent_path().string();
    Binaries b;
    b.ringpager = from_env_or("RP_RINGPAGER", build + "/src/cli/ringpager");
    b.baseline = from_env_or("RP_BASELINE", build + "/tools/baseline/rp-baseline");
    b.guest = from_env_or("RP_GUEST", build + "/tools/realguest/rg-guest");
    b.shim = from_env_or("RP_SHIM", build + "/tools/realguest/librp-fcshim.so");
    b.cache_dir = from_env_or("RP_REALGUEST_CACHE", build + "/realguest-cache");
    for (const std::string* p : {&b.ringpager, &b.baseline, &b.guest, &b.shim}) {
        if (!std::filesystem::exists(*p)) throw Failure("not built: " + *p + " (run ninja in the build directory)");
    }
    return b;
}

const std::vector<std::string>& handler_kinds() {
    static const std::vector<std::string> kinds = {"lazy",     "prefetch",       "lazy-no-busy-poll",
                                                   "baseline", "baseline-eager", "ignore-remove"};
    return kinds;
}

bool handler_becomes_resident(const std::string& kind) { return kind == "prefetch" || kind == "baseline-eager"; }

std::vector<std::string> handler_argv(const Binaries& bin, const std::vector<std::string>& sockets,
                                      const std::vector<std::string>& kinds, const std::string& mem_path) {
    if (sockets.empty() || sockets.size() != kinds.size()) throw Failure("one handler kind per socket");
    const std::string& kind = kinds.front();
    if (kind == "lazy-no-busy-poll") {
        // Engine-wide option, so one socket: the reactor sleeps at once instead of polling.
        if (sockets.size() != 1) throw Failure("lazy-no-busy-poll serves one socket");
        return {bin.ringpager, "serve", "--mem-file", mem_path, "--socket", sockets.front(), "--mode", "lazy",
                "--busy-poll-us", "0"};
    }
    if (kind == "lazy" || kind == "prefetch") {
        std::vector<std::string> argv = {bin.ringpager, "serve", "--mem-file", mem_path};
        for (size_t i = 0; i < sockets.size(); i++) {
            if (kinds[i] != "lazy" && kinds[i] != "prefetch") throw Failure("cannot mix " + kinds[i] + " into ringpager");
            for (const std::string& a : {std::string("--socket"), sockets[i], std::string("--mode"), kinds[i]}) {
                argv.push_back(a);
            }
        }
        return argv;
    }
    if (sockets.size() != 1) throw Failure("rp-baseline serves one socket");
    std::vector<std::string> argv = {bin.baseline, "--socket", sockets.front(), "--mem-file", mem_path};
    if (kind == "baseline-eager") {
        argv.push_back("--copy-all-on-first-fault");
    } else if (kind == "ignore-remove") {
        argv.push_back("--ignore-remove");
    } else if (kind != "baseline") {
        throw Failure("unknown handler " + kind +
                      " (lazy, prefetch, lazy-no-busy-poll, baseline, baseline-eager, ignore-remove)");
    }
    return argv;
}

}  // namespace ringpager::realguest
