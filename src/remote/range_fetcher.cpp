// The range fetcher's thread: queues by priority, a slot per transfer (its
// easy handle, Exchange and buffer), the multi loop, retries and stopping.
#include "remote/range_fetcher.hpp"

#include <curl/curl.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <list>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "remote/s3_exchange.hpp"

namespace ringpager::remote {
namespace {

using Clock = std::chrono::steady_clock;

struct Pending {
    uint64_t ticket = 0;
    RangeRequest request;
    unsigned attempts = 0;           // made so far
    Clock::time_point not_before{};  // backoff before the next attempt
    Clock::time_point first_attempt{};
    std::string last_error;          // the last failed attempt's cause, for a deadline's message
};

// One transfer: owned by the fetcher thread, never moved while in flight.
struct Slot {
    CURL* easy = nullptr;
    bool busy = false;
    Pending pending;
    S3Request request;
    std::unique_ptr<Exchange> exchange;
    std::unique_ptr<std::byte[]> buffer;
    uint64_t capacity = 0;
};

S3Error cancelled_error(const RangeRequest& r, const char* why) {
    return S3Error{S3Error::Kind::cancelled, 0,
                   r.object.url() + " bytes " + std::to_string(r.offset) + "+" + std::to_string(r.length) + ": " + why};
}

S3Error deadline_error(const Pending& p, bool in_flight) {
    const RangeRequest& r = p.request;
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - p.first_attempt).count();
    std::string message = p.last_error.empty()
                              ? r.object.url() + " bytes " + std::to_string(r.offset) + "+" +
                                    std::to_string(r.length) + ": " + (in_flight ? "no answer" : "not started")
                              : p.last_error;
    if (p.attempts > 0) message += " (" + std::to_string(p.attempts) + " attempts in " + std::to_string(ms) + " ms)";
    return S3Error{S3Error::Kind::deadline, 0, std::move(message)};
}

}  // namespace

struct RangeFetcher::State {
    S3Config config;
    Options options;
    CURLM* multi = nullptr;
    std::vector<std::unique_ptr<Slot>> slots;
    std::thread thread;
    uint64_t jitter = 0;

    mutable std::mutex mutex;   // guards everything below
    std::list<Pending> queues[2];   // by FetchPriority: fault, prefetch
    struct Where {
        int queue;
        std::list<Pending>::iterator it;
    };
    std::unordered_map<uint64_t, Where> queued;
    std::vector<Pending> cancelled;   // to be called back by the thread
    uint64_t next_ticket = 1;
    bool paused = false;
    bool stopping = false;
    uint32_t in_flight[2] = {0, 0};
    // Prefetch requests in flight that promote() found there: a fault waits
    // on them, so their deadline counts. Only the fetcher thread removes.
    std::unordered_set<uint64_t> started;   // tickets in flight
    std::unordered_set<uint64_t> urgent;    // of those, promoted
    RangeFetcherStats stats;

    ~State() {
        for (auto& s : slots) curl_easy_cleanup(s->easy);
        if (multi) curl_multi_cleanup(multi);
    }

    void run();
    void start_ready(Clock::time_point now);
    void begin(Slot& slot, Pending pending);
    void finish(Slot& slot, CURLcode code);
    void stop_all();
    void end_overdue(Clock::time_point now);
    int poll_timeout_ms(Clock::time_point now);
    void wake() { curl_multi_wakeup(multi); }
};

S3Result<std::unique_ptr<RangeFetcher>> RangeFetcher::start(S3Config config, Options options) {
    if (auto e = config.validate(); !e.empty()) return invalid_argument(e);
    if (options.max_in_flight == 0 || options.max_connections == 0 || options.max_queued == 0 ||
        options.max_range_bytes == 0 || options.prefetch_max_in_flight > options.max_in_flight) {
        return invalid_argument("range fetcher: max_in_flight, max_connections, max_queued and max_range_bytes must be "
                                "positive, prefetch_max_in_flight at most max_in_flight");
    }
    if (auto e = init_curl(); !e.empty()) return invalid_argument(e);
    auto state = std::make_unique<State>();
    state->config = std::move(config);
    state->options = options;
    state->paused = options.start_paused;
    state->jitter = std::random_device{}();
    state->multi = curl_multi_init();
    if (!state->multi) return invalid_argument("libcurl cannot create a multi handle (out of memory)");
    curl_multi_setopt(state->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, static_cast<long>(options.max_connections));
    curl_multi_setopt(state->multi, CURLMOPT_MAX_HOST_CONNECTIONS, static_cast<long>(options.max_connections));
    curl_multi_setopt(state->multi, CURLMOPT_MAXCONNECTS, static_cast<long>(options.max_connections));
    curl_multi_setopt(state->multi, CURLMOPT_PIPELINING, CURLPIPE_NOTHING);
    for (uint32_t i = 0; i < options.max_in_flight; ++i) {
        auto slot = std::make_unique<Slot>();
        slot->easy = curl_easy_init();
        if (!slot->easy) return invalid_argument("libcurl cannot create a handle (out of memory)");
        state->slots.push_back(std::move(slot));
    }
    State* raw = state.get();
    state->thread = std::thread([raw] { raw->run(); });
    return std::unique_ptr<RangeFetcher>(new RangeFetcher(std::move(state)));
}

RangeFetcher::RangeFetcher(std::unique_ptr<State> state) : state_(std::move(state)) {}

RangeFetcher::~RangeFetcher() {
    {
        std::lock_guard lock(state_->mutex);
        state_->stopping = true;
    }
    state_->wake();
    state_->thread.join();
}

S3Result<uint64_t> RangeFetcher::submit(RangeRequest request) {
    State& s = *state_;
    const std::string name = request.object.url() + " bytes " + std::to_string(request.offset) + "+" +
                             std::to_string(request.length);
    if (!valid_bucket_name(request.object.bucket) || !valid_key(request.object.key)) {
        return invalid_argument(name + ": not a valid bucket and object name");
    }
    if (request.length == 0 || request.length > s.options.max_range_bytes ||
        request.offset > max_object_bytes - request.length) {
        return invalid_argument(name + ": the length must be 1.." + std::to_string(s.options.max_range_bytes) +
                                " bytes and the range inside 5 TiB");
    }
    if (!request.done) return invalid_argument(name + ": no callback");
    uint64_t ticket;
    {
        std::lock_guard lock(s.mutex);
        if (s.stopping) return S3Error{S3Error::Kind::cancelled, 0, name + ": the range fetcher is stopping"};
        if (s.queued.size() >= s.options.max_queued) {
            return S3Error{S3Error::Kind::client, 0,
                           name + ": " + std::to_string(s.options.max_queued) + " requests are queued already"};
        }
        ticket = s.next_ticket++;
        int q = request.priority == FetchPriority::fault ? 0 : 1;
        s.queues[q].push_back(Pending{ticket, std::move(request), 0, {}, {}, {}});
        s.queued[ticket] = {q, std::prev(s.queues[q].end())};
        ++s.stats.submitted;
    }
    s.wake();
    return ticket;
}

bool RangeFetcher::cancel(uint64_t ticket) {
    State& s = *state_;
    {
        std::lock_guard lock(s.mutex);
        auto found = s.queued.find(ticket);
        if (found == s.queued.end()) return false;
        s.cancelled.push_back(std::move(*found->second.it));
        s.queues[found->second.queue].erase(found->second.it);
        s.queued.erase(found);
    }
    s.wake();
    return true;
}

bool RangeFetcher::promote(uint64_t ticket) {
    State& s = *state_;
    std::lock_guard lock(s.mutex);
    auto found = s.queued.find(ticket);
    if (found == s.queued.end()) {
        if (s.started.count(ticket) != 0) s.urgent.insert(ticket);   // in flight: its deadline counts from now on
        return false;
    }
    if (found->second.queue != 1) return false;
    found->second.it->request.priority = FetchPriority::fault;
    s.queues[0].splice(s.queues[0].end(), s.queues[1], found->second.it);
    found->second.queue = 0;   // a list splice keeps the iterator valid
    return true;
}

void RangeFetcher::resume() {
    {
        std::lock_guard lock(state_->mutex);
        state_->paused = false;
    }
    state_->wake();
}

RangeFetcherStats RangeFetcher::stats() const {
    std::lock_guard lock(state_->mutex);
    RangeFetcherStats out = state_->stats;
    out.in_flight = state_->in_flight[0] + state_->in_flight[1];
    out.queued_fault = static_cast<uint32_t>(state_->queues[0].size());
    out.queued_prefetch = static_cast<uint32_t>(state_->queues[1].size());
    return out;
}

void RangeFetcher::State::run() {
    for (;;) {
        std::vector<Pending> to_cancel;
        {
            std::lock_guard lock(mutex);
            to_cancel.swap(cancelled);
            if (stopping) break;
        }
        for (Pending& p : to_cancel) {
            {
                std::lock_guard lock(mutex);
                ++stats.cancelled;
            }
            p.request.done(p.ticket, cancelled_error(p.request, "cancelled while queued"));
        }
        auto now = Clock::now();
        end_overdue(now);
        start_ready(now);
        int running = 0;
        curl_multi_perform(multi, &running);
        int left = 0;
        bool freed = false;
        while (CURLMsg* msg = curl_multi_info_read(multi, &left)) {
            if (msg->msg != CURLMSG_DONE) continue;
            for (auto& slot : slots) {
                if (slot->busy && slot->easy == msg->easy_handle) {
                    CURLcode code = msg->data.result;
                    curl_multi_remove_handle(multi, slot->easy);   // msg is invalid from here on
                    finish(*slot, code);
                    freed = true;
                    break;
                }
            }
        }
        if (freed) continue;   // a transfer is free: start the next request before waiting
        curl_multi_poll(multi, nullptr, 0, poll_timeout_ms(Clock::now()), nullptr);
    }
    stop_all();
}

// Starts queued requests on free slots: every ready fault first, then
// prefetch up to its share. A request waiting out its backoff is skipped.
void RangeFetcher::State::start_ready(Clock::time_point now) {
    for (;;) {
        Slot* free_slot = nullptr;
        for (auto& slot : slots) {
            if (!slot->busy) {
                free_slot = slot.get();
                break;
            }
        }
        if (!free_slot) return;
        Pending next;
        {
            std::lock_guard lock(mutex);
            if (paused || stopping) return;
            std::list<Pending>* from = nullptr;
            std::list<Pending>::iterator it;
            for (int q = 0; q < 2 && !from; ++q) {
                if (q == 1 && in_flight[1] >= options.prefetch_max_in_flight) break;
                for (it = queues[q].begin(); it != queues[q].end(); ++it) {
                    if (it->not_before <= now) {
                        from = &queues[q];
                        break;
                    }
                }
            }
            if (!from) return;
            next = std::move(*it);
            queued.erase(next.ticket);
            from->erase(it);
            ++in_flight[next.request.priority == FetchPriority::fault ? 0 : 1];
            started.insert(next.ticket);
        }
        begin(*free_slot, std::move(next));
    }
}

void RangeFetcher::State::begin(Slot& slot, Pending pending) {
    slot.busy = true;
    slot.pending = std::move(pending);
    const RangeRequest& r = slot.pending.request;
    if (slot.capacity < r.length) {
        slot.buffer.reset(new std::byte[r.length]);   // grows to the largest range seen, at most max_range_bytes
        slot.capacity = r.length;
    }
    if (slot.pending.attempts == 0) slot.pending.first_attempt = Clock::now();
    ++slot.pending.attempts;
    slot.request = S3Request{};
    slot.request.location = r.object;
    slot.request.ranged = true;
    slot.request.range_offset = r.offset;
    slot.request.range_length = r.length;
    slot.request.into = std::span<std::byte>(slot.buffer.get(), r.length);
    slot.exchange = std::make_unique<Exchange>(config, slot.request);
    if (auto e = slot.exchange->attach(slot.easy); !e.empty()) {
        finish(slot, CURLE_OUT_OF_MEMORY);
        return;
    }
    if (curl_multi_add_handle(multi, slot.easy) != CURLM_OK) finish(slot, CURLE_FAILED_INIT);
}

// A transfer ended: retry it later, or call back with its bytes or its error.
void RangeFetcher::State::finish(Slot& slot, CURLcode code) {
    auto result = slot.exchange->finish(code);
    Pending& p = slot.pending;
    const int q = p.request.priority == FetchPriority::fault ? 0 : 1;
    bool retry = !result && result.error().retryable() && p.attempts < config.retry.max_attempts;
    {
        std::lock_guard lock(mutex);
        --in_flight[q];
        started.erase(p.ticket);
        if (urgent.erase(p.ticket) != 0) p.request.priority = FetchPriority::fault;   // promoted while in flight
        if (retry && !stopping) {
            const int again = p.request.priority == FetchPriority::fault ? 0 : 1;
            ++stats.retries;
            p.not_before = Clock::now() + std::chrono::milliseconds(config.retry.delay_ms(p.attempts + 1, next_random(jitter)));
            p.last_error = result.error().message;
            uint64_t ticket = p.ticket;
            queues[again].push_front(std::move(p));
            queued[ticket] = {again, queues[again].begin()};
            slot.busy = false;
            return;
        }
        if (result) {
            ++stats.succeeded;
            stats.bytes += p.request.length;
        } else {
            ++stats.failed;
        }
    }
    Pending done = std::move(p);
    slot.busy = false;
    if (result) {
        done.request.done(done.ticket, std::span<const std::byte>(slot.buffer.get(), done.request.length));
        return;
    }
    S3Error error = result.error();
    if (done.attempts > 1) {
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - done.first_attempt).count();
        error.message += "; gave up after " + std::to_string(done.attempts) + " attempts in " + std::to_string(ms) + " ms";
    }
    done.request.done(done.ticket, error);
}

int RangeFetcher::State::poll_timeout_ms(Clock::time_point now) {
    std::lock_guard lock(mutex);
    if (!cancelled.empty() || stopping) return 0;
    int timeout = 1000;
    if (paused) return timeout;
    auto wake_at = [&](Clock::time_point at) {
        if (at == Clock::time_point::max()) return;
        auto ms = std::chrono::ceil<std::chrono::milliseconds>(at - now).count();
        timeout = std::min<int>(timeout, static_cast<int>(std::clamp<long>(ms, 0, 1000)));
    };
    for (int q = 0; q < 2; ++q) {
        for (auto& p : queues[q]) {
            if (q == 0) wake_at(p.request.deadline);   // only fault requests end at their deadline
            if (p.attempts > 0) wake_at(p.not_before);   // retried requests wait at the head of their queue
        }
    }
    for (auto& slot : slots) {
        if (slot->busy && (slot->pending.request.priority == FetchPriority::fault ||
                           urgent.count(slot->pending.ticket) != 0)) {
            wake_at(slot->pending.request.deadline);
        }
    }
    return timeout;
}

// Ends every fault request whose deadline passed: in flight (the transfer
// is abandoned, its connection closed by libcurl) or queued. Prefetch
// requests are left alone: a prefetch backlog queued behind a busy store is
// throughput, not a hang, and ending it would poison pages nobody waits on
// yet (a promoted request is a fault request from then on).
void RangeFetcher::State::end_overdue(Clock::time_point now) {
    for (auto& slot : slots) {
        if (!slot->busy || slot->pending.request.deadline > now) continue;
        if (slot->pending.request.priority != FetchPriority::fault) {
            std::lock_guard lock(mutex);
            if (urgent.count(slot->pending.ticket) == 0) continue;
        }
        curl_multi_remove_handle(multi, slot->easy);
        Pending done = std::move(slot->pending);
        slot->busy = false;
        {
            std::lock_guard lock(mutex);
            started.erase(done.ticket);
            urgent.erase(done.ticket);
            --in_flight[done.request.priority == FetchPriority::fault ? 0 : 1];
            ++stats.failed;
            ++stats.deadlines;
        }
        done.request.done(done.ticket, deadline_error(done, true));
    }
    std::vector<Pending> overdue;
    {
        std::lock_guard lock(mutex);
        {
            auto& queue = queues[0];   // fault requests
            for (auto it = queue.begin(); it != queue.end();) {
                if (it->request.deadline > now) {
                    ++it;
                    continue;
                }
                queued.erase(it->ticket);
                overdue.push_back(std::move(*it));
                it = queue.erase(it);
                ++stats.failed;
                ++stats.deadlines;
            }
        }
    }
    for (Pending& p : overdue) p.request.done(p.ticket, deadline_error(p, false));
}

// The destructor's end: every request still here is called back as cancelled.
void RangeFetcher::State::stop_all() {
    for (auto& slot : slots) {
        if (!slot->busy) continue;
        curl_multi_remove_handle(multi, slot->easy);
        slot->busy = false;
        {
            std::lock_guard lock(mutex);
            ++stats.cancelled;
        }
        slot->pending.request.done(slot->pending.ticket, cancelled_error(slot->pending.request, "the fetcher stopped"));
    }
    std::vector<Pending> left;
    {
        std::lock_guard lock(mutex);
        for (auto& p : cancelled) left.push_back(std::move(p));
        for (auto& queue : queues) {
            for (auto& p : queue) left.push_back(std::move(p));
            queue.clear();
        }
        cancelled.clear();
        queued.clear();
        started.clear();
        urgent.clear();
        stats.cancelled += left.size();
    }
    for (Pending& p : left) p.request.done(p.ticket, cancelled_error(p.request, "the fetcher stopped"));
}

}  // namespace ringpager::remote
