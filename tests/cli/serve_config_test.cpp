// Pins the `serve --config` file format: what parse_serve_config accepts, the
// exact one-line refusal for every malformed field, and that read_config_file
// refuses FIFOs, directories and oversized files without blocking.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdio>

#include "cli/serve_config.hpp"
#include "common/engine_fixture.hpp"

using namespace ringpager;

namespace {

const std::string kPath = "/etc/rp.json";

std::string refusal(std::string_view text) {
    std::vector<ListenerSpec> specs;
    std::string error;
    EXPECT_FALSE(parse_serve_config(text, kPath, specs, error)) << text;
    EXPECT_TRUE(specs.empty());
    return error;
}

std::string listener_refusal(const std::string& listener_json) {
    return refusal(R"({"listeners":[)" + listener_json + "]}");
}

TEST(ServeConfig, AcceptsBothSourceKindsAndBothModes) {
    std::vector<ListenerSpec> specs;
    std::string error;
    ASSERT_TRUE(parse_serve_config(R"({"listeners":[
        {"socket":"/run/a.sock","mem_file":"vm.mem"},
        {"socket":"/run/b.sock","snapshot":"vm.rpm","mode":"prefetch"},
        {"socket":"/run/c.sock","mem_file":"vm.mem","mode":"lazy"}]})",
                                   kPath, specs, error))
        << error;
    ASSERT_EQ(specs.size(), 3u);
    EXPECT_EQ(specs[0].socket, "/run/a.sock");
    EXPECT_EQ(specs[0].path, "vm.mem");
    EXPECT_FALSE(specs[0].layered);
    EXPECT_EQ(specs[0].mode, ServeMode::lazy);
    EXPECT_EQ(specs[1].path, "vm.rpm");
    EXPECT_TRUE(specs[1].layered);
    EXPECT_EQ(specs[1].mode, ServeMode::prefetch);
    EXPECT_EQ(specs[2].mode, ServeMode::lazy);
}

TEST(ServeConfig, RefusesTheWrongDocumentShape) {
    EXPECT_EQ(refusal(""), "config file /etc/rp.json: invalid JSON at byte 1: syntax error while parsing value - "
                           "unexpected end of input; expected '[', '{', or a literal");
    EXPECT_EQ(refusal("[]"), "config file /etc/rp.json: not a JSON object (expected {\"listeners\": [...]})");
    EXPECT_EQ(refusal("{}"), "config file /etc/rp.json: \"listeners\" is missing or not an array");
    EXPECT_EQ(refusal(R"({"listeners":{}})"), "config file /etc/rp.json: \"listeners\" is missing or not an array");
    EXPECT_EQ(refusal(R"({"listeners":[]})"), "config file /etc/rp.json: 0 listeners (give 1 to 1024)");
    EXPECT_EQ(refusal(R"({"listeners":[{"socket":"a","mem_file":"m"}],"listners":[]})"),
              "config file /etc/rp.json: unknown key \"listners\" (expected listeners)");
    EXPECT_EQ(refusal(R"({"listeners":[1]})"), "config file /etc/rp.json: listener 0: not a JSON object");
}

TEST(ServeConfig, RefusesMistypedFieldsWithoutThrowing) {
    EXPECT_EQ(listener_refusal(R"({"socket":1,"mem_file":"m"})"),
              "config file /etc/rp.json: listener 0: \"socket\" is not a string");
    EXPECT_EQ(listener_refusal(R"({"socket":"a","mem_file":"m","mode":3})"),
              "config file /etc/rp.json: listener 0: \"mode\" is not a string");
    EXPECT_EQ(listener_refusal(R"({"socket":"a","mem_file":["m"]})"),
              "config file /etc/rp.json: listener 0: \"mem_file\" is not a string");
    EXPECT_EQ(listener_refusal(R"({"socket":"a","snapshot":null})"),
              "config file /etc/rp.json: listener 0: \"snapshot\" is not a string");
}

TEST(ServeConfig, RefusesMissingEmptyAndContradictoryFields) {
    EXPECT_EQ(listener_refusal(R"({"mem_file":"m"})"), "config file /etc/rp.json: listener 0: missing \"socket\"");
    EXPECT_EQ(listener_refusal(R"({"socket":"","mem_file":"m"})"),
              "config file /etc/rp.json: listener 0: \"socket\" is empty");
    EXPECT_EQ(listener_refusal(R"({"socket":"a\u0000b","mem_file":"m"})"),
              "config file /etc/rp.json: listener 0: \"socket\" contains a NUL byte");
    EXPECT_EQ(listener_refusal(R"({"socket":"a"})"),
              "config file /etc/rp.json: listener 0: give exactly one of \"mem_file\" and \"snapshot\"");
    EXPECT_EQ(listener_refusal(R"({"socket":"a","mem_file":"m","snapshot":"s"})"),
              "config file /etc/rp.json: listener 0: give exactly one of \"mem_file\" and \"snapshot\"");
    EXPECT_EQ(listener_refusal(R"({"socket":"a","mem_file":"m","mode":"eager\n"})"),
              "config file /etc/rp.json: listener 0: \"mode\" must be \"lazy\" or \"prefetch\", not \"eager\\x0a\"");
    EXPECT_EQ(listener_refusal(R"({"socket":"a","mem_file":"m"},{"socket":"a","snapshot":"s"})"),
              "config file /etc/rp.json: listener 1: socket \"a\" is also listener 0's");
}

TEST(ServeConfig, WorkingSetKeysPerListener) {
    std::vector<ListenerSpec> specs;
    std::string error;
    ASSERT_TRUE(parse_serve_config(R"({"listeners":[{"socket":"a","mem_file":"m","record_ws":"a-{vm}.ws"},)"
                                   R"({"socket":"b","mem_file":"m","mode":"prefetch","working_set":"b.ws"}]})",
                                   "/etc/rp.json", specs, error))
        << error;
    ASSERT_EQ(specs.size(), 2u);
    EXPECT_EQ(specs[0].record_ws, "a-{vm}.ws");
    EXPECT_EQ(specs[1].working_set, "b.ws");
    EXPECT_EQ(listener_refusal(R"({"socket":"a","mem_file":"m","working_set":"w"})"),
              "config file /etc/rp.json: listener 0: \"working_set\" needs \"mode\": \"prefetch\" (the prefetcher replays it)");
}

TEST(ServeConfig, RefusesUnknownAndDuplicateKeysNamingThemEscaped) {
    EXPECT_EQ(listener_refusal(R"({"socket":"a","mem_file":"m","prefetch":true})"),
              "config file /etc/rp.json: listener 0: unknown key \"prefetch\" (expected socket, mem_file, snapshot, mode, "
              "record_ws, working_set)");
    EXPECT_EQ(listener_refusal(R"({"socket":"a","mem_file":"m","\u001b[31m":1})"),
              "config file /etc/rp.json: listener 0: unknown key \"\\x1b[31m\" (expected socket, mem_file, snapshot, "
              "mode, record_ws, working_set)");
    EXPECT_EQ(listener_refusal(R"({"socket":"a","mem_file":"m","socket":"b"})"),
              "config file /etc/rp.json: duplicate key \"socket\" in object at depth 3");
    EXPECT_EQ(refusal(R"({"listeners":[],"listeners":[{"socket":"a","mem_file":"m"}]})"),
              "config file /etc/rp.json: duplicate key \"listeners\" in object at depth 1");
}

TEST(ServeConfig, BoundsListenersAndText) {
    std::string many = R"({"listeners":[)";
    for (int i = 0; i < 1025; i++) many += (i ? "," : "") + std::string(R"({"socket":"s)") + std::to_string(i) + R"(","mem_file":"m"})";
    EXPECT_EQ(refusal(many + "]}"), "config file /etc/rp.json: 1025 listeners (give 1 to 1024)");
    EXPECT_EQ(refusal(std::string(kMaxConfigBytes + 1, ' ')), "config file /etc/rp.json: text is 1048577 bytes (at most 1048576)");
}

TEST(ServeConfig, OutIsUntouchedOnRefusal) {
    std::vector<ListenerSpec> specs(1);
    std::string error;
    EXPECT_FALSE(parse_serve_config(R"({"listeners":[{"socket":"a","mem_file":"m"},{"socket":1}]})", kPath, specs, error));
    EXPECT_EQ(specs.size(), 1u);
}

class ReadConfigFile : public ::testing::Test {
protected:
    ringpager::testing::TempDir dir;
};

TEST_F(ReadConfigFile, ReadsARegularFile) {
    const std::string path = dir.file("c.json");
    FILE* f = fopen(path.c_str(), "w");
    fputs("{\"listeners\":[]}", f);
    fclose(f);
    std::string text, error;
    ASSERT_TRUE(read_config_file(path, text, error)) << error;
    EXPECT_EQ(text, "{\"listeners\":[]}");
}

TEST_F(ReadConfigFile, RefusesAFifoWithoutWaitingForAWriter) {
    const std::string path = dir.file("fifo");
    ASSERT_EQ(mkfifo(path.c_str(), 0600), 0);
    std::string text, error;
    EXPECT_FALSE(read_config_file(path, text, error));
    EXPECT_EQ(error, "config file " + path + " is a FIFO, not a regular file");
}

TEST_F(ReadConfigFile, RefusesADirectoryAMissingFileAndAnOversizedFile) {
    std::string text, error;
    EXPECT_FALSE(read_config_file(dir.file(""), text, error));
    EXPECT_EQ(error, "config file " + dir.file("") + " is a directory, not a regular file");
    EXPECT_FALSE(read_config_file(dir.file("nope"), text, error));
    EXPECT_EQ(error, "config file " + dir.file("nope") + ": open: No such file or directory");
    const std::string big = dir.file("big.json");
    FILE* f = fopen(big.c_str(), "w");
    ASSERT_EQ(ftruncate(fileno(f), kMaxConfigBytes + 1), 0);
    fclose(f);
    EXPECT_FALSE(read_config_file(big, text, error));
    EXPECT_EQ(error, "config file " + big + " is 1048577 bytes (at most 1048576)");
}

}  // namespace
