// Booting the guest and taking its snapshot, cached by key.
#include "realguest/snapshot.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <regex>

#include <nlohmann/json.hpp>

#include "ringpager/file_desc.hpp"

namespace ringpager::realguest {
namespace fs = std::filesystem;
namespace {

constexpr auto kBootDeadline = std::chrono::seconds(150);
constexpr auto kStepDeadline = std::chrono::seconds(30);

// Holds an exclusive flock on `path` for its lifetime.
class CacheLock {
public:
    explicit CacheLock(const std::string& path) : fd_(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644)) {
        if (!fd_.valid()) throw Failure("open " + path + ": " + std::strerror(errno));
        while (::flock(fd_.get(), LOCK_EX) != 0) {
            if (errno != EINTR) throw Failure("flock " + path + ": " + std::strerror(errno));
        }
    }

private:
    FileDesc fd_;
};

std::string shape_name(const VmShape& s) {
    return std::to_string(s.ram_mib) + "m-" + std::to_string(s.vcpus) + "cpu-" + std::to_string(s.file_mib) + "f-" +
           std::to_string(s.heap_mib) + "h-" + std::to_string(s.hb_ms) + "ms";
}

// Boots the guest with its RAM in `dir`/mem, waits until it is ready and settled, and
// migrates its device state into `dir`/state.
void take_snapshot(const GuestImage& image, const SnapshotOptions& o, const std::string& dir, nlohmann::json& manifest) {
    const std::string mem = dir + "/mem", state = dir + "/state", qmp_path = dir + "/qmp.sock";
    const auto started = Clock::now();
    auto qemu = Qemu::start(qemu_command(image, o.shape, mem, qmp_path, false), {}, dir + "/boot.log");
    const auto boot_deadline = started + kBootDeadline;
    qemu->on_serial = [&](const Line& line) {
        if (line.text.find("Kernel panic") != std::string::npos || line.text.find("rg: FATAL") != std::string::npos) {
            throw Failure("the guest failed while booting: " + line.text + "\n" + qemu->tail());
        }
    };
    const Line ready = qemu->wait_serial([](const std::string& l) { return l.rfind("rg: ready ", 0) == 0; },
                                         boot_deadline, "the guest's \"rg: ready\" line");
    static const std::regex ready_re("rg: ready gen=0 file=([0-9a-f]{16}) heap=([0-9a-f]{16}) .*balloon=(\\w+)");
    std::smatch m;
    if (!std::regex_search(ready.text, m, ready_re)) throw Failure("unexpected ready line: " + ready.text);
    if (m[3] != "bound") throw Failure("the guest's virtio_balloon driver is not bound: " + ready.text);
    manifest["file_checksum"] = m[1];
    manifest["heap_checksum"] = m[2];
    manifest["boot_seconds"] = std::chrono::duration<double>(ready.at - started).count();
    // Heartbeat lines are the clock: wait for the first one at least `settle` after ready
    // (and for two at least, so the heartbeat loop is known to run).
    unsigned beats = 0;
    qemu->wait_serial(
        [&](const std::string& l) {
            if (l.rfind("rg: hb ", 0) != 0) return false;
            return ++beats >= 2 && Clock::now() - ready.at >= o.settle;
        },
        boot_deadline, "the guest to settle after ready");
    const auto deadline = Clock::now() + kStepDeadline;
    qemu->connect_qmp(qmp_path, deadline);
    qemu->qmp("stop", {}, deadline);
    qemu->qmp("migrate-set-capabilities",
              {{"capabilities", {{{"capability", "x-ignore-shared"}, {"state", true}},
                                 {{"capability", "events"}, {"state", true}}}}},
              deadline);
    qemu->qmp("migrate", {{"uri", "exec:cat > " + state}}, deadline);
    const auto done = qemu->wait_event(
        [](const nlohmann::json& e) {
            return e["event"] == "MIGRATION" && (e["data"]["status"] == "completed" || e["data"]["status"] == "failed");
        },
        deadline, "the migration to finish");
    if (done["data"]["status"] != "completed") throw Failure("migration failed\n" + qemu->tail());
    qemu->qmp("quit", {}, deadline);
    const int status = qemu->wait_exit(deadline);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) throw Failure("QEMU did not exit cleanly\n" + qemu->tail());
    fs::remove(qmp_path);
}

}  // namespace

Snapshot prepare_snapshot(const SnapshotOptions& o) {
    fs::create_directories(o.cache_dir);
    CacheLock lock(o.cache_dir + "/lock");
    Snapshot snap;
    snap.image = prepare_guest_image(o.cache_dir, o.guest_program);
    snap.shape = o.shape;
    const std::string key = snap.image.identity + " " + qemu_version() + " " + shape_name(o.shape) + " settle " +
                            std::to_string(o.settle.count()) + "ms";
    snap.dir = o.cache_dir + "/snapshot-" + shape_name(o.shape);
    snap.mem_path = snap.dir + "/mem";
    snap.state_path = snap.dir + "/state";
    const std::string manifest_path = snap.dir + "/manifest.json";
    nlohmann::json manifest;
    if (fs::exists(manifest_path)) {
        manifest = nlohmann::json::parse(read_file(manifest_path), nullptr, false);
        snap.reused = !manifest.is_discarded() && manifest.value("key", "") == key && fs::exists(snap.mem_path) &&
                      fs::exists(snap.state_path);
    }
    if (!snap.reused) {
        // One snapshot per shape: a new key replaces the old one in place.
        fs::remove_all(snap.dir);
        const std::string tmp = snap.dir + ".tmp";
        fs::remove_all(tmp);
        fs::create_directories(tmp);
        manifest = nlohmann::json{{"key", key}, {"shape", o.shape.describe()}};
        take_snapshot(snap.image, o, tmp, manifest);
        write_file_atomic(tmp + "/manifest.json", manifest.dump(2) + "\n");
        fs::rename(tmp, snap.dir);
        // Initramfs images of earlier guest programs are no longer needed.
        for (const auto& entry : fs::directory_iterator(o.cache_dir)) {
            const std::string name = entry.path().filename().string();
            if (name.rfind("initramfs-", 0) == 0 && entry.path().string() != snap.image.initrd_path) {
                fs::remove(entry.path());
            }
        }
    }
    snap.file_checksum = manifest.value("file_checksum", "");
    snap.heap_checksum = manifest.value("heap_checksum", "");
    snap.boot_seconds = manifest.value("boot_seconds", 0.0);
    return snap;
}

}  // namespace ringpager::realguest
