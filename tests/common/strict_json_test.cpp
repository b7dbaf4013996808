// Pins parse_strict_json: duplicate keys at any depth and over-deep nesting are
// refused, every error is one exact line, and input bytes quoted in it are
// escaped and bounded.
#include <gtest/gtest.h>

#include <string>

#include "common/strict_json.hpp"

namespace {

using ringpager::parse_strict_json;

std::string refusal(std::string_view text, size_t max_depth = ringpager::kStrictJsonMaxDepth) {
    nlohmann::json doc;
    std::string error;
    EXPECT_FALSE(parse_strict_json(text, doc, error, max_depth)) << text;
    return error;
}

TEST(StrictJson, AcceptsWhatNlohmannAcceptsWhenKeysAreUnique) {
    nlohmann::json doc;
    std::string error;
    ASSERT_TRUE(parse_strict_json(R"( [{"size":1,"offset":2},{"size":1,"offset":2}] )", doc, error)) << error;
    EXPECT_EQ(doc, nlohmann::json::parse(R"([{"size":1,"offset":2},{"size":1,"offset":2}])"));
    ASSERT_TRUE(parse_strict_json(R"({"a":{"b":1},"c":{"b":2}})", doc, error)) << error;
    EXPECT_EQ(doc["c"]["b"], 2);
    ASSERT_TRUE(parse_strict_json("42", doc, error)) << error;
    EXPECT_EQ(doc, 42);
}

TEST(StrictJson, RefusesDuplicateKeysAtAnyDepth) {
    EXPECT_EQ(refusal(R"({"a":1,"a":2})"), "duplicate key \"a\" in object at depth 1");
    EXPECT_EQ(refusal(R"([{"base_host_virt_addr":0,"size":4096,"size":8192}])"),
              "duplicate key \"size\" in object at depth 2");
    EXPECT_EQ(refusal(R"({"listeners":[{"x":{"deep":[{"k":1,"k":1}]}}]})"),
              "duplicate key \"k\" in object at depth 6");
    // The same key spelled with an escape is the same key.
    EXPECT_EQ(refusal(R"({"mode":1,"mo\u0064e":2})"), "duplicate key \"mode\" in object at depth 1");
}

TEST(StrictJson, DuplicateKeyInTheErrorIsEscapedAndBounded) {
    EXPECT_EQ(refusal(R"({"a\u0000\n\"b":1,"a\u0000\n\"b":2})"),
              "duplicate key \"a\\x00\\x0a\\\"b\" in object at depth 1");
    const std::string long_key(200, 'k');
    EXPECT_EQ(refusal("{\"" + long_key + "\":1,\"" + long_key + "\":2}"),
              "duplicate key \"" + std::string(64, 'k') + "...\" in object at depth 1");
}

TEST(StrictJson, RefusesNestingDeeperThanTheBound) {
    nlohmann::json doc;
    std::string error;
    EXPECT_TRUE(parse_strict_json("[[[1]]]", doc, error, 3)) << error;
    EXPECT_EQ(refusal("[[[[1]]]]", 3), "JSON nested deeper than 3 levels");
    EXPECT_EQ(refusal(R"({"a":{"b":{"c":{}}}})", 3), "JSON nested deeper than 3 levels");
    // A million open brackets cost one refusal, not a million frames.
    EXPECT_EQ(refusal(std::string(1000000, '[')), "JSON nested deeper than 16 levels");
}

TEST(StrictJson, SyntaxErrorsNameTheByteAndEscapeTheToken) {
    EXPECT_EQ(refusal(""), "invalid JSON at byte 1: syntax error while parsing value - unexpected end of input; "
                           "expected '[', '{', or a literal");
    EXPECT_EQ(refusal("[1,]"), "invalid JSON at byte 4: syntax error while parsing value - unexpected ']'; "
                               "expected '[', '{', or a literal");
    EXPECT_EQ(refusal("{} {}"), "invalid JSON at byte 4: syntax error while parsing value - unexpected '{'; "
                                "expected end of input");
    EXPECT_EQ(refusal("[tru\xff]"), "invalid JSON at byte 5: syntax error while parsing value - invalid literal; "
                                    "last read: '[tru\\xff'");
    const std::string long_string = "[\"" + std::string(500, 'x') + "\x01\"]";
    const std::string error = refusal(long_string);
    EXPECT_EQ(error, "invalid JSON at byte 503: syntax error while parsing value - invalid string: control character "
                     "U+0001 (SOH) must be escaped to \\u0001; last read: '\\\"" + std::string(62, 'x') + "...'");
}

}  // namespace
