// Pins the metrics endpoint: Prometheus text on GET /metrics whose figures
// match a restore's known counts, labelled by listener.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <map>
#include <sstream>

#include "common/engine_fixture.hpp"

using namespace ringpager;
using namespace ringpager::testing;

namespace {

constexpr uint64_t MiB = 1024 * 1024;

std::string http_get(int port, const std::string& path) {
    FileDesc s(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return "connect failed";
    const std::string request = "GET " + path + " HTTP/1.0\r\nHost: localhost\r\n\r\n";
    if (send(s.get(), request.data(), request.size(), 0) != static_cast<ssize_t>(request.size())) return "send failed";
    std::string response;
    char buf[4096];
    ssize_t n;
    while ((n = recv(s.get(), buf, sizeof buf, 0)) > 0) response.append(buf, static_cast<size_t>(n));
    return response;
}

// "name{labels} value" lines, keyed by everything before the value.
std::map<std::string, double> samples(const std::string& text) {
    std::map<std::string, double> out;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        if (line.empty() || line[0] == '#') continue;
        const size_t space = line.rfind(' ');
        if (space == std::string::npos) continue;
        out[line.substr(0, space)] = std::stod(line.substr(space + 1));
    }
    return out;
}

TEST(MetricsTest, ARestoresFiguresAreServedAsPrometheusText) {
    TempDir dir;
    const std::string mem = make_image(dir, "mem", 4 * MiB, 0.3, 2);
    auto image = sim::ExpectedImage::open(mem);
    ASSERT_TRUE(image.ok());
    RunningEngine e = start_engine(dir, mem, ServeMode::lazy, 2, std::chrono::seconds(30), nullptr,
                                   [](EngineConfig& c) { c.metrics_listen = "127.0.0.1:0"; });
    const int port = e.engine->metrics_port();
    ASSERT_GT(port, 0);
    {
        sim::Guest guest = make_guest(e.socket, {4 * MiB});
        ASSERT_TRUE(guest.connect_and_send().ok());
        guest.touch(sim::Pattern::random, 2, 1.0, 3);
        EXPECT_EQ(guest.verify(*image).mismatches, 0u);
    }
    ASSERT_TRUE(e.engine->wait_released(1, kWait));
    const EngineStats s = e.engine->stats();
    const std::string response = http_get(port, "/metrics");
    ASSERT_NE(response.find("200 OK"), std::string::npos) << response.substr(0, 200);
    const auto m = samples(response.substr(response.find("\r\n\r\n") + 4));
    const std::string l = "listener=\"" + e.socket + "\"";
    EXPECT_EQ(m.at("ringpager_faults_total{" + l + "}"), double(s.faults));
    EXPECT_EQ(m.at("ringpager_vms_active{" + l + "}"), 0.0);
    EXPECT_EQ(m.at("ringpager_vms_total{" + l + ",result=\"served\"}"), 1.0);
    EXPECT_EQ(m.at("ringpager_vms_total{" + l + ",result=\"failed\"}"), 0.0);
    EXPECT_EQ(m.at("ringpager_pages_installed_total{" + l + ",how=\"copy\"}") +
                  m.at("ringpager_pages_installed_total{" + l + ",how=\"prefetch\"}"),
              double(s.pages_copied));
    EXPECT_EQ(m.at("ringpager_pages_installed_total{" + l + ",how=\"zero\"}"), double(s.pages_zeroed));
    EXPECT_EQ(m.at("ringpager_bytes_read_total{" + l + "}"), double(s.bytes_read));
    // Every page of the image was faulted: every one was served and timed.
    const double served = m.at("ringpager_fault_service_seconds_count{" + l + "}");
    EXPECT_EQ(served, double(s.pages_copied + s.pages_zeroed));
    EXPECT_EQ(m.at("ringpager_fault_service_seconds_bucket{" + l + ",le=\"+Inf\"}"), served);
    EXPECT_GT(m.at("ringpager_fault_service_seconds_sum{" + l + "}"), 0.0);
    EXPECT_EQ(m.at("ringpager_vms_refused_total{reason=\"handshake\"}"), 0.0);
    EXPECT_GT(m.at("ringpager_memory_limit_bytes"), 0.0);
    // Lazy: no reactor paced prefetch.
    EXPECT_EQ(m.at("ringpager_prefetch_paused_reactors"), 0.0);
    EXPECT_EQ(m.at("ringpager_prefetch_pace_switches_total"), 0.0);
    EXPECT_EQ(m.at("ringpager_prefetch_pace_signal_reactors{signal=\"vm_run_delay\"}"), 0.0);
    EXPECT_EQ(m.at("ringpager_prefetch_pace_signal_reactors{signal=\"host_pressure\"}"), 0.0);
}

TEST(MetricsTest, AnAddressInUseIsAOneLineStartupError) {
    TempDir dir;
    const std::string mem = make_image(dir, "mem", 1 * MiB);
    RunningEngine first = start_engine(dir, mem, ServeMode::lazy, 1, std::chrono::seconds(30), nullptr,
                                       [](EngineConfig& c) { c.metrics_listen = "127.0.0.1:0"; });
    const int port = first.engine->metrics_port();
    std::string error;
    EngineConfig config;
    config.listeners.push_back({dir.file("second.sock"), open_raw_source(mem, error), ServeMode::lazy});
    config.metrics_listen = "127.0.0.1:" + std::to_string(port);
    auto second = Engine::start(std::move(config), error);
    EXPECT_FALSE(second);
    EXPECT_EQ(error.rfind("cannot serve metrics on 127.0.0.1:" + std::to_string(port) + ": ", 0), 0u) << error;
}

}  // namespace
