// Pins escape_for_log, the one way peer and file bytes enter a log line:
// printable ASCII kept, everything else \xNN, bounded without cutting an escape;
// and the JSON log format (--log-format json): one parseable object per line
// whatever bytes a field holds.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "common/log.hpp"

namespace {

using ringpager::escape_for_log;

TEST(EscapeForLog, PrintableAsciiStaysOtherBytesBecomeHex) {
    EXPECT_EQ(escape_for_log("mem_file"), "mem_file");
    EXPECT_EQ(escape_for_log(std::string("a\nb\0c\x7f\xff", 7)), "a\\x0ab\\x00c\\x7f\\xff");
    EXPECT_EQ(escape_for_log("say \"hi\" \\ bye"), "say \\\"hi\\\" \\\\ bye");
    EXPECT_EQ(escape_for_log(""), "");
}

TEST(EscapeForLog, BoundsTheOutputWithoutCuttingAnEscape) {
    EXPECT_EQ(escape_for_log(std::string(64, 'k')), std::string(64, 'k'));
    EXPECT_EQ(escape_for_log(std::string(65, 'k')), std::string(64, 'k') + "...");
    EXPECT_EQ(escape_for_log("abc\x01", 5), "abc...");
    EXPECT_EQ(escape_for_log("abc\x01", 7), "abc\\x01");
    EXPECT_EQ(escape_for_log(std::string(1 << 20, '\x01')).size(), 64u + 3u);
}

TEST(JsonEscape, EveryByteYieldsValidJson) {
    EXPECT_EQ(ringpager::json_escape("plain"), "plain");
    EXPECT_EQ(ringpager::json_escape("a\"b\\c"), "a\\\"b\\\\c");
    EXPECT_EQ(ringpager::json_escape(std::string("\n\0\x7f\xff", 4)), "\\u000a\\u0000\\u007f\\u00ff");
    std::string all;
    for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
    const auto parsed = nlohmann::json::parse("\"" + ringpager::json_escape(all) + "\"");
    ASSERT_TRUE(parsed.is_string());
    EXPECT_EQ(parsed.get<std::string>().size(), 256u + 128u);  // bytes >= 0x80 come back as two-byte UTF-8
}

// Runs `write` with stderr redirected to a file and returns what it wrote.
template <typename F>
std::string captured_stderr(F write) {
    fflush(stderr);
    FILE* sink = tmpfile();
    const int saved = dup(STDERR_FILENO);
    dup2(fileno(sink), STDERR_FILENO);
    write();
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    std::string out;
    rewind(sink);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, sink)) > 0) out.append(buf, n);
    fclose(sink);
    return out;
}

TEST(LogFormat, JsonEventIsOneObjectWithTypedFields) {
    ringpager::set_log_format(ringpager::LogFormat::json);
    const std::string line = captured_stderr([] {
        ringpager::log_event(ringpager::LogLevel::info, "vm_released",
                             {{"vm", uint64_t{7}}, {"pid", -1}, {"seconds", 0.25}, {"listener", "/run/a\n\"b\""}},
                             "vm 7: released");
    });
    ringpager::set_log_format(ringpager::LogFormat::text);
    ASSERT_EQ(std::count(line.begin(), line.end(), '\n'), 1) << line;
    const auto j = nlohmann::json::parse(line);
    EXPECT_EQ(j.at("level"), "info");
    EXPECT_EQ(j.at("event"), "vm_released");
    EXPECT_EQ(j.at("vm").get<uint64_t>(), 7u);
    EXPECT_EQ(j.at("pid").get<int>(), -1);
    EXPECT_DOUBLE_EQ(j.at("seconds").get<double>(), 0.25);
    EXPECT_EQ(j.at("listener"), "/run/a\n\"b\"");
    EXPECT_EQ(j.at("msg"), "vm 7: released");
    EXPECT_EQ(j.at("time").get<std::string>().size(), 24u) << j.at("time");  // 2026-11-27T12:00:01.234Z
}

TEST(LogFormat, TextLineIsTheMessageAloneAndPlainLinesBecomeJsonToo) {
    const std::string text = captured_stderr([] {
        ringpager::log_event(ringpager::LogLevel::warn, "vm_refused", {{"cause", "handshake"}}, "refused: bad");
    });
    EXPECT_NE(text.find(" ringpager warn: refused: bad\n"), std::string::npos) << text;
    EXPECT_EQ(text.find("cause"), std::string::npos) << text;
    ringpager::set_log_format(ringpager::LogFormat::json);
    const std::string json = captured_stderr([] { ringpager::log_line(ringpager::LogLevel::error, "n=%d", 3); });
    ringpager::set_log_format(ringpager::LogFormat::text);
    const auto j = nlohmann::json::parse(json);
    EXPECT_EQ(j.at("level"), "error");
    EXPECT_FALSE(j.contains("event"));
    EXPECT_EQ(j.at("msg"), "n=3");
}

}  // namespace
