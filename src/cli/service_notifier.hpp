// ServiceNotifier: what `ringpager serve` tells systemd (Type=notify) over
// NOTIFY_SOCKET: READY=1 once every listener listens, STATUS= with the VM
// counts when they change, WATCHDOG=1 while the reactors answer, and
// STOPPING=1 when a signal starts the graceful stop. Without NOTIFY_SOCKET
// every call does nothing. It runs on a thread of its own and reads only the
// engine's summed counters (a few atomic loads), never the fault path.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include "ringpager/engine.hpp"

namespace ringpager {

class ServiceNotifier {
public:
    // How often the VM counts are looked at for a STATUS= change.
    static constexpr std::chrono::milliseconds kStatusPeriod{500};

    // `engine` must outlive the notifier. Sends READY=1 and the first
    // STATUS=, and starts the thread (STATUS= updates; WATCHDOG=1 every half
    // WATCHDOG_USEC when WATCHDOG_USEC is set and WATCHDOG_PID is ours).
    explicit ServiceNotifier(const Engine& engine);
    ~ServiceNotifier();  // stops the thread
    ServiceNotifier(const ServiceNotifier&) = delete;
    ServiceNotifier& operator=(const ServiceNotifier&) = delete;

    // STOPPING=1 and a "stopping: ..." STATUS=. Watchdog pings go on while
    // the engine drains (systemd's TimeoutStopSec bounds that).
    void stopping();

    // The STATUS= text for these counts (pinned by the tests).
    static std::string status_line(const EngineStats& stats, bool stopping);

private:
    void run();
    static void send(const std::string& message);

    const Engine& engine_;
    std::chrono::microseconds watchdog_interval_{0};  // half WATCHDOG_USEC; 0: no watchdog
    std::mutex mu_;
    std::condition_variable wake_;
    bool stop_ = false;          // guarded by mu_
    bool stopping_ = false;      // guarded by mu_: STATUS= keeps the stopping text
    std::string last_status_;    // guarded by mu_
    std::thread thread_;
};

}  // namespace ringpager
