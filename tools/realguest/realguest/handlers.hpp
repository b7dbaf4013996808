// The handlers a real guest is restored through, and where their binaries are.
#pragma once

#include <string>
#include <vector>

namespace ringpager::realguest {

struct Binaries {
    std::string ringpager;  // src/cli/ringpager
    std::string baseline;   // tools/baseline/rp-baseline
    std::string guest;      // tools/realguest/rg-guest (static)
    std::string shim;       // tools/realguest/librp-fcshim.so
    std::string cache_dir;  // <build>/realguest-cache
    // Environment variables RP_RINGPAGER, RP_BASELINE, RP_GUEST, RP_SHIM and
    // RP_REALGUEST_CACHE win; otherwise the build tree this program was built in.
    static Binaries find();
};

// The handler kinds: "lazy", "prefetch" (ringpager serve), "lazy-no-busy-poll" (lazy with
// --busy-poll-us 0), "baseline" (rp-baseline, one
// UFFDIO_COPY per fault), "baseline-eager" (--copy-all-on-first-fault) and
// "ignore-remove" (rp-baseline --ignore-remove: a known-wrong handler).
const std::vector<std::string>& handler_kinds();
bool handler_becomes_resident(const std::string& kind);

// argv of one handler process serving `mem_path` on every socket in `sockets`, each with
// its own kind (kinds of one process: all ringpager modes, or one rp-baseline kind).
std::vector<std::string> handler_argv(const Binaries& bin, const std::vector<std::string>& sockets,
                                      const std::vector<std::string>& kinds, const std::string& mem_path);

}  // namespace ringpager::realguest
