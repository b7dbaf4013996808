// Restoring a real guest through a handler and checking it afterwards.
#include "realguest/restore.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <regex>

namespace ringpager::realguest {
namespace fs = std::filesystem;
namespace {

constexpr auto kStartDeadline = std::chrono::seconds(30);
constexpr auto kStepDeadline = std::chrono::seconds(60);
// Free page reporting runs two seconds after memory is freed; this bounds the wait for it.
constexpr auto kReportingDeadline = std::chrono::seconds(20);

// A failed check the guest made itself (as opposed to the harness failing to run a step).
struct Caught : Failure {
    Caught(std::string check, const std::string& message) : Failure(message), check(std::move(check)) {}
    std::string check;
};

// The shim's counters (RP_SHIM_STATS), read at any moment.
class ShimStats {
public:
    struct Values {
        uint64_t handshake_ns = 0, resident_ns = 0, discards = 0, discard_bytes = 0, large_discards = 0;
    };

    explicit ShimStats(std::string path) : path_(std::move(path)) {}
    ~ShimStats() {
        if (map_ != nullptr) ::munmap(map_, 4096);
    }
    ShimStats(const ShimStats&) = delete;
    ShimStats& operator=(const ShimStats&) = delete;

    Values read() {
        if (map_ == nullptr) {
            const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
            if (fd < 0) throw Failure("the shim wrote no counters to " + path_ + ": " + std::strerror(errno));
            void* p = ::mmap(nullptr, 4096, PROT_READ, MAP_SHARED, fd, 0);
            ::close(fd);
            if (p == MAP_FAILED) throw Failure("mmap " + path_ + ": " + std::strerror(errno));
            map_ = static_cast<uint64_t*>(p);
            if (std::memcmp(map_, "RPSHIM01", 8) != 0) throw Failure("bad shim counters file " + path_);
        }
        // Field order of struct shim_stats in shim/fc_shim.c.
        auto at = [&](int i) { return __atomic_load_n(&map_[i], __ATOMIC_ACQUIRE); };
        return Values{at(1), at(2), at(3), at(4), at(5)};
    }

private:
    std::string path_;
    uint64_t* map_ = nullptr;
};

// Checks every console line as it arrives: heartbeats carry the checksums the guest should
// have, command answers report no bad pages, and the kernel never panics.
class GuestChecker {
public:
    explicit GuestChecker(const Snapshot& s) : gen_("0"), file_(s.file_checksum), heap_(s.heap_checksum) {}

    void on_line(const std::string& text) {
        static const std::regex hb_re("^rg: hb (\\d+) gen=(\\w+) file=(\\w+) heap=(\\w+)$");
        static const std::regex wrote_re("^rg: wrote gen=(\\d+) file=(\\w+) heap=(\\w+) bad_pages=(\\d+)$");
        for (const char* bad : {"Kernel panic", "BUG:", "Oops", "general protection fault", "Call Trace"}) {
            if (text.find(bad) != std::string::npos) throw Caught("guest kernel", "the guest kernel failed: " + text);
        }
        if (text.rfind("rg: FATAL", 0) == 0) throw Caught("guest program", "the guest program failed: " + text);
        std::smatch m;
        if (std::regex_match(text, m, hb_re)) {
            heartbeats_++;
            if (m[2] != gen_ || m[3] != file_ || m[4] != heap_) {
                throw Caught("heartbeat checksum", "heartbeat with the wrong data: \"" + text + "\", expected gen=" +
                                                       gen_ + " file=" + file_ + " heap=" + heap_);
            }
        } else if (text.rfind("rg: freed ", 0) == 0) {
            gen_ = file_ = heap_ = "none";
        } else if (std::regex_match(text, m, wrote_re)) {
            if (m[4] != "0") throw Caught("write verify", "data written after the restore read back wrong: " + text);
            gen_ = m[1];
            file_ = m[2];
            heap_ = m[3];
        }
    }
    unsigned heartbeats() const { return heartbeats_; }

private:
    std::string gen_, file_, heap_;
    unsigned heartbeats_ = 0;
};

bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

uint64_t field(const std::string& line, const std::string& key) {
    const size_t at = line.find(" " + key + "=");
    if (at == std::string::npos) throw Failure("no " + key + "= in \"" + line + "\"");
    return std::stoull(line.substr(at + key.size() + 2));
}

class Restore {
public:
    Restore(const Snapshot& s, const RestoreOptions& o, RestoreReport& r)
        : snap_(s), o_(o), r_(r), checker_(s), stats_(o.work_dir + "/shim-stats") {}

    void run() {
        start();
        if (o_.expect_resident) wait_resident();
        stats_at_checks_ = stats_.read();
        r_.removes_before_checks = stats_at_checks_.discards;
        if (r_.resident_ms < 0 && stats_at_checks_.resident_ns != 0) r_.resident_ms = ms_since_start(stats_at_checks_.resident_ns);
        if (o_.full_checks) {
            free_data();
            balloon();
            write_and_scan();
        } else {
            // One more heartbeat: the guest runs on after the first.
            wait_heartbeats(checker_.heartbeats() + 1);
        }
        stop();
    }

private:
    double ms_since_start(uint64_t ns) const { return ms_between(started_, from_monotonic_ns(ns)); }

    void start() {
        fs::create_directories(o_.work_dir);
        const std::string ram = o_.work_dir + "/ram-placeholder", qmp = o_.work_dir + "/qmp.sock";
        fs::remove(ram);
        fs::remove(qmp);
        fs::remove(o_.work_dir + "/shim-stats");
        // The placeholder file only gives QEMU a shared RAM block (x-ignore-shared skips it);
        // the shim maps anonymous memory over it, and QEMU's discards punch holes into it.
        const std::vector<std::string> env = {"LD_PRELOAD=" + o_.shim_path, "RP_SHIM_RAM_PATH=" + ram,
                                              "RP_SHIM_SOCKET=" + o_.socket_path,
                                              "RP_SHIM_STATS=" + o_.work_dir + "/shim-stats"};
        started_ = Clock::now();
        q_ = Qemu::start(qemu_command(snap_.image, snap_.shape, ram, qmp, true), env, o_.work_dir + "/qemu.log");
        q_->on_serial = [this](const Line& l) { checker_.on_line(l.text); };
        auto deadline = Clock::now() + kStartDeadline;
        const Line hs = q_->wait_stderr([](const std::string& l) { return starts_with(l, "rp-shim: handshake "); },
                                        deadline, "the shim's handshake");
        r_.handshake_ms = ms_since_start(field(hs.text, "t"));
        r_.ram_pages = field(hs.text, "size") / 4096;
        q_->connect_qmp(qmp, deadline);
        q_->qmp("migrate-set-capabilities",
                {{"capabilities", {{{"capability", "x-ignore-shared"}, {"state", true}},
                                   {{"capability", "events"}, {"state", true}}}}},
                deadline);
        q_->qmp("migrate-incoming", {{"uri", "exec:cat " + snap_.state_path}}, deadline);
        const auto done = q_->wait_event(
            [](const nlohmann::json& e) {
                return e["event"] == "MIGRATION" &&
                       (e["data"]["status"] == "completed" || e["data"]["status"] == "failed");
            },
            deadline, "the incoming migration");
        if (done["data"]["status"] != "completed") throw Failure("incoming migration failed\n" + q_->tail());
        r_.migrated_ms = ms_between(started_, Clock::now());
        q_->qmp("cont", {}, deadline);
        deadline = Clock::now() + kStepDeadline;
        const Line hb = q_->wait_serial([](const std::string& l) { return starts_with(l, "rg: hb "); }, deadline,
                                        "the first heartbeat after the restore");
        r_.first_heartbeat_ms = ms_between(started_, hb.at);
    }

    void wait_resident() {
        const Line l = q_->wait_stderr([](const std::string& s) { return starts_with(s, "rp-shim: resident "); },
                                       Clock::now() + kStepDeadline, "every page to be resident");
        r_.resident_ms = ms_since_start(field(l.text, "t"));
    }

    void wait_heartbeats(unsigned count) {
        q_->wait_serial([&](const std::string&) { return checker_.heartbeats() >= count; },
                        Clock::now() + kStepDeadline, "heartbeat " + std::to_string(count));
    }

    // Waits for a free page reporting discard (64 KiB or more) later than discard `after`.
    void wait_reporting(uint64_t after, const std::string& why) {
        q_->wait_stderr(
            [&](const std::string& l) { return starts_with(l, "rp-shim: discard ") && field(l, "count") > after; },
            Clock::now() + kReportingDeadline, "free page reporting to give back " + why);
    }

    void free_data() {
        const auto before = stats_.read();
        q_->send_serial("free");
        q_->wait_serial([](const std::string& l) { return starts_with(l, "rg: freed "); }, Clock::now() + kStepDeadline,
                        "the guest to free its data");
        wait_reporting(before.discards, "the freed data");
        r_.removes_after_free = stats_.read().discards - before.discards;
    }

    void set_balloon(uint64_t guest_bytes) {
        const auto deadline = Clock::now() + kStepDeadline;
        q_->qmp("balloon", {{"value", guest_bytes}}, deadline);
        // BALLOON_CHANGE is rate limited, but its last value is always delivered.
        q_->wait_event(
            [&](const nlohmann::json& e) {
                return e["event"] == "BALLOON_CHANGE" && e["data"]["actual"].get<uint64_t>() == guest_bytes;
            },
            deadline, "the balloon to reach " + std::to_string(guest_bytes >> 20) + " MiB");
    }

    void balloon() {
        const uint64_t ram_bytes = uint64_t{snap_.shape.ram_mib} << 20;
        const auto before = stats_.read();
        ShimStats::Values before_last_deflate;
        for (unsigned i = 0; i < o_.balloon_cycles; i++) {
            set_balloon(ram_bytes / 2);
            before_last_deflate = stats_.read();
            set_balloon(ram_bytes);
        }
        // Deflating gave the guest back half its RAM; it reports those pages free again, two
        // seconds after they were freed: possibly before QEMU's rate-limited BALLOON_CHANGE
        // told us the deflation was complete.
        wait_reporting(before_last_deflate.discards, "the deflated memory");
        const auto reported = stats_.read();
        const uint64_t large = reported.large_discards - before.large_discards;
        r_.removes_balloon = reported.discards - before.discards - large;
        r_.removes_balloon_reporting = large;
    }

    void write_and_scan() {
        q_->send_serial("write 1");
        q_->wait_serial([](const std::string& l) { return starts_with(l, "rg: wrote "); }, Clock::now() + kStepDeadline,
                        "the guest to write new data");
        wait_heartbeats(checker_.heartbeats() + 1);  // with the new data's checksums
        q_->send_serial("scan");
        const Line scan = q_->wait_serial([](const std::string& l) { return starts_with(l, "rg: scan "); },
                                          Clock::now() + kStepDeadline, "the guest's scan of fresh memory");
        r_.scan = scan.text;
        const uint64_t pages = field(scan.text, "pages"), nonzero = field(scan.text, "nonzero");
        if (nonzero != 0) {
            throw Caught("scan", std::to_string(nonzero) + " freshly allocated guest pages were not zero (" +
                                     std::to_string(field(scan.text, "stale")) +
                                     " of them hold the snapshot's old data): " + scan.text);
        }
        // The scan only means something if it took most of the memory the guest gave back.
        if (pages < r_.ram_pages / 3) throw Failure("the scan took only " + std::to_string(pages) + " pages: " + scan.text);
    }

    void stop() {
        const auto deadline = Clock::now() + kStepDeadline;
        q_->qmp("quit", {}, deadline);
        const int status = q_->wait_exit(deadline);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) throw Failure("QEMU did not exit cleanly\n" + q_->tail());
        for (const Line& l : q_->stderr_history()) {
            if (starts_with(l.text, "rp-shim: exit ")) r_.resident_pages_at_exit = field(l.text, "resident_pages");
        }
        record_totals();
    }

public:
    void record_totals() {
        try {
            const auto end = stats_.read();
            r_.removes_total = end.discards;
            r_.removed_bytes_total = end.discard_bytes;
        } catch (const Failure&) {
            // No counters: the restore failed before the shim's handshake.
        }
    }

private:
    const Snapshot& snap_;
    const RestoreOptions& o_;
    RestoreReport& r_;
    GuestChecker checker_;
    ShimStats stats_;
    ShimStats::Values stats_at_checks_;
    Clock::time_point started_;
    std::unique_ptr<Qemu> q_;
};

}  // namespace

RestoreReport restore_and_check(const Snapshot& snapshot, const RestoreOptions& options) {
    RestoreReport report;
    report.name = options.name;
    Restore restore(snapshot, options, report);
    try {
        restore.run();
    } catch (const Caught& c) {
        report.caught_by = c.check;
        report.failure = c.what();
        restore.record_totals();
    } catch (const std::exception& e) {
        report.failure = e.what();
        restore.record_totals();
    }
    return report;
}

}  // namespace ringpager::realguest
