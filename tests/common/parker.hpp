// Parks a thread (a reactor inside a test hook) until the test releases it:
// the barrier the race tests use instead of sleeps.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>

namespace ringpager::testing {

class Parker {
public:
    // Called on the thread to park: returns once release() was called.
    void park() {
        std::unique_lock lock(mu_);
        parked_ = true;
        cv_.notify_all();
        cv_.wait(lock, [&] { return released_; });
    }
    bool wait_parked(std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
        std::unique_lock lock(mu_);
        return cv_.wait_for(lock, timeout, [&] { return parked_; });
    }
    void release() {
        std::lock_guard lock(mu_);
        released_ = true;
        cv_.notify_all();
    }

private:
    std::mutex mu_;
    std::condition_variable cv_;
    bool parked_ = false;
    bool released_ = false;
};

}  // namespace ringpager::testing
