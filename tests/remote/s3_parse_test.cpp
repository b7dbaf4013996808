// Pins what the client accepts before anything is sent and how it reads
// hostile answers: s3:// URLs parsed strictly, the environment's
// configuration, percent-encoding as SigV4 signs it, the XML extractor and
// the listing parser's bounds (no object store needed).
#include <gtest/gtest.h>

#include <cstdlib>
#include <optional>

#include "remote/s3_answers.hpp"
#include "remote/s3_client.hpp"
#include "remote/s3_xml.hpp"

namespace {

using namespace ringpager::remote;

TEST(S3Url, ParsesBucketAndKeyStrictly) {
    S3Location at;
    EXPECT_EQ(parse_s3_url("s3://my-bucket/snapshots/vm 1", KeyRule::required, at), "");
    EXPECT_EQ(at.bucket, "my-bucket");
    EXPECT_EQ(at.key, "snapshots/vm 1");
    EXPECT_EQ(parse_s3_url("s3://my-bucket", KeyRule::optional, at), "");
    EXPECT_EQ(at.key, "");
    EXPECT_EQ(parse_s3_url("s3://my-bucket/dir/", KeyRule::optional, at), "");
    EXPECT_EQ(at.key, "dir/");

    EXPECT_EQ(parse_s3_url("S3://b/k", KeyRule::required, at),
              "'S3://b/k' is not an s3://BUCKET/NAME URL: it does not start with s3://");
    EXPECT_EQ(parse_s3_url("s3://my-bucket", KeyRule::required, at),
              "'s3://my-bucket' is not an s3://BUCKET/NAME URL: no object name after the bucket");
    EXPECT_EQ(parse_s3_url("s3://my-bucket/", KeyRule::required, at),
              "'s3://my-bucket/' is not an s3://BUCKET/NAME URL: no object name after the bucket");
    const std::string bucket_rule =
        "' breaks S3's rules (3 to 63 of a-z 0-9 . -, starting and ending with a letter or digit)";
    EXPECT_EQ(parse_s3_url("s3://My_Bucket/k", KeyRule::required, at),
              "'s3://My_Bucket/k' is not an s3://BUCKET/NAME URL: bucket name 'My_Bucket" + bucket_rule);
    for (const char* bad : {"s3://ab/k", "s3://-ab/k", "s3://a..b/k", "s3://192.168.1.1/k", "s3:///k"}) {
        EXPECT_NE(parse_s3_url(bad, KeyRule::required, at), "") << bad;
    }
    const std::string key_rule = "the name is longer than 1024 bytes, starts with '/', has an empty segment or a "
                                 "control character";
    EXPECT_EQ(parse_s3_url("s3://bucket//k", KeyRule::required, at),
              "'s3://bucket//k' is not an s3://BUCKET/NAME URL: " + key_rule);
    EXPECT_EQ(parse_s3_url("s3://bucket/a//b", KeyRule::required, at),
              "'s3://bucket/a//b' is not an s3://BUCKET/NAME URL: " + key_rule);
    EXPECT_EQ(parse_s3_url("s3://bucket/a\nb", KeyRule::required, at),
              "'s3://bucket/a\\x0ab' is not an s3://BUCKET/NAME URL: " + key_rule);
    EXPECT_NE(parse_s3_url("s3://bucket/" + std::string(1025, 'k'), KeyRule::required, at), "");
    EXPECT_EQ(parse_s3_url("s3://bucket/" + std::string(1024, 'k'), KeyRule::required, at), "");
}

TEST(S3Url, EncodesAsSigV4SignsAndSortsTheQuery) {
    EXPECT_EQ(uri_encode("a b+c/d~e_f.g-h%", true), "a%20b%2Bc/d~e_f.g-h%25");
    EXPECT_EQ(uri_encode("a/b", false), "a%2Fb");
    EXPECT_EQ(uri_encode("\xc3\xa9", false), "%C3%A9");
    EXPECT_EQ(canonical_query({{"uploadId", "2~x/y="}, {"partNumber", "3"}}), "partNumber=3&uploadId=2~x%2Fy%3D");
    EXPECT_EQ(canonical_query({{"uploads", ""}}), "uploads=");
}

// Keeps the AWS_* variables (the store's, set by the suite's main) across a test that edits them.
class SavedEnvironment {
public:
    SavedEnvironment() {
        for (const char* name : names) {
            const char* value = std::getenv(name);
            saved_.emplace_back(name, value ? std::optional<std::string>(value) : std::nullopt);
        }
    }
    ~SavedEnvironment() {
        for (const auto& [name, value] : saved_) {
            if (value) {
                ::setenv(name, value->c_str(), 1);
            } else {
                ::unsetenv(name);
            }
        }
    }

private:
    static constexpr const char* names[] = {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                            "AWS_REGION"};
    std::vector<std::pair<const char*, std::optional<std::string>>> saved_;
};

TEST(S3Config, ComesFromTheEnvironmentAndIsChecked) {
    SavedEnvironment saved;
    ::setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:8000/", 1);
    ::setenv("AWS_ACCESS_KEY_ID", "key", 1);
    ::setenv("AWS_SECRET_ACCESS_KEY", "secret", 1);
    ::unsetenv("AWS_REGION");
    auto config = S3Config::from_environment();
    ASSERT_TRUE(config) << config.error().message;
    EXPECT_EQ(config->endpoint, "http://127.0.0.1:8000");
    EXPECT_EQ(config->region, "us-east-1");

    ::setenv("AWS_REGION", "eu west", 1);
    EXPECT_EQ(S3Config::from_environment().error().message, "AWS_REGION 'eu west' is not a region name (like us-east-1)");
    ::setenv("AWS_REGION", "eu-west-1", 1);
    EXPECT_EQ(S3Config::from_environment()->region, "eu-west-1");
    ::setenv("AWS_ENDPOINT_URL", "127.0.0.1:8000", 1);
    EXPECT_EQ(S3Config::from_environment().error().message,
              "AWS_ENDPOINT_URL '127.0.0.1:8000' must start with http:// or https://");
    ::setenv("AWS_ENDPOINT_URL", "http://host/path", 1);
    EXPECT_EQ(S3Config::from_environment().error().message,
              "AWS_ENDPOINT_URL 'http://host/path' must be http(s)://HOST[:PORT] with no path, user or query");
    ::unsetenv("AWS_ENDPOINT_URL");
    EXPECT_EQ(S3Config::from_environment().error().message,
              "AWS_ENDPOINT_URL is not set: set it to the object store's http(s)://HOST:PORT");
    ::setenv("AWS_ENDPOINT_URL", "http://host", 1);
    ::unsetenv("AWS_SECRET_ACCESS_KEY");
    EXPECT_EQ(S3Config::from_environment().error().message, "AWS_SECRET_ACCESS_KEY is not set");
}

TEST(S3Retry, BackoffIsCappedAndJittered) {
    RetryPolicy p{6, 50, 300};
    for (uint64_t r : {0ull, 1ull, 12345ull, ~0ull}) {
        EXPECT_LE(p.delay_ms(2, r), 50u);
        EXPECT_LE(p.delay_ms(3, r), 100u);
        EXPECT_LE(p.delay_ms(4, r), 200u);
        EXPECT_LE(p.delay_ms(5, r), 300u);
        EXPECT_LE(p.delay_ms(40, r), 300u);
    }
    EXPECT_EQ(p.delay_ms(5, 300), 300u);   // the cap itself is reachable
    EXPECT_EQ(p.delay_ms(5, 301), 0u);
}

TEST(S3Xml, ExtractsDecodesAndRefusesMalformedEntities) {
    std::string doc = "<A><Key>a&amp;b&lt;&#x41;&#66;&quot;</Key><KeyCount>2</KeyCount><Empty/></A>";
    EXPECT_EQ(xml::text(doc, "Key", 100), "a&b<AB\"");
    EXPECT_EQ(xml::text(doc, "KeyCount", 100), "2");
    EXPECT_EQ(xml::text(doc, "Empty", 100), "");
    EXPECT_EQ(xml::text(doc, "Missing", 100), std::nullopt);
    EXPECT_EQ(xml::text(doc, "Key", 3), std::nullopt);   // longer than the caller keeps
    EXPECT_EQ(xml::unescape("&bogus;"), std::nullopt);
    EXPECT_EQ(xml::unescape("&#0;"), std::nullopt);
    EXPECT_EQ(xml::unescape("&#xd800;"), std::nullopt);
    EXPECT_EQ(xml::unescape("&amp"), std::nullopt);
    EXPECT_EQ(xml::text("<Key>unterminated", "Key", 100), std::nullopt);
    EXPECT_EQ(xml::parse_u64("18446744073709551615"), UINT64_MAX);
    EXPECT_EQ(xml::parse_u64("18446744073709551616"), std::nullopt);
    EXPECT_EQ(xml::parse_u64("+1"), std::nullopt);
    EXPECT_EQ(xml::parse_u64(" 1"), std::nullopt);
    EXPECT_EQ(xml::escape("\"<a&b>'"), "&quot;&lt;a&amp;b&gt;&apos;");
}

std::string listing(const std::string& contents, const std::string& truncated = "false", const std::string& token = "") {
    return "<ListBucketResult><IsTruncated>" + truncated + "</IsTruncated>" + contents +
           (token.empty() ? "" : "<NextContinuationToken>" + token + "</NextContinuationToken>") + "</ListBucketResult>";
}

std::string entry(const std::string& key, const std::string& size) {
    return "<Contents><Key>" + key + "</Key><Size>" + size + "</Size></Contents>";
}

TEST(S3Listing, HostileListingsAreRefusedWithOneLine) {
    auto page = parse_list_page(listing(entry("p/a", "1") + entry("p/b", "2"), "true", "tok"), "s3://b/p/", "p/", 10);
    ASSERT_TRUE(page) << page.error().message;
    EXPECT_EQ(page->objects.size(), 2u);
    EXPECT_EQ(page->next_token, "tok");

    auto refused = [](const std::string& doc, uint32_t max_keys = 10) {
        auto r = parse_list_page(doc, "s3://b/p/", "p/", max_keys);
        EXPECT_FALSE(r);
        return r ? std::string("accepted") : r.error().message;
    };
    EXPECT_EQ(refused("<Error/>"), "s3://b/p/: the answer is not a listing");
    EXPECT_EQ(refused(listing("", "maybe")), "s3://b/p/: the listing has no IsTruncated true|false");
    EXPECT_EQ(refused(listing(entry("p/a", "1") + entry("p/b", "1") + entry("p/c", "1")), 2),
              "s3://b/p/: the listing holds more than the 2 keys asked for");
    EXPECT_EQ(refused(listing(entry("p/a", "-1"))), "s3://b/p/: listing entry 0 has no usable Key or Size");
    EXPECT_EQ(refused(listing(entry("p/a", "99999999999999999999"))), "s3://b/p/: listing entry 0 has no usable Key or Size");
    EXPECT_EQ(refused(listing(entry("", "1"))), "s3://b/p/: listing entry 0 has no usable Key or Size");
    EXPECT_EQ(refused(listing(entry(std::string(1025, 'p'), "1"))), "s3://b/p/: listing entry 0 has no usable Key or Size");
    EXPECT_EQ(refused(listing(entry("q/a", "1"))), "s3://b/p/: the listing holds key 'q/a' outside the prefix");
    EXPECT_EQ(refused(listing(entry("p/b", "1") + entry("p/a", "1"))),
              "s3://b/p/: the listing's keys are not in increasing order");
    EXPECT_EQ(refused(listing(entry("p/a", "1"), "true")),
              "s3://b/p/: a truncated listing without a usable NextContinuationToken");
}

TEST(S3Multipart, TheCompleteBodyEscapesETags) {
    std::vector<CompletedPart> parts = {{1, "\"abc\""}, {2, "\"d&e\""}};
    EXPECT_EQ(complete_multipart_body(parts),
              "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>&quot;abc&quot;</ETag></Part>"
              "<Part><PartNumber>2</PartNumber><ETag>&quot;d&amp;e&quot;</ETag></Part></CompleteMultipartUpload>");
}

TEST(S3Multipart, TheUploadIdMustBeUsable) {
    auto id = parse_upload_id("<InitiateMultipartUploadResult><UploadId>2~abc&amp;d</UploadId>"
                              "</InitiateMultipartUploadResult>",
                              "s3://b/k");
    ASSERT_TRUE(id) << id.error().message;
    EXPECT_EQ(*id, "2~abc&d");
    for (const std::string& doc : {std::string("<Error/>"), std::string("<UploadId></UploadId>"),
                                  "<UploadId>" + std::string(1025, 'a') + "</UploadId>",
                                  std::string("<UploadId>a&#10;b</UploadId>"), std::string("<UploadId>a&bogus;</UploadId>")}) {
        auto r = parse_upload_id(doc, "s3://b/k");
        ASSERT_FALSE(r) << doc;
        EXPECT_EQ(r.error().kind, S3Error::Kind::invalid_response);
        EXPECT_EQ(r.error().message, "s3://b/k: no usable UploadId in the answer");
    }
}

TEST(S3Multipart, ACompleteAnswerOf200CanStillBeAFailure) {
    auto etag = parse_complete_answer("<CompleteMultipartUploadResult><ETag>&quot;e-2&quot;</ETag>"
                                      "</CompleteMultipartUploadResult>",
                                      "s3://b/k");
    ASSERT_TRUE(etag) << etag.error().message;
    EXPECT_EQ(*etag, "\"e-2\"");
    auto rgw = parse_complete_answer("<CompleteMultipartUploadResult><ETag/></CompleteMultipartUploadResult>", "s3://b/k");
    ASSERT_TRUE(rgw) << rgw.error().message;
    EXPECT_EQ(*rgw, "");

    auto failed = parse_complete_answer("<Error><Code>InternalError</Code></Error>", "s3://b/k");
    ASSERT_FALSE(failed);
    EXPECT_EQ(failed.error().kind, S3Error::Kind::server);
    EXPECT_EQ(failed.error().message, "s3://b/k: completing the upload failed (InternalError)");
    EXPECT_EQ(parse_complete_answer("", "s3://b/k").error().message, "s3://b/k: completing the upload failed (no result)");
    auto malformed = parse_complete_answer(
        "<CompleteMultipartUploadResult><ETag>a&#1;b</ETag></CompleteMultipartUploadResult>", "s3://b/k");
    ASSERT_FALSE(malformed);
    EXPECT_EQ(malformed.error().message, "s3://b/k: the completed upload's ETag is malformed");
}

}  // namespace
