// Pins the blocking S3 client against a real Ceph RGW: objects of several
// sizes (and a multipart one) come back byte for byte, ranges are exact at
// every boundary, listings follow continuation tokens, and 403/404 end in the
// exact one-line errors an operator reads.
#include <xxhash.h>

#include <cstring>
#include <random>

#include "remote/s3_client.hpp"
#include "rgw_environment.hpp"

namespace {

using namespace ringpager::remote;
using rgwtest::rgw;
using Bytes = std::vector<std::byte>;

Bytes random_bytes(size_t size, uint64_t seed) {
    Bytes out(size);
    std::mt19937_64 rng(seed);
    for (size_t i = 0; i < size; i += 8) {
        uint64_t v = rng();
        std::memcpy(out.data() + i, &v, std::min<size_t>(8, size - i));
    }
    return out;
}

std::string hash(std::span<const std::byte> bytes) {
    XXH128_hash_t h = XXH3_128bits(bytes.data(), bytes.size());
    return std::to_string(h.high64) + ":" + std::to_string(h.low64);
}

class S3ClientTest : public rgwtest::BucketFixture {};

TEST_F(S3ClientTest, ObjectsOfSeveralSizesComeBackByteForByte) {
    for (size_t size : {size_t{0}, size_t{1}, size_t{4097}, size_t{1} << 20, (size_t{9} << 20) + 3}) {
        SCOPED_TRACE("size " + std::to_string(size));
        Bytes data = random_bytes(size, size);
        std::string key = "objects/size-" + std::to_string(size);
        auto etag = client->put(at(key), data);
        ASSERT_TRUE(etag) << etag.error().message;
        auto info = client->head(at(key));
        ASSERT_TRUE(info) << info.error().message;
        EXPECT_EQ(info->size_bytes, size);
        EXPECT_EQ(info->etag, *etag);
        auto back = client->get(at(key), 16 << 20);
        ASSERT_TRUE(back) << back.error().message;
        EXPECT_EQ(hash(*back), hash(data));
    }
}

TEST_F(S3ClientTest, GetRefusesAnObjectLargerThanTheCallerAccepts) {
    Bytes data = random_bytes(5000, 1);
    ASSERT_TRUE(client->put(at("big"), data));
    auto back = client->get(at("big"), 4999);
    ASSERT_FALSE(back);
    EXPECT_EQ(back.error().message, "s3://" + bucket + "/big: the object holds 5000 bytes, more than the 4999 this "
                                    "reader accepts");
}

TEST_F(S3ClientTest, MultipartUploadRoundTrips) {
    const S3Location object = at("multi/part");
    Bytes data = random_bytes((size_t{11} << 20) + 7, 42);   // 5 MiB + 5 MiB + 1 MiB and 7 bytes
    auto upload = client->create_multipart(object);
    ASSERT_TRUE(upload) << upload.error().message;
    std::vector<CompletedPart> parts;
    for (size_t at_byte = 0, number = 1; at_byte < data.size(); at_byte += min_part_bytes, ++number) {
        auto piece = std::span(data).subspan(at_byte, std::min<size_t>(min_part_bytes, data.size() - at_byte));
        auto etag = client->upload_part(object, *upload, static_cast<uint32_t>(number), piece);
        ASSERT_TRUE(etag) << etag.error().message;
        parts.push_back({static_cast<uint32_t>(number), *etag});
    }
    ASSERT_EQ(parts.size(), 3u);
    auto done = client->complete_multipart(object, *upload, parts);
    ASSERT_TRUE(done) << done.error().message;
    auto info = client->head(object);
    ASSERT_TRUE(info) << info.error().message;
    EXPECT_EQ(info->size_bytes, data.size());
    EXPECT_NE(info->etag.find("-3"), std::string::npos) << info->etag;   // a multipart ETag names its part count
    auto back = client->get(object, 64 << 20);
    ASSERT_TRUE(back) << back.error().message;
    EXPECT_EQ(hash(*back), hash(data));
}

TEST_F(S3ClientTest, AnAbortedUploadLeavesNothingAndCannotBeCompleted) {
    const S3Location object = at("aborted");
    auto upload = client->create_multipart(object);
    ASSERT_TRUE(upload) << upload.error().message;
    auto etag = client->upload_part(object, *upload, 1, random_bytes(1000, 3));
    ASSERT_TRUE(etag) << etag.error().message;
    ASSERT_TRUE(client->abort_multipart(object, *upload));
    std::vector<CompletedPart> parts = {{1, *etag}};
    auto done = client->complete_multipart(object, *upload, parts);   // S3 says 404 NoSuchUpload; RGW 16 a 500
    ASSERT_FALSE(done);
    EXPECT_EQ(done.error().message.rfind("s3://" + bucket + "/aborted: ", 0), 0u) << done.error().message;
    auto listed = client->list(bucket, "", 10);
    ASSERT_TRUE(listed) << listed.error().message;
    EXPECT_TRUE(listed->empty());
}

TEST_F(S3ClientTest, RangesAreExactAtEveryBoundary) {
    const size_t size = (size_t{1} << 20) + 17;
    Bytes data = random_bytes(size, 7);
    ASSERT_TRUE(client->put(at("ranged"), data));
    struct Case {
        uint64_t offset, length;
    };
    for (Case c : {Case{0, 1}, Case{0, size}, Case{size - 1, 1}, Case{4095, 2}, Case{1 << 20, 17}, Case{12345, 65536}}) {
        SCOPED_TRACE(std::to_string(c.offset) + "+" + std::to_string(c.length));
        Bytes out(c.length);
        auto r = client->get_range(at("ranged"), c.offset, out);
        ASSERT_TRUE(r) << r.error().message;
        EXPECT_EQ(hash(out), hash(std::span(data).subspan(c.offset, c.length)));
    }
    // A range that runs past the end comes back shorter: an error, never a short buffer.
    Bytes over(10);
    auto r = client->get_range(at("ranged"), size - 5, over);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().kind, S3Error::Kind::invalid_response);
    EXPECT_EQ(r.error().message, "s3://" + bucket + "/ranged: asked for bytes " + std::to_string(size - 5) + "-" +
                                     std::to_string(size + 4) + ", the store sent range 'bytes " +
                                     std::to_string(size - 5) + "-" + std::to_string(size - 1) + "/" +
                                     std::to_string(size) + "'");
    EXPECT_EQ(client->stats().retries, 0u);   // a complete answer that is wrong is not retried
    // A range that starts past the end is refused by the store.
    Bytes past(1);
    r = client->get_range(at("ranged"), size, past);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().message, "s3://" + bucket + "/ranged: bytes " + std::to_string(size) +
                                     "+1 lie past the end of the object (416 InvalidRange)");
}

TEST_F(S3ClientTest, ListingFollowsContinuationTokens) {
    std::vector<std::string> keys;
    for (int i = 0; i < 25; ++i) {
        char name[32];
        std::snprintf(name, sizeof name, "p/key-%02d", i);
        keys.push_back(name);
        ASSERT_TRUE(client->put(at(name), random_bytes(static_cast<size_t>(i), static_cast<uint64_t>(i))));
    }
    for (const char* other : {"q/1", "q/2", "pa"}) ASSERT_TRUE(client->put(at(other), random_bytes(3, 3)));

    auto first = client->list_page(bucket, "p/", "", 10);
    ASSERT_TRUE(first) << first.error().message;
    EXPECT_EQ(first->objects.size(), 10u);
    EXPECT_FALSE(first->next_token.empty());

    auto all = client->list(bucket, "p/", 1000);
    ASSERT_TRUE(all) << all.error().message;
    ASSERT_EQ(all->size(), keys.size());
    for (size_t i = 0; i < keys.size(); ++i) {
        EXPECT_EQ((*all)[i].key, keys[i]);
        EXPECT_EQ((*all)[i].size_bytes, i);
    }
    // Paging by 10 reaches the same keys in three pages.
    std::vector<std::string> paged;
    std::string token;
    int pages = 0;
    do {
        auto page = client->list_page(bucket, "p/", token, 10);
        ASSERT_TRUE(page) << page.error().message;
        for (auto& o : page->objects) paged.push_back(o.key);
        token = page->next_token;
        ++pages;
    } while (!token.empty());
    EXPECT_EQ(pages, 3);
    EXPECT_EQ(paged, keys);

    auto capped = client->list(bucket, "p/", 20);
    ASSERT_FALSE(capped);
    EXPECT_EQ(capped.error().message, "s3://" + bucket + "/p/: more than 20 objects under this prefix");
}

TEST_F(S3ClientTest, DeleteRemovesTheObject) {
    ASSERT_TRUE(client->put(at("gone"), random_bytes(10, 1)));
    ASSERT_TRUE(client->remove(at("gone")));
    auto info = client->head(at("gone"));
    ASSERT_FALSE(info);
    EXPECT_EQ(info.error().kind, S3Error::Kind::not_found);
}

TEST_F(S3ClientTest, MissingBucketAndKeyEndInOneLineNamingThem) {
    const std::string endpoint = rgw().endpoint;
    Bytes out(4);
    auto r = client->get_range({"no-such-bucket-here", "k"}, 0, out);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().kind, S3Error::Kind::not_found);
    EXPECT_EQ(r.error().message, "s3://no-such-bucket-here/k: no bucket 'no-such-bucket-here' at " + endpoint +
                                     " (404 NoSuchBucket): check the bucket name and AWS_ENDPOINT_URL");
    r = client->get_range(at("no/such/key"), 0, out);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().message, "s3://" + bucket + "/no/such/key: no object 'no/such/key' in bucket '" + bucket +
                                     "' (404 NoSuchKey): check the name");
    auto info = client->head(at("no/such/key"));   // a HEAD answer has no body to name the cause
    ASSERT_FALSE(info);
    EXPECT_EQ(info.error().message, "s3://" + bucket + "/no/such/key: not found at " + endpoint +
                                        " (404): check the bucket name, the object name and AWS_ENDPOINT_URL");
    auto listed = client->list("no-such-bucket-here", "", 10);
    ASSERT_FALSE(listed);
    EXPECT_EQ(listed.error().kind, S3Error::Kind::not_found);
    EXPECT_EQ(client->stats().retries, 0u);   // a 404 is an answer, not a failure to retry
}

TEST_F(S3ClientTest, AWrongSecretEndsInOneLineNamingTheCredentials) {
    S3Config config = rgw().config();
    config.secret_access_key = "not-the-secret";
    auto bad = S3Client::create(config);
    ASSERT_TRUE(bad);
    ASSERT_TRUE(client->put(at("k"), random_bytes(4, 4)));
    Bytes out(4);
    auto r = (*bad)->get_range(at("k"), 0, out);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().kind, S3Error::Kind::access_denied);
    EXPECT_EQ(r.error().message, "s3://" + bucket + "/k: refused by " + rgw().endpoint +
                                     " (403 SignatureDoesNotMatch): check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY "
                                     "and AWS_REGION");
    auto info = (*bad)->head(at("k"));
    ASSERT_FALSE(info);
    EXPECT_EQ(info.error().message, "s3://" + bucket + "/k: refused by " + rgw().endpoint +
                                        " (403): check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION");
    EXPECT_EQ((*bad)->stats().retries, 0u);
}

TEST_F(S3ClientTest, KeysWithReservedCharactersAreSignedAndStored) {
    for (std::string key : {"with space", "plus+sign", "per%cent", "tilde~ and (parens)", "unicode-\xc3\xa9"}) {
        SCOPED_TRACE(key);
        Bytes data = random_bytes(100, key.size());
        auto put = client->put(at(key), data);
        ASSERT_TRUE(put) << put.error().message;
        auto back = client->get(at(key), 1000);
        ASSERT_TRUE(back) << back.error().message;
        EXPECT_EQ(hash(*back), hash(data));
    }
    auto listed = client->list(bucket, "p", 100);   // "per%cent" and "plus+sign" come back decoded
    ASSERT_TRUE(listed) << listed.error().message;
    ASSERT_EQ(listed->size(), 2u);
    EXPECT_EQ((*listed)[0].key, "per%cent");
    EXPECT_EQ((*listed)[1].key, "plus+sign");
}

}  // namespace
