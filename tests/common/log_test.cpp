// Pins escape_for_log, the one way peer and file bytes enter a log line:
// printable ASCII kept, everything else \xNN, bounded without cutting an escape.
#include <gtest/gtest.h>

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

}  // namespace
