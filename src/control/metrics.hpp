// Metrics: Prometheus text on GET /metrics (--metrics-listen ADDR:PORT),
// served by prometheus-cpp's exposer on a thread of its own. Every figure is
// read from the engine's StatsTable at scrape time: the fault path writes
// its relaxed counters as always and pays nothing for metrics (no lock, no
// syscall). Labelled by listener (its socket path), never by VM.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/budgets.hpp"
#include "engine/stats.hpp"

namespace ringpager {

class MetricsServer {
public:
    // Listens on `address` ("127.0.0.1:9464"; port 0: any free one). The
    // stats, budgets and names must outlive the server.
    static std::unique_ptr<MetricsServer> start(const std::string& address, const StatsTable& stats,
                                                const Budgets& budgets, std::vector<std::string> listener_names,
                                                std::string& error);
    virtual ~MetricsServer() = default;
    virtual int port() const = 0;  // the port it listens on
};

}  // namespace ringpager
