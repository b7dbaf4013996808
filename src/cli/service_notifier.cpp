#include "cli/service_notifier.hpp"

#include <systemd/sd-daemon.h>

#include <algorithm>
#include <cstdlib>

#include "common/log.hpp"

namespace ringpager {

ServiceNotifier::ServiceNotifier(const Engine& engine) : engine_(engine) {
    if (getenv("NOTIFY_SOCKET") == nullptr) return;  // not under a notify-type unit: nothing to tell
    uint64_t usec = 0;
    // > 0 only when WATCHDOG_USEC is set and WATCHDOG_PID (if set) is this process.
    if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) watchdog_interval_ = std::chrono::microseconds(usec / 2);
    last_status_ = status_line(engine_.stats(), false);
    // Engine::start returned: every listener listens (and the acceptor serves it).
    send("READY=1\nSTATUS=" + last_status_);
    thread_ = std::thread([this] { run(); });
}

ServiceNotifier::~ServiceNotifier() {
    {
        std::lock_guard lock(mu_);
        stop_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
}

void ServiceNotifier::stopping() {
    if (!thread_.joinable()) return;
    std::lock_guard lock(mu_);
    stopping_ = true;
    last_status_ = status_line(engine_.stats(), true);
    send("STOPPING=1\nSTATUS=" + last_status_);
}

std::string ServiceNotifier::status_line(const EngineStats& s, bool stopping) {
    return std::string(stopping ? "stopping: " : "serving: ") + std::to_string(s.vms_active) + " VMs active, " +
           std::to_string(s.vms_accepted) + " accepted, " + std::to_string(s.vms_refused) + " refused, " +
           std::to_string(s.vms_released) + " released, " + std::to_string(s.vms_failed) + " failed";
}

void ServiceNotifier::send(const std::string& message) {
    // Best effort: a manager that went away cannot be told anything.
    (void)sd_notify(0, message.c_str());
}

// Wakes every kStatusPeriod (or at the next watchdog ping if sooner): sends
// STATUS= when the counts moved, and WATCHDOG=1 when a ping is due and every
// reactor answered one through its mailbox (a stuck reactor stops the pings,
// and systemd restarts the service).
void ServiceNotifier::run() {
    const bool watchdog = watchdog_interval_.count() > 0;
    auto next_ping = std::chrono::steady_clock::now();  // the first ping at once
    std::unique_lock lock(mu_);
    while (!stop_) {
        auto wake_at = std::chrono::steady_clock::now() + kStatusPeriod;
        if (watchdog) wake_at = std::min(wake_at, next_ping);
        if (wake_.wait_until(lock, wake_at, [&] { return stop_; })) break;
        lock.unlock();
        const auto now = std::chrono::steady_clock::now();
        if (watchdog && now >= next_ping) {
            next_ping = now + watchdog_interval_;
            const auto answer_within = std::chrono::duration_cast<std::chrono::milliseconds>(watchdog_interval_);
            if (engine_.reactors_responsive(std::max(answer_within, std::chrono::milliseconds(1))))
                send("WATCHDOG=1");
            else
                RP_WARN("watchdog: a reactor did not answer within %lld ms; not telling systemd it is alive",
                        static_cast<long long>(answer_within.count()));
        }
        lock.lock();
        const std::string status = status_line(engine_.stats(), stopping_);
        if (status != last_status_) {
            last_status_ = status;
            send("STATUS=" + status);
        }
    }
}

}  // namespace ringpager
