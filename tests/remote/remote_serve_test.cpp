// Pins serving a layered snapshot from the object store end to end: a 3-layer
// chain pushed to the suite's Ceph RGW is restored byte-exact (every page's
// XXH3 against the flattened image) to simulated VMs through the real engine,
// lazy and prefetch, 4 KiB and 2 MiB pages, from an empty chunk cache; many
// VMs at once fetch each chunk exactly once; an engine restarted on the same
// cache directory verifies and reuses what is there and fetches nothing; a
// bounded cache evicts and still serves every page; a second cache on a
// directory in use is refused with one line; a chunk corrupted on the way is
// fetched again, once; a chunk corrupt in the store is fetched twice, then its
// pages are poisoned (never served) and the engine goes on serving; a store
// that goes away and comes back only delays the VMs, one away past the fetch
// deadline fails the fetch with one line.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/inotify.h>

#include <condition_variable>
#include <mutex>

#include "remote_serve_fixture.hpp"

using namespace ringpager;
using namespace ringpager::remote;
using namespace ringpager::testing;
using rgwtest::FaultProxy;
using rgwtest::rgw;
using rgwtest::RemoteServe;
using rgwtest::kChunkBytes;
using rgwtest::MiB;

namespace {

TEST_F(RemoteServe, ManyVmsFromAnEmptyCacheFetchEachChunkOnceThenARestartFetchesNothing) {
    for (ServeMode mode : {ServeMode::prefetch, ServeMode::lazy}) {
        SCOPED_TRACE(mode == ServeMode::lazy ? "lazy" : "prefetch");
        restore_cold_then_restarted(mode, 4, [&](ChunkCache& cache, const Source&, RunningEngine&) {
            EXPECT_EQ(cache.fetcher().stats().succeeded, referenced_chunks());
        }, {});
    }
}

// The same chain in 2 MiB blocks, served to guests with 2 MiB huge pages.
class RemoteServeHuge : public RemoteServe {
protected:
    void SetUp() override {
        ASSERT_EQ(sim::ensure_hugepages(64), "");
        set_up(2 * MiB);
    }
};

TEST_F(RemoteServeHuge, HugePageGuestsRestoreByteExactWithOneGetPerChunk) {
    for (ServeMode mode : {ServeMode::lazy, ServeMode::prefetch}) {
        SCOPED_TRACE(mode == ServeMode::lazy ? "lazy" : "prefetch");
        std::filesystem::remove_all(dir_.file("cache"));
        auto cache = open_cache(rgw().config());
        ASSERT_TRUE(cache);
        auto source = open_source(cache);
        ASSERT_TRUE(source);
        RunningEngine e = start_engine(dir_, "", mode, 2, std::chrono::seconds(30), source);
        restore(e, mode, 2, 0);
        EXPECT_EQ(cache->stats().fetches, referenced_chunks());
        EXPECT_EQ(e.engine->stats().vms_failed, 0u);
    }
}

TEST_F(RemoteServe, ABoundedCacheEvictsAndStillServesEveryPage) {
    // Two transfers at most, so the floor is 2 x 2 chunks; the cache holds 8
    // chunks, far less than the snapshot: chunks are evicted and fetched again.
    const uint64_t capacity = 8 * kChunkBytes;
    auto cache = open_cache(rgw().config(), nullptr, [&](ChunkCacheOptions& o) {
        o.capacity_bytes = capacity;
        o.fetcher.max_in_flight = 2;
        o.fetcher.prefetch_max_in_flight = 1;
    });
    ASSERT_TRUE(cache);
    ASSERT_GT(referenced_chunks(), 2 * capacity / kChunkBytes);
    auto source = open_source(cache);
    ASSERT_TRUE(source);
    RunningEngine e = start_engine(dir_, "", ServeMode::prefetch, 2, std::chrono::seconds(30), source);
    restore(e, ServeMode::prefetch, 2, 0);
    const ChunkCacheStats s = cache->stats();
    EXPECT_GT(s.evictions, 0u);
    EXPECT_LE(s.cached_bytes, capacity);
    EXPECT_GE(s.fetches, referenced_chunks());
    EXPECT_EQ(e.engine->stats().vms_failed, 0u);

    std::string error;
    EXPECT_FALSE(open_cache(rgw().config(), &error, [](ChunkCacheOptions& o) { o.capacity_bytes = kChunkBytes; }));
    EXPECT_EQ(error, "cache size 256 KiB is below the 8 MiB the fetches in flight need (2 x 16 chunks of 256 KiB)");
}

// Records the one callback of a cache request.
class WaitingSink final : public FetchSink {
public:
    void fetched(uint64_t, const std::string& error) override {
        std::lock_guard lock(mu_);
        errors_.push_back(error);
        done_.notify_all();
    }
    std::vector<std::string> wait() {
        std::unique_lock lock(mu_);
        done_.wait_for(lock, kWait, [&] { return !errors_.empty(); });
        return errors_;
    }

private:
    std::mutex mu_;
    std::condition_variable done_;
    std::vector<std::string> errors_;
};

TEST_F(RemoteServe, EvictionGivesAChunkReadSinceTheHandPassedASecondChance) {
    // Room for 4 chunks; one transfer at a time, so the floor is 2 chunks.
    auto cache = open_cache(rgw().config(), nullptr, [](ChunkCacheOptions& o) {
        o.capacity_bytes = 4 * kChunkBytes;
        o.fetcher.max_in_flight = 1;
        o.fetcher.prefetch_max_in_flight = 1;
    });
    ASSERT_TRUE(cache);
    std::string error;
    const int h = cache->add_layer(at(layer_key(m_.layers[0].id)), m_, 0, error);
    ASSERT_GE(h, 0) << error;
    ASSERT_GE(m_.layers[0].block_count, 12 * cache->chunk_slots(h));
    auto fetch = [&](uint64_t c) {
        auto sink = std::make_shared<WaitingSink>();
        const ChunkCache::ChunkRef ref{h, c};
        cache->request(std::span(&ref, 1), true, sink, c);
        EXPECT_EQ(sink->wait(), std::vector<std::string>{""});
    };
    fetch(0);
    for (uint64_t c = 1; c < 12; ++c) {
        EXPECT_TRUE(cache->ready(h, 0)) << "before chunk " << c;   // read before every eviction
        fetch(c);
    }
    const ChunkCacheStats s = cache->stats();
    EXPECT_EQ(s.evictions, 8u);                // 12 fetched, 4 fit
    EXPECT_LE(s.cached_bytes, 4 * kChunkBytes);
    EXPECT_TRUE(cache->ready(h, 0));           // never the one taken
    EXPECT_FALSE(cache->ready(h, 1));          // not read since it came: the first to go
    EXPECT_TRUE(cache->ready(h, 11));          // the newest is at the back of the ring
}

TEST_F(RemoteServe, ASecondCacheOnADirectoryInUseIsRefusedWithOneLine) {
    auto cache = open_cache(rgw().config());
    ASSERT_TRUE(cache);
    std::string error;
    EXPECT_FALSE(open_cache(rgw().config(), &error));
    EXPECT_EQ(error, "cache directory " + dir_.file("cache") + " is in use by another chunk cache (pid " +
                         std::to_string(::getpid()) + " holds " + dir_.file("cache") +
                         "/lock); give each engine its own --cache-dir");
}

TEST_F(RemoteServe, ACorruptChunkIsFetchedAgainOnceAndNeverServed) {
    ASSERT_TRUE(restore_past_one_corrupt_answer());
}

TEST_F(RemoteServe, AChunkCorruptInTheStoreIsPoisonedNeverServedAndTheEngineGoesOn) {
    auto cache = open_cache(rgw().config());
    ASSERT_TRUE(cache);
    auto source = open_source(cache);
    ASSERT_TRUE(source);
    // The base layer's object changes in the bucket after the source opened
    // (same size): its first chunk fails its checksum on every fetch.
    const S3Location base = at(layer_key(m_.layers[0].id));
    auto good = client->get(base, 1 << 30);
    ASSERT_TRUE(good);
    auto bad = *good;
    bad[m_.layers[0].data_offset_bytes + 10] ^= std::byte{0x01};
    ASSERT_TRUE(client->put(base, bad));
    RunningEngine e = start_engine(dir_, "", ServeMode::prefetch, 1, std::chrono::seconds(30), source);
    const std::string log = serve_until_poisoned(e);
    EXPECT_NE(log.find("cannot fetch the snapshot's pages "), std::string::npos) << log;
    EXPECT_NE(log.find(base.url() + " chunk 0 (bytes " + std::to_string(m_.layers[0].data_offset_bytes) + "+" +
                       std::to_string(kChunkBytes) + "): slot 0 checksum mismatch (stored " +
                       layered::hex64(m_.checksums[0]) + ", fetched 0x"),
              std::string::npos)
        << log;
    const ChunkCacheStats s = cache->stats();
    EXPECT_GE(s.chunk_failures, 1u);
    EXPECT_GE(s.refetches, s.chunk_failures);   // each failure was fetched once more first
    EXPECT_EQ(e.engine->stats().vms_failed, 0u);

    // The engine still serves: with the object right again, a new VM restores byte-exact.
    ASSERT_TRUE(client->put(base, *good));
    restore(e, ServeMode::prefetch, 1, e.engine->stats().vms_resident);
}

TEST_F(RemoteServe, AStoreThatGoesAwayAndComesBackOnlyDelaysTheVms) {
    auto cache = open_cache(proxied());
    ASSERT_TRUE(cache);
    auto source = open_source(cache);
    ASSERT_TRUE(source);
    proxy->go_away();
    RunningEngine e = start_engine(dir_, "", ServeMode::prefetch, 2, std::chrono::seconds(30), source);
    auto image = sim::ExpectedImage::open(chain_.flat);
    ASSERT_TRUE(image.ok());
    sim::Guest guest = make_guest(e.socket, {8 * MiB, 8 * MiB});
    ASSERT_TRUE(guest.connect_and_send().ok());
    // Fetches failed past the fetcher's retries and were started again.
    ASSERT_TRUE(cache->wait_until([](const ChunkCacheStats& s) { return s.restarts >= 2; }, kWait));
    ASSERT_TRUE(proxy->come_back());
    ASSERT_TRUE(e.engine->wait_until([](const EngineStats& s) { return s.vms_resident == 1; }, kWait));
    const sim::VerifyReport report = guest.verify(*image);
    EXPECT_EQ(report.mismatches, 0u) << report.describe();
    EXPECT_EQ(e.engine->stats().vms_failed, 0u);
    EXPECT_EQ(e.engine->stats().pages_poisoned, 0u);
    EXPECT_EQ(cache->stats().chunk_failures, 0u);
}

TEST_F(RemoteServe, AStoreAwayPastTheFetchDeadlineFailsTheFetchWithOneLine) {
    auto cache = open_cache(proxied(), nullptr, [](ChunkCacheOptions& o) { o.fetch_deadline = std::chrono::milliseconds(300); });
    ASSERT_TRUE(cache);
    auto source = open_source(cache);
    ASSERT_TRUE(source);
    proxy->go_away();
    RunningEngine e = start_engine(dir_, "", ServeMode::prefetch, 1, std::chrono::seconds(30), source);
    const std::string log = serve_until_poisoned(e);
    EXPECT_NE(log.find("not fetched within the fetch deadline (300 ms): "), std::string::npos) << log;
    EXPECT_NE(log.find("cannot connect to " + proxy->endpoint()), std::string::npos) << log;
    EXPECT_GE(cache->stats().chunk_failures, 1u);
    EXPECT_EQ(e.engine->stats().vms_failed, 0u);   // poisoned pages, not a failed engine
}

// A cache with a 300 ms fetch deadline on layer 0, behind a proxy that holds
// every answer for 10 minutes, far past the request timeout and the test's
// wait: only the deadline can end a fetch in time.
class HungStore : public RemoteServe {
protected:
    void SetUp() override {
        RemoteServe::SetUp();
        if (HasFatalFailure()) return;
        cache = open_cache(proxied(), nullptr,
                           [](ChunkCacheOptions& o) { o.fetch_deadline = std::chrono::milliseconds(300); });
        ASSERT_TRUE(cache);
        std::string error;
        handle = cache->add_layer(at(layer_key(m_.layers[0].id)), m_, 0, error);
        ASSERT_GE(handle, 0) << error;
        proxy->set(FaultProxy::Mode::delay, -1, 600000);
    }
    std::shared_ptr<ChunkCache> cache;
    int handle = -1;
};

TEST_F(HungStore, AStoreThatHangsFailsAWaitingFaultAtItsDeadline) {
    const int h = handle;
    auto sink = std::make_shared<WaitingSink>();
    const ChunkCache::ChunkRef ref{h, 0};
    cache->request(std::span(&ref, 1), true, sink, 1);
    const std::vector<std::string> errors = sink->wait();
    ASSERT_EQ(errors.size(), 1u);
    EXPECT_EQ(errors[0].rfind("not fetched within the fetch deadline (300 ms): " + at(layer_key(m_.layers[0].id)).url() +
                                  " bytes " + std::to_string(m_.layers[0].data_offset_bytes) + "+" +
                                  std::to_string(kChunkBytes) + ": no answer (1 attempts in ",
                              0),
              0u)
        << errors[0];
    EXPECT_EQ(cache->fetcher().stats().deadlines, 1u);
    EXPECT_EQ(cache->stats().chunk_failures, 1u);
}

TEST_F(HungStore, AFaultWaitingOnAPrefetchFetchAlsoFailsAtItsDeadline) {
    const int h = handle;
    // The chunk is fetched for prefetch (no deadline of its own), then a fault
    // waits on it: queued or already in flight, the fetch now ends at the
    // deadline, which counts from its first waiter.
    const ChunkCache::ChunkRef ref{h, 0};
    auto prefetch = std::make_shared<WaitingSink>();
    cache->request(std::span(&ref, 1), false, prefetch, 1);
    auto fault = std::make_shared<WaitingSink>();
    cache->request(std::span(&ref, 1), true, fault, 2);
    for (const auto& sink : {fault, prefetch}) {
        const std::vector<std::string> errors = sink->wait();
        ASSERT_EQ(errors.size(), 1u);
        EXPECT_EQ(errors[0].rfind("not fetched within the fetch deadline (300 ms): ", 0), 0u) << errors[0];
        EXPECT_NE(errors[0].find(": no answer (1 attempts in "), std::string::npos) << errors[0];
    }
    EXPECT_EQ(cache->fetcher().stats().deadlines, 1u);
    EXPECT_EQ(cache->stats().fetches, 1u);   // one GET for both waiters
}

// Waits (inotify, no polling) until `path` exists in its directory: created
// there, or renamed onto it (how `serve` publishes its socket).
bool wait_for_file(const std::string& path) {
    const std::string dir = std::filesystem::path(path).parent_path();
    FileDesc in(inotify_init1(IN_CLOEXEC));
    if (inotify_add_watch(in.get(), dir.c_str(), IN_CREATE | IN_MOVED_TO) < 0) return false;
    const auto deadline = std::chrono::steady_clock::now() + kWait;
    while (!std::filesystem::exists(path)) {
        pollfd p{in.get(), POLLIN, 0};
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0 || poll(&p, 1, static_cast<int>(left.count())) <= 0) return std::filesystem::exists(path);
        char buf[4096];
        (void)!read(in.get(), buf, sizeof buf);
    }
    return true;
}

TEST_F(RemoteServe, TheServeCommandRestoresFromS3AndASecondEngineOnItsCacheIsRefused) {
    const std::string ringpager = tool_path("RP_RINGPAGER"), guestsim = tool_path("RP_GUESTSIM");
    ASSERT_FALSE(ringpager.empty() || guestsim.empty()) << "run through meson test";
    // The store settings come from the environment, as for every S3 tool.
    ::setenv("AWS_ENDPOINT_URL", rgw().endpoint.c_str(), 1);
    ::setenv("AWS_ACCESS_KEY_ID", rgw().access_key_id.c_str(), 1);
    ::setenv("AWS_SECRET_ACCESS_KEY", rgw().secret_access_key.c_str(), 1);
    const std::string socket = dir_.file("serve.sock"), cache = dir_.file("cache"), url = "s3://" + bucket + "/snap";
    Child server = spawn(ringpager, {"serve", "--socket", socket, "--snapshot", url, "--cache-dir", cache, "--mode",
                                     "prefetch", "--cache-size", "1G"});
    ASSERT_TRUE(wait_for_file(socket));
    std::string guest_out;
    Child guest = spawn(guestsim, {"run", "--socket", socket, "--mem-file", chain_.flat, "--regions", "8M,8M"});
    EXPECT_EQ(guest.wait(&guest_out), 0) << guest_out;   // every page verified against the flattened image

    std::string second_out;
    Child second = spawn(ringpager, {"serve", "--socket", dir_.file("second.sock"), "--snapshot", url, "--cache-dir",
                                     cache});
    const int second_status = second.wait(&second_out);
    EXPECT_EQ(WEXITSTATUS(second_status), 1);
    EXPECT_EQ(second_out, "ringpager serve: cache directory " + cache + " is in use by another chunk cache (pid " +
                              std::to_string(server.pid) + " holds " + cache +
                              "/lock); give each engine its own --cache-dir\n");
    ::kill(server.pid, SIGTERM);
    std::string server_out;
    const int status = server.wait(&server_out);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << server_out;
    EXPECT_NE(server_out.find("layered snapshot " + url), std::string::npos) << server_out;
}

TEST_F(RemoteServe, AMissingSnapshotOrLayerIsOneLineAtOpen) {
    auto cache = open_cache(rgw().config());
    ASSERT_TRUE(cache);
    std::string error;
    EXPECT_FALSE(open_remote_source(*client, at("nope"), cache, {}, error));
    EXPECT_NE(error.find("s3://" + bucket + "/nope"), std::string::npos) << error;
    EXPECT_EQ(error.find('\n'), std::string::npos) << error;
    ASSERT_TRUE(client->remove(at(layer_key(m_.layers[1].id))));
    EXPECT_FALSE(open_remote_source(*client, at("snap"), cache, {}, error));
    EXPECT_EQ(error.rfind("s3://" + bucket + "/snap: layer 1: ", 0), 0u) << error;
}

}  // namespace
