// Pins how the client meets a misbehaving network (FaultProxy in front of the
// real store): resets, 503s and slow answers are retried and recover; past
// the cap it gives up with one line naming the cause and the attempts; an
// answer cut short is an error, never short bytes; a flipped byte is not the
// client's to catch (the caller's checksum does).
#include "test_util.hpp"

namespace {

using namespace ringpager::remote;
using namespace rgwtest;
using Mode = FaultProxy::Mode;

class RetryTest : public ProxyFixture {
protected:
    void SetUp() override {
        ProxyFixture::SetUp();
        if (HasFatalFailure()) return;
        data_ = random_bytes(300000, 5);
        auto put = client->put(at("obj"), data_);
        ASSERT_TRUE(put) << put.error().message;
    }
    // GETs the object through `c`; the bytes' hash or the error line.
    std::string fetch(S3Client& c) {
        Bytes out(data_.size());
        auto r = c.get_range(at("obj"), 0, out);
        return r ? hash(out) : "error: " + mask_ms(r.error().message);
    }
    std::string name() const { return "s3://" + bucket + "/obj"; }
    Bytes data_;
};

TEST_F(RetryTest, ResetConnectionsAreRetriedUntilOneGetsThrough) {
    auto c = proxied_client(proxied());
    ASSERT_TRUE(c);
    proxy->set(Mode::reset, 2);
    EXPECT_EQ(fetch(*c), hash(data_));
    EXPECT_EQ(proxy->faults_applied(), 2u);
    EXPECT_EQ(c->stats().retries, 2u);
}

TEST_F(RetryTest, A503IsRetried) {
    auto c = proxied_client(proxied());
    ASSERT_TRUE(c);
    proxy->set(Mode::fail_503, 3);
    EXPECT_EQ(fetch(*c), hash(data_));
    EXPECT_EQ(c->stats().retries, 3u);
}

TEST_F(RetryTest, ADelayWithinTheTimeoutIsOnlySlower) {
    auto c = proxied_client(proxied());
    ASSERT_TRUE(c);
    proxy->set(Mode::delay, 1, 300);
    EXPECT_EQ(fetch(*c), hash(data_));
    EXPECT_EQ(c->stats().retries, 0u);
}

TEST_F(RetryTest, AnAnswerLaterThanTheTimeoutIsRetried) {
    S3Config config = proxied();
    config.request_timeout_ms = 150;
    auto c = proxied_client(config);
    ASSERT_TRUE(c);
    proxy->set(Mode::delay, 1, 5000);
    EXPECT_EQ(fetch(*c), hash(data_));
    EXPECT_EQ(c->stats().retries, 1u);
}

TEST_F(RetryTest, GivesUpAfterTheCapWithOneLine) {
    S3Config config = proxied();
    config.retry.max_attempts = 3;
    auto c = proxied_client(config);
    ASSERT_TRUE(c);
    proxy->set(Mode::reset);
    EXPECT_EQ(fetch(*c), "error: " + name() + ": Recv failure: Connection reset by peer (talking to " +
                             proxy->endpoint() + "); gave up after 3 attempts in N ms");
    proxy->set(Mode::fail_503);
    EXPECT_EQ(fetch(*c), "error: " + name() + ": the store failed (503 SlowDown); gave up after 3 attempts in N ms");
    EXPECT_EQ(c->stats().retries, 4u);
}

TEST_F(RetryTest, AnAnswerCutShortIsAnErrorNeverShortBytes) {
    S3Config config = proxied();
    config.retry.max_attempts = 2;
    auto c = proxied_client(config);
    ASSERT_TRUE(c);
    proxy->set(Mode::truncate, -1, 1000);
    EXPECT_EQ(fetch(*c), "error: " + name() + ": the answer was cut short after 1000 bytes (transfer closed with " +
                             std::to_string(data_.size() - 1000) +
                             " bytes remaining to read); gave up after 2 attempts in N ms");
    proxy->set(Mode::truncate, 1, 1000);   // once: the retry gets it all
    EXPECT_EQ(fetch(*c), hash(data_));
}

TEST_F(RetryTest, AFlippedByteIsLeftToTheCallersChecksum) {
    auto c = proxied_client(proxied());
    ASSERT_TRUE(c);
    proxy->set(Mode::corrupt, 1, 4242);
    Bytes out(data_.size());
    auto r = c->get_range(at("obj"), 0, out);
    ASSERT_TRUE(r) << r.error().message;   // the length is right: the client cannot tell
    size_t differing = 0;
    for (size_t i = 0; i < out.size(); ++i) differing += out[i] != data_[i];
    EXPECT_EQ(differing, 1u);
    EXPECT_NE(out[4242], data_[4242]);
}

TEST_F(RetryTest, AStoreThatGoesAwayIsNamedAndOneThatComesBackIsUsedAgain) {
    S3Config config = proxied();
    config.retry.max_attempts = 2;
    auto c = proxied_client(config);
    ASSERT_TRUE(c);
    EXPECT_EQ(fetch(*c), hash(data_));
    proxy->go_away();
    EXPECT_EQ(fetch(*c), "error: " + name() + ": cannot connect to " + proxy->endpoint() +
                             " (Failed to connect to 127.0.0.1 port " + std::to_string(proxy->port()) +
                             " after N ms: Couldn't connect to server): check AWS_ENDPOINT_URL and that the store is "
                             "running; gave up after 2 attempts in N ms");
    ASSERT_TRUE(proxy->come_back());
    EXPECT_EQ(fetch(*c), hash(data_));
}

}  // namespace
