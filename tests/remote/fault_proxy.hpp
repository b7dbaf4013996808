// FaultProxy: a loopback TCP proxy in front of the test object store that
// misbehaves on demand, so the client's retries and error lines can be tested
// against real failures: delayed answers, reset connections, answers cut short
// or with one byte flipped, a 503, a listener that goes away and comes back.
// It runs in-process: one accept thread and one thread per connection.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace rgwtest {

class FaultProxy {
public:
    enum class Mode {
        pass,       // forward both ways
        delay,      // hold the answer `amount` ms before its first byte
        reset,      // read the request's first bytes, then reset the connection (RST)
        truncate,   // forward the first answer's head and `amount` bytes of its body, then close
        corrupt,    // flip one bit of body byte `amount` of the first answer
        fail_503,   // answer the request with 503 SlowDown and close
    };

    // Listens on 127.0.0.1 (a port the kernel picks) and forwards to 127.0.0.1:upstream_port.
    static std::unique_ptr<FaultProxy> start(uint16_t upstream_port, std::string& error);
    ~FaultProxy();
    FaultProxy(const FaultProxy&) = delete;
    FaultProxy& operator=(const FaultProxy&) = delete;

    uint16_t port() const { return port_; }
    std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }

    // The next `connections` new connections (every one when < 0) get `mode`;
    // later ones pass. Connections open now are cut, so a client's kept-alive
    // connection cannot dodge the fault.
    void set(Mode mode, int connections = -1, uint64_t amount = 0);
    // Closes the listener (connects are refused) and cuts every connection.
    void go_away();
    // Listens again on the same port. False if the port was taken meanwhile.
    bool come_back();

    uint64_t connections_accepted() const { return accepted_.load(); }
    uint64_t faults_applied() const { return faults_.load(); }

private:
    struct Plan {
        Mode mode = Mode::pass;
        uint64_t amount = 0;
    };
    FaultProxy() = default;
    bool listen_on(uint16_t port, std::string& error);
    void accept_loop();
    void serve(int client, Plan plan);
    Plan next_plan();
    void cut_connections();

    uint16_t port_ = 0;
    uint16_t upstream_port_ = 0;
    int stop_fd_ = -1;   // eventfd: the proxy is shutting down
    std::atomic<bool> stopping_{false};
    std::atomic<uint64_t> accepted_{0};
    std::atomic<uint64_t> faults_{0};

    std::mutex mutex_;   // guards everything below
    int listen_fd_ = -1;
    int wake_fd_ = -1;            // eventfd: the listener changed
    Mode mode_ = Mode::pass;
    int remaining_ = 0;
    uint64_t amount_ = 0;
    std::vector<int> open_fds_;   // client and upstream sockets of live connections
    std::vector<std::thread> threads_;
    std::thread acceptor_;
};

}  // namespace rgwtest
