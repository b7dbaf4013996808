// Pins the asynchronous range fetcher against the real store: many parallel
// ranges come back byte for byte, a queued fault always starts before queued
// prefetch, cancellation and promotion of queued requests, exactly one
// callback per accepted request (also when the fetcher is destroyed), retries
// through the fault proxy, and one-line refusals.
#include <condition_variable>
#include <map>
#include <mutex>

#include "remote/range_fetcher.hpp"
#include "test_util.hpp"

namespace {

using namespace ringpager::remote;
using namespace rgwtest;
using Mode = FaultProxy::Mode;

// Collects callbacks (called on the fetcher thread) and lets the test wait for them.
class Collector {
public:
    struct Outcome {
        bool ok = false;
        std::string hash_or_error;
        S3Error::Kind kind{};
    };

    RangeCallback callback() {
        return [this](uint64_t ticket, const S3Result<std::span<const std::byte>>& r) {
            std::lock_guard lock(mutex_);
            Outcome o;
            o.ok = r.ok();
            o.hash_or_error = r ? hash(*r) : mask_ms(r.error().message);
            if (!r) o.kind = r.error().kind;
            EXPECT_TRUE(outcomes_.emplace(ticket, o).second) << "ticket " << ticket << " called back twice";
            order_.push_back(ticket);
            changed_.notify_all();
        };
    }
    // Waits (bounded: a hang fails the test instead of the suite) for `count` callbacks.
    bool wait_for(size_t count) {
        std::unique_lock lock(mutex_);
        return changed_.wait_for(lock, std::chrono::seconds(60), [&] { return order_.size() >= count; });
    }
    Outcome outcome(uint64_t ticket) {
        std::lock_guard lock(mutex_);
        return outcomes_[ticket];
    }
    std::vector<uint64_t> order() {
        std::lock_guard lock(mutex_);
        return order_;
    }

private:
    std::mutex mutex_;
    std::condition_variable changed_;
    std::map<uint64_t, Outcome> outcomes_;
    std::vector<uint64_t> order_;
};

class RangeFetcherTest : public ProxyFixture {
protected:
    void SetUp() override {
        ProxyFixture::SetUp();
        if (HasFatalFailure()) return;
        data_ = random_bytes(8 << 20, 11);
        auto put = client->put(at("layer"), data_);
        ASSERT_TRUE(put) << put.error().message;
    }
    std::unique_ptr<RangeFetcher> start(RangeFetcher::Options options, S3Config config) {
        auto f = RangeFetcher::start(std::move(config), options);
        EXPECT_TRUE(f) << f.error().message;
        return f ? std::move(*f) : nullptr;
    }
    uint64_t submit(RangeFetcher& f, uint64_t offset, uint64_t length, FetchPriority priority, Collector& c) {
        auto t = f.submit({at("layer"), offset, length, priority, c.callback()});
        EXPECT_TRUE(t) << t.error().message;
        return t ? *t : 0;
    }
    std::string expected(uint64_t offset, uint64_t length) const {
        return hash(std::span(data_).subspan(offset, length));
    }
    Bytes data_;
};

TEST_F(RangeFetcherTest, ManyParallelRangesComeBackByteForByte) {
    Collector c;   // outlives the fetcher, which calls back into it until destroyed
    auto f = start({}, rgw().config());
    ASSERT_TRUE(f);
    std::mt19937_64 rng(3);
    std::map<uint64_t, std::pair<uint64_t, uint64_t>> asked;
    for (int i = 0; i < 300; ++i) {
        uint64_t length = 1 + rng() % (256 << 10);
        uint64_t offset = rng() % (data_.size() - length + 1);
        if (i == 0) offset = 0;
        if (i == 1) offset = data_.size() - length;
        auto priority = i % 3 == 0 ? FetchPriority::fault : FetchPriority::prefetch;
        asked[submit(*f, offset, length, priority, c)] = {offset, length};
    }
    ASSERT_TRUE(c.wait_for(asked.size()));
    for (auto& [ticket, range] : asked) {
        EXPECT_EQ(c.outcome(ticket).hash_or_error, expected(range.first, range.second)) << "ticket " << ticket;
    }
    auto s = f->stats();
    EXPECT_EQ(s.succeeded, asked.size());
    EXPECT_EQ(s.failed + s.cancelled + s.retries, 0u);
}

TEST_F(RangeFetcherTest, QueuedFaultsStartBeforeQueuedPrefetch) {
    Collector c;   // outlives the fetcher, which calls back into it until destroyed
    RangeFetcher::Options options;
    options.max_in_flight = 1;
    options.prefetch_max_in_flight = 1;
    options.start_paused = true;   // everything is queued before the first start
    auto f = start(options, rgw().config());
    ASSERT_TRUE(f);
    std::vector<uint64_t> prefetch, faults;
    for (int i = 0; i < 6; ++i) prefetch.push_back(submit(*f, 4096 * i, 4096, FetchPriority::prefetch, c));
    for (int i = 0; i < 3; ++i) faults.push_back(submit(*f, 65536 * i, 100, FetchPriority::fault, c));
    f->resume();
    ASSERT_TRUE(c.wait_for(9));
    std::vector<uint64_t> want = faults;
    want.insert(want.end(), prefetch.begin(), prefetch.end());
    EXPECT_EQ(c.order(), want);
}

TEST_F(RangeFetcherTest, PrefetchNeverTakesMoreThanItsShareOfTransfers) {
    Collector c;   // outlives the fetcher, which calls back into it until destroyed
    RangeFetcher::Options options;
    options.max_in_flight = 3;
    options.prefetch_max_in_flight = 1;
    options.start_paused = true;
    auto f = start(options, rgw().config());
    ASSERT_TRUE(f);
    std::mutex mutex;
    std::vector<uint32_t> others_in_flight;   // seen by each callback (nothing starts while one runs)
    RangeCallback inner = c.callback();
    for (int i = 0; i < 4; ++i) {
        auto t = f->submit({at("layer"), 4096u * i, 4096, FetchPriority::prefetch,
                            [&, inner](uint64_t ticket, const S3Result<std::span<const std::byte>>& r) {
                                {
                                    std::lock_guard lock(mutex);
                                    others_in_flight.push_back(f->stats().in_flight);
                                }
                                inner(ticket, r);
                            }});
        ASSERT_TRUE(t);
    }
    f->resume();
    ASSERT_TRUE(c.wait_for(4));
    // Three transfers were free, yet prefetch ran one at a time, in submission order.
    EXPECT_EQ(others_in_flight, (std::vector<uint32_t>{0, 0, 0, 0}));
    EXPECT_EQ(c.order(), (std::vector<uint64_t>{1, 2, 3, 4}));
}

TEST_F(RangeFetcherTest, PromoteMovesAQueuedPrefetchAmongTheFaults) {
    Collector c;   // outlives the fetcher, which calls back into it until destroyed
    RangeFetcher::Options options;
    options.max_in_flight = 1;
    options.prefetch_max_in_flight = 1;
    options.start_paused = true;
    auto f = start(options, rgw().config());
    ASSERT_TRUE(f);
    std::vector<uint64_t> t;
    for (int i = 0; i < 4; ++i) t.push_back(submit(*f, 4096 * i, 4096, FetchPriority::prefetch, c));
    uint64_t fault = submit(*f, 0, 10, FetchPriority::fault, c);
    EXPECT_TRUE(f->promote(t[2]));
    EXPECT_FALSE(f->promote(t[2]));    // already a fault request
    EXPECT_FALSE(f->promote(fault));
    EXPECT_FALSE(f->promote(999999));
    f->resume();
    ASSERT_TRUE(c.wait_for(5));
    EXPECT_EQ(c.order(), (std::vector<uint64_t>{fault, t[2], t[0], t[1], t[3]}));
}

TEST_F(RangeFetcherTest, CancelledQueuedRequestsAreCalledBackAsCancelled) {
    Collector c;   // outlives the fetcher, which calls back into it until destroyed
    RangeFetcher::Options options;
    options.start_paused = true;
    auto f = start(options, rgw().config());
    ASSERT_TRUE(f);
    std::vector<uint64_t> t;
    for (int i = 0; i < 10; ++i) t.push_back(submit(*f, 1000 * i, 1000, FetchPriority::prefetch, c));
    for (int i = 0; i < 10; i += 2) EXPECT_TRUE(f->cancel(t[i]));
    EXPECT_FALSE(f->cancel(t[0]));   // once
    EXPECT_FALSE(f->cancel(123456));
    f->resume();
    ASSERT_TRUE(c.wait_for(10));
    for (int i = 0; i < 10; ++i) {
        auto o = c.outcome(t[i]);
        if (i % 2 == 0) {
            EXPECT_EQ(o.kind, S3Error::Kind::cancelled);
            EXPECT_EQ(o.hash_or_error, "s3://" + bucket + "/layer bytes " + std::to_string(1000 * i) +
                                           "+1000: cancelled while queued");
        } else {
            EXPECT_EQ(o.hash_or_error, expected(1000 * i, 1000));
        }
    }
    EXPECT_FALSE(f->cancel(t[1]));   // finished: its callback stands
    EXPECT_EQ(f->stats().cancelled, 5u);
}

TEST_F(RangeFetcherTest, DestroyingTheFetcherCallsEveryRequestBack) {
    Collector c;   // outlives the fetcher, which calls back into it until destroyed
    RangeFetcher::Options options;
    options.start_paused = true;
    auto f = start(options, rgw().config());
    ASSERT_TRUE(f);
    for (int i = 0; i < 5; ++i) submit(*f, 0, 100, i % 2 ? FetchPriority::fault : FetchPriority::prefetch, c);
    f.reset();
    ASSERT_EQ(c.order().size(), 5u);
    for (uint64_t t = 1; t <= 5; ++t) {
        EXPECT_EQ(c.outcome(t).kind, S3Error::Kind::cancelled);
        EXPECT_EQ(c.outcome(t).hash_or_error, "s3://" + bucket + "/layer bytes 0+100: the fetcher stopped");
    }
}

TEST_F(RangeFetcherTest, FailedAttemptsAreRetriedAndFailuresNamed) {
    Collector c;   // outlives the fetcher, which calls back into it until destroyed
    auto f = start({}, proxied());
    ASSERT_TRUE(f);
    proxy->set(Mode::reset, 2);
    uint64_t ok = submit(*f, 100, 5000, FetchPriority::fault, c);
    ASSERT_TRUE(c.wait_for(1));
    EXPECT_EQ(c.outcome(ok).hash_or_error, expected(100, 5000));
    EXPECT_EQ(f->stats().retries, 2u);

    auto missing = f->submit({at("no-such-layer"), 0, 10, FetchPriority::fault, c.callback()});
    ASSERT_TRUE(missing);
    ASSERT_TRUE(c.wait_for(2));
    EXPECT_EQ(c.outcome(*missing).hash_or_error, "s3://" + bucket + "/no-such-layer: no object 'no-such-layer' in bucket '" +
                                                     bucket + "' (404 NoSuchKey): check the name");
    EXPECT_EQ(f->stats().retries, 2u);   // a 404 is not retried

    proxy->set(Mode::fail_503);
    uint64_t failing = submit(*f, 0, 10, FetchPriority::prefetch, c);
    ASSERT_TRUE(c.wait_for(3));
    EXPECT_EQ(c.outcome(failing).hash_or_error, "s3://" + bucket + "/layer: the store failed (503 SlowDown); gave up "
                                                "after 5 attempts in N ms");
}

TEST_F(RangeFetcherTest, RequestsItCannotServeAreRefusedAtOnce) {
    Collector c;   // outlives the fetcher, which calls back into it until destroyed
    RangeFetcher::Options options;
    options.max_queued = 2;
    options.max_range_bytes = 1 << 20;
    options.start_paused = true;
    auto f = start(options, rgw().config());
    ASSERT_TRUE(f);
    auto refused = [&](RangeRequest r) {
        r.done = r.done ? r.done : c.callback();
        auto t = f->submit(std::move(r));
        EXPECT_FALSE(t);
        return t ? std::string("accepted") : t.error().message;
    };
    const std::string name = "s3://" + bucket + "/layer bytes ";
    EXPECT_EQ(refused({at("layer"), 0, 0, FetchPriority::fault, {}}),
              name + "0+0: the length must be 1..1048576 bytes and the range inside 5 TiB");
    EXPECT_EQ(refused({at("layer"), 0, (1 << 20) + 1, FetchPriority::fault, {}}),
              name + "0+1048577: the length must be 1..1048576 bytes and the range inside 5 TiB");
    EXPECT_EQ(refused({{"Bad_Bucket", "k"}, 0, 1, FetchPriority::fault, {}}),
              "s3://Bad_Bucket/k bytes 0+1: not a valid bucket and object name");
    submit(*f, 0, 1, FetchPriority::fault, c);
    submit(*f, 1, 1, FetchPriority::fault, c);
    EXPECT_EQ(refused({at("layer"), 2, 1, FetchPriority::fault, {}}), name + "2+1: 2 requests are queued already");
    EXPECT_EQ(RangeFetcher::start(rgw().config(), {.max_in_flight = 2, .prefetch_max_in_flight = 3}).error().message,
              "range fetcher: max_in_flight, max_connections, max_queued and max_range_bytes must be positive, "
              "prefetch_max_in_flight at most max_in_flight");
}

}  // namespace
