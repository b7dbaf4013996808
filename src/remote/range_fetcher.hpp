// RangeFetcher: asynchronous byte-range GETs from the object store for the
// engine. One thread owns a libcurl multi handle with a bounded pool of
// kept-alive connections; any thread may submit.
//
// The contract a chunk cache builds on (DESIGN.md "Remote snapshots"):
//  - submit() is thread-safe and never blocks on the network. It returns a
//    ticket, or refuses at once (bad request, queue full, stopping) with no
//    callback. Every accepted request gets exactly one callback, on the
//    fetcher thread: the bytes (exactly `length`), or one error line after
//    the retries, or kind `cancelled` (cancel() of a queued request, or the
//    fetcher being destroyed).
//  - The bytes are lent for the callback's duration only (the fetcher reuses
//    its buffers): verify them against their checksum there (the fetcher does
//    not hash), write them to the cache, then post "chunk ready" to each
//    waiting reactor's mailbox (FetchSink::fetched). Keep the callback short:
//    while it runs no other transfer progresses. It may call submit, cancel
//    and promote, never destroy the fetcher; whatever it writes into must
//    outlive the fetcher (the destructor calls back what is still pending).
//  - Priorities: a queued fault request always starts before any queued
//    prefetch request, and prefetch requests never hold more than
//    `prefetch_max_in_flight` of the `max_in_flight` transfers, so a fault
//    finds a free transfer unless faults alone fill them. A fault that finds
//    its chunk already queued as prefetch calls promote(ticket).
//  - One request per chunk: the fetcher does not merge duplicates; the cache
//    keeps one ticket per missing chunk and its own list of waiters.
//  - Failed attempts (5xx, 429, resets, timeouts, answers cut short) are
//    retried with the S3Config's backoff; meanwhile the request waits at the
//    head of its queue, and other requests go ahead.
//  - A fault request may carry a deadline: when it passes, queued (also
//    waiting out a backoff) or in flight, the transfer is abandoned and the
//    request called back with kind `deadline` and the last attempt's cause,
//    at the deadline (the thread's poll wakes for it), not when a hung
//    transfer would time out. A prefetch request's deadline counts once
//    promote() was called for it, queued or in flight.
//  - Memory: at most max_in_flight buffers of at most max_range_bytes.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>

#include "remote/s3_config.hpp"
#include "remote/s3_error.hpp"
#include "remote/s3_url.hpp"

namespace ringpager::remote {

enum class FetchPriority : uint8_t { fault, prefetch };

// Called once per accepted request, on the fetcher thread.
using RangeCallback = std::function<void(uint64_t ticket, const S3Result<std::span<const std::byte>>& bytes)>;

struct RangeRequest {
    S3Location object;
    uint64_t offset = 0;
    uint64_t length = 0;   // 1 .. Options::max_range_bytes
    FetchPriority priority = FetchPriority::prefetch;
    RangeCallback done;
    // Past it, a fault request ends with kind `deadline` (max: none).
    std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
};

struct RangeFetcherStats {
    uint64_t submitted = 0;
    uint64_t succeeded = 0;
    uint64_t failed = 0;
    uint64_t cancelled = 0;
    uint64_t deadlines = 0;   // requests ended by their deadline (counted in failed too)
    uint64_t retries = 0;
    uint64_t bytes = 0;
    uint32_t in_flight = 0;
    uint32_t queued_fault = 0;
    uint32_t queued_prefetch = 0;
};

class RangeFetcher {
public:
    struct Options {
        uint32_t max_in_flight = 16;            // transfers at once
        uint32_t prefetch_max_in_flight = 12;   // of those, prefetch at most (the rest wait for faults)
        uint32_t max_connections = 16;          // kept-alive connections in the pool
        uint32_t max_queued = 1 << 16;          // requests waiting; submit() refuses beyond
        uint64_t max_range_bytes = 64 << 20;
        bool start_paused = false;              // start nothing until resume()
    };

    // Validates config and options and starts the fetcher thread.
    static S3Result<std::unique_ptr<RangeFetcher>> start(S3Config config, Options options);
    // Stops the thread; queued and in-flight requests are called back as cancelled first.
    ~RangeFetcher();
    RangeFetcher(const RangeFetcher&) = delete;
    RangeFetcher& operator=(const RangeFetcher&) = delete;

    // The ticket (> 0), or why the request was refused (then no callback).
    S3Result<uint64_t> submit(RangeRequest request);
    // A request still queued is dropped and called back as cancelled: true.
    // One already started, finished or unknown: false (its callback stands).
    bool cancel(uint64_t ticket);
    // A queued prefetch request becomes a fault request (behind the faults
    // queued before it). False when it is not queued as prefetch; one in
    // flight is not moved, but its deadline counts from then on.
    bool promote(uint64_t ticket);
    // Lets a fetcher made with start_paused start requests.
    void resume();

    RangeFetcherStats stats() const;

private:
    struct State;
    explicit RangeFetcher(std::unique_ptr<State> state);
    std::unique_ptr<State> state_;
};

}  // namespace ringpager::remote
