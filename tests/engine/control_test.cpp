// Pins the control API (serve --control PATH): list, vm, stats, prefetch,
// release and drain act on a running engine and answer with the figures of
// the VMs it serves; a malformed request gets one line and its connection
// closed, and the engine goes on.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/engine_fixture.hpp"
#include "common/socket.hpp"

using namespace ringpager;
using namespace ringpager::testing;
using nlohmann::json;

namespace {

constexpr uint64_t MiB = 1024 * 1024;

class ControlTest : public ::testing::Test {
protected:
    void SetUp() override {
        mem = make_image(dir, "mem", 4 * MiB, 0.3, 4);
        image = std::make_unique<sim::ExpectedImage>(std::move(sim::ExpectedImage::open(mem).value()));
        control = dir.file("control.sock");
        e = start_engine(dir, mem, ServeMode::lazy, 2, std::chrono::seconds(30), nullptr,
                         [&](EngineConfig& c) { c.control_path = control; });
        ASSERT_TRUE(e.engine);
        conn = connect_to(control);
    }
    json request(const std::string& line) {
        const std::string response = ask(conn.get(), line);
        json doc = json::parse(response, nullptr, false);
        EXPECT_FALSE(doc.is_discarded()) << response;
        return doc;
    }

    TempDir dir;
    std::string mem, control;
    std::unique_ptr<sim::ExpectedImage> image;
    RunningEngine e;
    FileDesc conn;
};

// record-ws names a VM; one that is not recording (no serve --record-ws)
// gets one line saying so, and a VM that is not served another.
TEST_F(ControlTest, RecordWsOnAVmThatIsNotRecordingSaysSo) {
    sim::Guest guest = make_guest(e.socket, {4 * MiB});
    ASSERT_TRUE(guest.connect_and_send().ok());
    ASSERT_TRUE(e.engine->wait_until([](const EngineStats& s) { return s.vms_active == 1; }, kWait));
    json list = request(R"({"cmd":"list"})");
    ASSERT_EQ(list["vms"].size(), 1u);
    const uint64_t id = list["vms"][0]["id"].get<uint64_t>();
    json reply = request(R"({"cmd":"record-ws","id":)" + std::to_string(id) + "}");
    EXPECT_FALSE(reply["ok"].get<bool>());
    EXPECT_EQ(reply["error"].get<std::string>(), "VM " + std::to_string(id) +
                                                     ": working set not written: it is not recording a working set "
                                                     "(serve --record-ws)");
    reply = request(R"({"cmd":"record-ws","id":999})");
    EXPECT_EQ(reply["error"].get<std::string>(), "no VM 999 is being served");
    reply = request(R"({"cmd":"record-ws"})");
    EXPECT_EQ(reply["error"].get<std::string>(), "\"record-ws\" needs \"id\": a VM id (a positive integer; see \"list\")");
}

TEST_F(ControlTest, ListVmStatsPrefetchAndReleaseActOnTheServedVm) {
    sim::Guest guest = make_guest(e.socket, {4 * MiB});
    ASSERT_TRUE(guest.connect_and_send().ok());
    ASSERT_TRUE(e.engine->wait_until([](const EngineStats& s) { return s.vms_active == 1; }, kWait));
    guest.touch(sim::Pattern::sequential, 1, 0.25, 1);  // pages 0..255

    json list = request(R"({"cmd":"list"})");
    ASSERT_TRUE(list["ok"].get<bool>()) << list.dump();
    ASSERT_EQ(list["vms"].size(), 1u);
    const json vm = list["vms"][0];
    const uint64_t id = vm["id"].get<uint64_t>();
    EXPECT_EQ(vm["listener"].get<std::string>(), e.socket);
    EXPECT_EQ(vm["pages"]["total"].get<uint64_t>(), 1024u);
    EXPECT_EQ(vm["pages"]["present"].get<uint64_t>(), 256u);
    EXPECT_EQ(vm["pages"]["missing"].get<uint64_t>(), 768u);
    EXPECT_EQ(vm["faults"].get<uint64_t>(), 256u);
    EXPECT_FALSE(vm["resident"].get<bool>());
    EXPECT_GT(vm["fault_latency_seconds"]["p99"].get<double>(), 0.0);

    json stats = request(R"({"cmd":"stats"})");
    ASSERT_TRUE(stats["ok"].get<bool>());
    EXPECT_EQ(stats["stats"]["faults"].get<uint64_t>(), e.engine->stats().faults);
    EXPECT_EQ(stats["stats"]["vms_active"].get<uint64_t>(), 1u);
    EXPECT_EQ(stats["stats"]["reactors_prefetch_paused"].get<uint64_t>(), 0u);  // lazy: no pace
    EXPECT_EQ(stats["stats"]["reactors_paced_by_vm_run_delay"].get<uint64_t>(), 0u);
    EXPECT_EQ(stats["stats"]["reactors_paced_by_host_pressure"].get<uint64_t>(), 0u);

    json prefetch = request(R"({"cmd":"prefetch","id":)" + std::to_string(id) + "}");
    ASSERT_TRUE(prefetch["ok"].get<bool>()) << prefetch.dump();
    ASSERT_TRUE(e.engine->wait_until([](const EngineStats& s) { return s.vms_resident == 1; }, kWait));
    json one = request(R"({"cmd":"vm","id":)" + std::to_string(id) + "}");
    ASSERT_TRUE(one["ok"].get<bool>());
    EXPECT_TRUE(one["vm"]["resident"].get<bool>());
    EXPECT_EQ(one["vm"]["pages"]["missing"].get<uint64_t>(), 0u);

    json release = request(R"({"cmd":"release","id":)" + std::to_string(id) + "}");
    ASSERT_TRUE(release["ok"].get<bool>());
    ASSERT_TRUE(e.engine->wait_released(1, kWait));
    EXPECT_EQ(e.engine->reports()[0].end_reason, "released by the operator (ringpager ctl release)");
    // Resident before it was released: every byte is there without a pager.
    EXPECT_EQ(guest.verify(*image).mismatches, 0u);
    json gone = request(R"({"cmd":"vm","id":)" + std::to_string(id) + "}");
    EXPECT_FALSE(gone["ok"].get<bool>());
    EXPECT_EQ(gone["error"].get<std::string>(), "no VM " + std::to_string(id) + " is being served");
}

TEST_F(ControlTest, MalformedRequestsGetOneLineAndTheirConnectionClosed) {
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"not json", "the request is not JSON: "},
        {R"({"cmd":"list","cmd":"stats"})", "the request is not JSON: duplicate key \"cmd\""},
        {R"([1,2])", "a request is {\"cmd\":"},
        {R"({"cmd":"reboot"})", "unknown command \"reboot\""},
        {R"({"cmd":"vm"})", "\"vm\" needs \"id\""},
        {R"({"cmd":"release","id":-1})", "\"release\" needs \"id\""},
        {R"({"cmd":"stats","verbose":true})", "unknown field \"verbose\""},
    };
    for (const auto& [line, error] : cases) {
        FileDesc c = connect_to(control);
        const json reply = json::parse(ask(c.get(), line), nullptr, false);
        ASSERT_FALSE(reply.is_discarded()) << line;
        EXPECT_FALSE(reply["ok"].get<bool>()) << line;
        EXPECT_EQ(reply["error"].get<std::string>().rfind(error, 0), 0u) << line << " -> " << reply.dump();
        char byte;
        EXPECT_EQ(recv(c.get(), &byte, 1, 0), 0) << "the connection stays open after: " << line;
    }
    // A line too long for a request.
    FileDesc c = connect_to(control);
    EXPECT_NE(ask(c.get(), std::string(5000, 'x')).find("longer than 4096 bytes"), std::string::npos);
    // The engine is fine: a well-formed request on the first connection works.
    json stats = request(R"({"cmd":"stats"})");
    EXPECT_TRUE(stats["ok"].get<bool>());
}

TEST_F(ControlTest, DrainStopsAcceptingAndKeepsServing) {
    sim::Guest guest = make_guest(e.socket, {4 * MiB});
    ASSERT_TRUE(guest.connect_and_send().ok());
    ASSERT_TRUE(e.engine->wait_until([](const EngineStats& s) { return s.vms_active == 1; }, kWait));
    json drain = request(R"({"cmd":"drain"})");
    ASSERT_TRUE(drain["ok"].get<bool>());
    ASSERT_TRUE(e.engine->wait_until(
        [&](const EngineStats&) { return !std::filesystem::exists(e.socket); }, kWait));
    guest.touch(sim::Pattern::random, 2, 1.0, 2);  // still served
    EXPECT_EQ(guest.verify(*image).mismatches, 0u);
}

}  // namespace
