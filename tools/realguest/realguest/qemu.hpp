// One QEMU process: its command line, its serial console (stdin/stdout), its stderr (QEMU's
// and the shim's messages) and its QMP socket, all read by one poll loop with deadlines.
#pragma once

#include <sys/types.h>

#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "realguest/common.hpp"
#include "realguest/guest_image.hpp"
#include "ringpager/file_desc.hpp"

namespace ringpager::realguest {

// The VM every snapshot and restore of one kind uses; restore must match the snapshot.
struct VmShape {
    unsigned ram_mib = 256;
    unsigned vcpus = 2;
    unsigned file_mib = 16;  // rg-guest's tmpfs file
    unsigned heap_mib = 16;  // rg-guest's anonymous heap
    unsigned hb_ms = 200;    // heartbeat interval
    std::string describe() const;
};

// qemu-system-x86_64 under TCG with RAM from memory-backend-file,share=on at `ram_path`,
// virtio-balloon-pci with free page reporting, the serial console on stdio and QMP on
// `qmp_path`. `incoming`: -incoming defer -S (a restore).
std::vector<std::string> qemu_command(const GuestImage& image, const VmShape& shape, const std::string& ram_path,
                                      const std::string& qmp_path, bool incoming);

// The installed QEMU's version line; throws a Failure telling how to install it if absent.
std::string qemu_version();

struct Line {
    Clock::time_point at;
    std::string text;
};

class Qemu {
public:
    // Starts argv with `env` ("NAME=value") added to the environment. Every serial and
    // stderr line is also appended to `log_path` ("serial: ..." / "stderr: ...").
    static std::unique_ptr<Qemu> start(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                                       const std::string& log_path);
    ~Qemu();  // SIGKILL and reap if still running
    Qemu(const Qemu&) = delete;
    Qemu& operator=(const Qemu&) = delete;

    // Called for every serial line as it arrives, before any wait sees it (checks that must
    // see every line: heartbeats, kernel panics). May throw Failure.
    std::function<void(const Line&)> on_serial;

    // Connects to the QMP socket (which QEMU creates before it creates guest RAM) and
    // negotiates capabilities.
    void connect_qmp(const std::string& path, Clock::time_point deadline);
    // Runs one QMP command; its "return" value, or Failure with QMP's error.
    nlohmann::json qmp(const std::string& command, const nlohmann::json& arguments, Clock::time_point deadline);
    // The first QMP event (oldest first, consumed) for which `match` holds.
    nlohmann::json wait_event(const std::function<bool(const nlohmann::json&)>& match, Clock::time_point deadline,
                              const std::string& what);
    // The first unconsumed serial / stderr line for which `match` holds; earlier lines are
    // consumed. Failure (with the console's tail) at the deadline or if QEMU exits.
    Line wait_serial(const std::function<bool(const std::string&)>& match, Clock::time_point deadline,
                     const std::string& what);
    Line wait_stderr(const std::function<bool(const std::string&)>& match, Clock::time_point deadline,
                     const std::string& what);
    void send_serial(const std::string& line);
    // Waits for QEMU to exit; its wait status. Failure at the deadline (QEMU is then killed).
    int wait_exit(Clock::time_point deadline);
    bool exited() const { return exited_; }

    // The last serial and stderr lines, for failure messages.
    std::string tail() const;
    const std::vector<Line>& stderr_history() const { return stderr_all_; }

private:
    Qemu() = default;
    // One poll round over serial, stderr, QMP and the pidfd; returns at the deadline.
    void pump(Clock::time_point deadline);
    void take_lines(int fd, std::string& partial, bool is_serial);
    void reap();

    pid_t pid_ = -1;
    bool exited_ = false;
    int wait_status_ = 0;
    FileDesc pidfd_, stdin_fd_, stdout_fd_, stderr_fd_, qmp_, log_;
    std::string serial_partial_, stderr_partial_, qmp_partial_;
    std::deque<Line> serial_, stderr_;  // unconsumed lines
    std::deque<nlohmann::json> events_, replies_;
    std::vector<Line> stderr_all_;
    std::deque<std::string> serial_recent_;
    uint64_t next_qmp_id_ = 1;
};

}  // namespace ringpager::realguest
