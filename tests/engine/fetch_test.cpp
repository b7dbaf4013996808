// Pins the asynchronous page source (PageSource::plan/fetch): pages that are
// not here yet are fetched, stay in flight meanwhile, and are then read and
// served byte for byte, by faults and by the prefetcher (with a bounded
// number of fetches in flight); a fetch that fails fails that VM loudly.
// The source here is two-tiered like an object store behind a chunk cache:
// 1 MiB chunks are "remote" until a fetcher thread, driven by the test,
// marks them local.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <set>
#include <thread>

#include "common/engine_fixture.hpp"
#include "common/process.hpp"
#include "pager/vm_pager.hpp"

using namespace ringpager;
using namespace ringpager::testing;

namespace {

constexpr uint64_t MiB = 1024 * 1024;
constexpr uint64_t kChunk = MiB;

class TwoTierSource final : public PageSource {
public:
    explicit TwoTierSource(std::unique_ptr<PageSource> local) : local_(std::move(local)) {}
    ~TwoTierSource() override { stop(); }

    uint64_t size_bytes() const override { return local_->size_bytes(); }
    uint64_t block_size_bytes() const override { return local_->block_size_bytes(); }
    std::span<const int> file_fds() const override { return local_->file_fds(); }
    SourceExtent lookup(uint64_t offset, uint64_t max) const override { return local_->lookup(offset, max); }
    std::string describe() const override { return "two-tier " + local_->describe(); }

    ReadPlan plan(uint64_t offset, uint64_t max) const override {
        const uint64_t chunk = offset / kChunk;
        const uint64_t in_chunk = std::min(max, (chunk + 1) * kChunk - offset);
        {
            std::lock_guard lock(mu_);
            if (!ready_.count(chunk)) return ReadPlan{ReadPlan::Kind::fetch, 0, 0, in_chunk};
        }
        return local_->plan(offset, in_chunk);
    }

    void fetch(uint64_t offset, uint64_t length, std::shared_ptr<FetchSink> sink, uint64_t cookie,
               FetchFor why) const override {
        std::lock_guard lock(mu_);
        if (why == FetchFor::prefetch) prefetch_fetches_++;
        queue_.push_back({offset, length, std::move(sink), cookie});
        in_flight_++;
        max_in_flight_ = std::max(max_in_flight_, in_flight_);
        fetches_++;
        work_.notify_one();
    }

    // A fetcher thread: completes every fetch (failing them all if `fail`).
    void serve_fetches(bool fail) {
        fetcher_ = std::thread([this, fail] {
            std::unique_lock lock(mu_);
            for (;;) {
                work_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
                if (queue_.empty()) return;
                Request r = std::move(queue_.front());
                queue_.pop_front();
                if (!fail)
                    for (uint64_t c = r.offset / kChunk; c <= (r.offset + r.length - 1) / kChunk; c++) ready_.insert(c);
                in_flight_--;
                lock.unlock();
                r.sink->fetched(r.cookie, fail ? "injected failure" : "");
                lock.lock();
            }
        });
    }
    void stop() {
        {
            std::lock_guard lock(mu_);
            stopping_ = true;
        }
        work_.notify_one();
        if (fetcher_.joinable()) fetcher_.join();
    }
    uint64_t fetches() const {
        std::lock_guard lock(mu_);
        return fetches_;
    }
    uint64_t prefetch_fetches() const {
        std::lock_guard lock(mu_);
        return prefetch_fetches_;
    }
    uint64_t max_in_flight() const {
        std::lock_guard lock(mu_);
        return max_in_flight_;
    }

private:
    struct Request {
        uint64_t offset, length;
        std::shared_ptr<FetchSink> sink;
        uint64_t cookie;
    };
    std::unique_ptr<PageSource> local_;
    mutable std::mutex mu_;
    mutable std::condition_variable work_;
    mutable std::deque<Request> queue_;
    mutable std::set<uint64_t> ready_;
    mutable uint64_t fetches_ = 0, prefetch_fetches_ = 0, in_flight_ = 0, max_in_flight_ = 0;
    bool stopping_ = false;
    std::thread fetcher_;
};

class FetchTest : public ::testing::Test {
protected:
    void SetUp() override {
        mem = make_image(dir, "mem", 16 * MiB, 0.3, 8);
        image = std::make_unique<sim::ExpectedImage>(std::move(sim::ExpectedImage::open(mem).value()));
        std::string error;
        auto local = open_raw_source(mem, error);
        ASSERT_TRUE(local) << error;
        source = std::make_shared<TwoTierSource>(std::move(local));
    }
    void start(ServeMode mode, bool kill_on_failure = false) {
        e = start_engine(dir, mem, mode, 1, std::chrono::seconds(30), source,
                         [&](EngineConfig& c) { c.kill_on_failure = kill_on_failure; });
        ASSERT_TRUE(e.engine);
    }
    void TearDown() override {
        e.engine.reset();
        source->stop();
    }

    TempDir dir;
    std::string mem;
    std::unique_ptr<sim::ExpectedImage> image;
    std::shared_ptr<TwoTierSource> source;
    RunningEngine e;
};

TEST_F(FetchTest, FaultsWaitForTheirChunksAndAreServedByteForByte) {
    source->serve_fetches(false);
    start(ServeMode::lazy);
    sim::Guest guest = make_guest(e.socket, {8 * MiB, 8 * MiB});
    ASSERT_TRUE(guest.connect_and_send().ok());
    guest.touch(sim::Pattern::random, 2, 1.0, 4);
    const sim::VerifyReport report = guest.verify(*image);
    EXPECT_EQ(report.mismatches, 0u) << report.describe();
    EXPECT_GE(source->fetches(), 16u);  // every chunk had to come in first
    EXPECT_EQ(source->prefetch_fetches(), 0u);   // lazy: every fetch is asked for by a fault
    EXPECT_EQ(e.engine->stats().vms_failed, 0u);
}

TEST_F(FetchTest, ThePrefetcherFetchesEverythingWithABoundedNumberInFlight) {
    source->serve_fetches(false);
    start(ServeMode::prefetch);
    sim::Guest guest = make_guest(e.socket, {16 * MiB});
    ASSERT_TRUE(guest.connect_and_send().ok());
    ASSERT_TRUE(e.engine->wait_until([](const EngineStats& s) { return s.vms_resident == 1; }, kWait));
    EXPECT_LE(source->max_in_flight(), VmPager::kMaxPrefetchFetches + 2u);  // a fault or two may add their own
    EXPECT_GT(source->prefetch_fetches(), 0u);   // the prefetcher's own fetches say so
    const sim::VerifyReport report = guest.verify(*image);  // everything is resident: no fault left
    EXPECT_EQ(report.mismatches, 0u) << report.describe();
}

TEST_F(FetchTest, AFailedFetchFailsTheVmLoudly) {
    const std::string guestsim = tool_path("RP_GUESTSIM");
    ASSERT_FALSE(guestsim.empty());
    source->serve_fetches(true);
    start(ServeMode::lazy, true);
    ::testing::internal::CaptureStderr();
    Child vm = spawn(guestsim, {"run", "--socket", e.socket, "--mem-file", mem, "--regions", "16M"});
    const int status = vm.wait();
    ASSERT_TRUE(e.engine->wait_released(1, kWait));
    const std::string log = ::testing::internal::GetCapturedStderr();
    ASSERT_TRUE(WIFSIGNALED(status)) << log;
    EXPECT_EQ(WTERMSIG(status), SIGKILL);
    EXPECT_NE(log.find("cannot fetch the snapshot's pages "), std::string::npos) << log;
    EXPECT_NE(log.find(": injected failure"), std::string::npos) << log;
    EXPECT_EQ(e.engine->stats().vms_failed, 1u);
}

}  // namespace
