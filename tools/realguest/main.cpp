// rp-realguest: a real Linux guest restored through ringpager, with QEMU standing in for
// Firecracker (docs/realguest.md).
//   rp-realguest snapshot [--ram-mib N ...]   build (or find in the cache) a snapshot; prints its memory file
//   rp-realguest demo [--rounds N ...]        restore it through each handler and compare
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <sstream>

#include <CLI/CLI.hpp>

#include "realguest/session.hpp"
#include "realguest/snapshot.hpp"

namespace rg = ringpager::realguest;

namespace {

std::vector<std::string> split_list(const std::string& text) {
    std::vector<std::string> out;
    std::stringstream s(text);
    std::string item;
    while (std::getline(s, item, ',')) {
        if (!item.empty()) out.push_back(item);
    }
    return out;
}

std::string ms_text(double ms) {
    if (ms < 0) return "-";
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.0f ms", ms);
    return buf;
}

// "median ms", plus "(min–max)" over several rounds; "-" when no round has a value.
std::string spread_text(std::vector<double> v) {
    v.erase(std::remove_if(v.begin(), v.end(), [](double x) { return x < 0; }), v.end());
    if (v.empty()) return "-";
    std::sort(v.begin(), v.end());
    const double mid = v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
    char buf[64];
    if (v.size() == 1) {
        std::snprintf(buf, sizeof buf, "%.0f ms", mid);
    } else {
        std::snprintf(buf, sizeof buf, "%.0f (%.0f-%.0f)", mid, v.front(), v.back());
    }
    return buf;
}

double median(std::vector<double> v) {
    v.erase(std::remove_if(v.begin(), v.end(), [](double x) { return x < 0; }), v.end());
    if (v.empty()) return -1;
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

rg::Snapshot snapshot_for(const rg::Binaries& bin, const rg::VmShape& shape) {
    rg::SnapshotOptions o;
    o.cache_dir = bin.cache_dir;
    o.guest_program = bin.guest;
    o.shape = shape;
    std::fprintf(stderr, "rp-realguest: preparing the snapshot (%s) in %s ...\n", shape.describe().c_str(),
                 bin.cache_dir.c_str());
    rg::Snapshot s = rg::prepare_snapshot(o);
    std::fprintf(stderr, "rp-realguest: snapshot %s (%s; guest booted to ready in %.1f s under TCG)\n", s.dir.c_str(),
                 s.reused ? "from the cache" : "built now", s.boot_seconds);
    return s;
}

int cmd_snapshot(const rg::VmShape& shape) {
    const rg::Binaries bin = rg::Binaries::find();
    const rg::Snapshot s = snapshot_for(bin, shape);
    std::printf("memory file: %s\n", s.mem_path.c_str());
    std::printf("device state: %s\n", s.state_path.c_str());
    std::printf("kernel: %s\n", s.image.kernel_package.c_str());
    std::printf("data checksums: file=%s heap=%s\n", s.file_checksum.c_str(), s.heap_checksum.c_str());
    std::printf("benchmark it: rp-bench --mem-file %s   or   restore_bench --mem-file %s\n", s.mem_path.c_str(),
                s.mem_path.c_str());
    return 0;
}

struct DemoOptions {
    std::string handlers = "lazy,prefetch,baseline,baseline-eager,ignore-remove";
    unsigned rounds = 1;
    bool quick = false;
    bool keep = false;
};

std::string outcome(const std::string& kind, const rg::SessionResult& s) {
    const rg::RestoreReport& r = s.vms.front();
    if (!s.failure.empty() && r.passed()) return "FAILED: " + s.failure;
    if (r.passed()) return kind == "ignore-remove" ? "NOT CAUGHT: every check passed" : "ok";
    const std::string first_line = r.failure.substr(0, r.failure.find('\n'));
    if (!r.caught_by.empty()) return (kind == "ignore-remove" ? "caught by " : "FAILED, ") + r.caught_by + ": " + first_line;
    return "FAILED: " + first_line;
}

int cmd_demo(const DemoOptions& d, const rg::VmShape& shape) {
    const rg::Binaries bin = rg::Binaries::find();
    const rg::Snapshot snap = snapshot_for(bin, shape);
    const std::vector<std::string> kinds = split_list(d.handlers);
    char tmpl[] = "/tmp/rp-realguest-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) throw rg::Failure("mkdtemp failed");
    const std::string work = tmpl;
    std::map<std::string, std::vector<rg::SessionResult>> runs;
    for (unsigned round = 0; round < d.rounds; round++) {
        std::vector<std::string> order = kinds;
        if (round % 2 == 1) std::reverse(order.begin(), order.end());  // load drift hits every handler alike
        for (const std::string& kind : order) {
            std::fprintf(stderr, "rp-realguest: round %u: restoring through %s ...\n", round + 1, kind.c_str());
            runs[kind].push_back(rg::run_session(snap, bin, {kind}, work + "/r" + std::to_string(round) + "-" + kind,
                                                 !d.quick));
        }
    }
    std::printf("\nreal guest: %s, %s; QEMU TCG stands in for Firecracker; %u round(s)%s\n",
                snap.image.kernel_package.c_str(), shape.describe().c_str(), d.rounds,
                d.quick ? ", restore only" : ", full checks (free, balloon x2, write, scan)");
    std::printf("ms from the start of the restoring QEMU process%s\n\n",
                d.rounds > 1 ? "; median (min-max) over rounds" : "");
    std::printf("%-18s %10s %18s %18s %22s  %s\n", "handler", "handshake", "first heartbeat", "fully resident",
                "REMOVEs report/balloon", "checks");
    bool ok = true;
    for (const std::string& kind : kinds) {
        std::vector<double> hs, hb, res;
        for (const rg::SessionResult& s : runs[kind]) {
            hs.push_back(s.vms.front().handshake_ms);
            hb.push_back(s.vms.front().first_heartbeat_ms);
            res.push_back(s.vms.front().resident_ms);
        }
        const rg::SessionResult& last = runs[kind].back();
        const rg::RestoreReport& r = last.vms.front();
        const uint64_t reporting = r.removes_before_checks + r.removes_after_free + r.removes_balloon_reporting;
        char removes[48];
        std::snprintf(removes, sizeof removes, "%llu / %llu", static_cast<unsigned long long>(reporting),
                      static_cast<unsigned long long>(r.removes_balloon));
        const std::string resident = median(res) >= 0 ? spread_text(res) : std::string("never");
        const std::string result = outcome(kind, last);
        std::printf("%-18s %10s %18s %18s %22s  %s\n", kind.c_str(), ms_text(median(hs)).c_str(),
                    spread_text(hb).c_str(), resident.c_str(), removes, result.c_str());
        const bool expected = kind == "ignore-remove" ? result.rfind("caught by", 0) == 0 : result == "ok";
        ok = ok && expected;
        if (!expected) {
            std::printf("    %s\n    handler: %s\n", (r.failure.empty() ? last.failure : r.failure).c_str(),
                        last.handler_exit.c_str());
        }
    }
    std::printf("\n\"never\": a lazy handler installs only what the guest touches. REMOVEs are the guest's\n"
                "discards (madvise) the handler received: free page reporting / 4 KiB balloon inflation.\n");
    if (ok && !d.keep) {
        std::filesystem::remove_all(work);
    } else {
        std::printf("work directory (logs): %s\n", work.c_str());
    }
    return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"rp-realguest: a real Linux guest (Debian kernel, busybox) snapshotted and restored under QEMU TCG "
                 "through ringpager; QEMU plays Firecracker's part through an LD_PRELOAD shim"};
    app.require_subcommand(1);
    rg::VmShape shape;
    auto add_shape = [&](CLI::App* sub) {
        sub->add_option("--ram-mib", shape.ram_mib, "guest RAM in MiB (256)")->check(CLI::Range(128u, 16384u));
        sub->add_option("--vcpus", shape.vcpus, "vCPUs (2)")->check(CLI::Range(1u, 8u));
        sub->add_option("--file-mib", shape.file_mib, "MiB the guest writes to a tmpfs file, page cache (16)");
        sub->add_option("--heap-mib", shape.heap_mib, "MiB the guest writes to its heap (16)");
    };
    CLI::App* snapshot = app.add_subcommand("snapshot", "build (or reuse) a snapshot and print its memory file");
    add_shape(snapshot);
    DemoOptions demo_options;
    CLI::App* demo = app.add_subcommand("demo", "restore the snapshot through each handler; print the comparison");
    add_shape(demo);
    demo->add_option("--handlers", demo_options.handlers, "comma-separated: " + demo_options.handlers);
    demo->add_option("--rounds", demo_options.rounds, "rounds, handler order alternating (1)")->check(CLI::Range(1u, 20u));
    demo->add_flag("--quick", demo_options.quick, "restore and one heartbeat only, no balloon or scan checks");
    demo->add_flag("--keep", demo_options.keep, "keep the work directory (logs) after a successful run");
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? 0 : 2;
    }
    if (shape.file_mib + shape.heap_mib + 64 > shape.ram_mib) {
        std::fprintf(stderr, "rp-realguest: --file-mib + --heap-mib must leave 64 MiB of the guest's RAM free\n");
        return 2;
    }
    try {
        return snapshot->parsed() ? cmd_snapshot(shape) : cmd_demo(demo_options, shape);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "rp-realguest: %s\n", e.what());
        return 1;
    }
}
