// Where the object store is and how to talk to it: taken from the environment
// as every S3 tool does (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY, AWS_REGION), plus the transport's bounds.
#pragma once

#include <cstdint>
#include <string>

#include "remote/s3_error.hpp"

namespace ringpager::remote {

// Capped exponential backoff with full jitter: before attempt n (n >= 2) wait a
// random time in [0, min(max_delay, first_delay * 2^(n-2))].
struct RetryPolicy {
    unsigned max_attempts = 5;       // first try included; 1 = no retries
    uint32_t first_delay_ms = 50;
    uint32_t max_delay_ms = 2000;

    // The backoff before attempt `attempt` (2, 3, ...), drawn with `random` in [0, 2^64).
    uint32_t delay_ms(unsigned attempt, uint64_t random) const;
};

// The jitter's random numbers: splitmix64 over `state` (seeded once per client).
inline uint64_t next_random(uint64_t& state) {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

struct S3Config {
    std::string endpoint;            // "http://host:port" or "https://host[:port]", no path
    std::string access_key_id;
    std::string secret_access_key;
    std::string region = "us-east-1";

    uint32_t connect_timeout_ms = 5000;
    // An attempt is abandoned after request_timeout_ms plus the time its body
    // takes at min_rate_bytes_per_s (so a 1 GiB part is not cut at 30 s).
    uint32_t request_timeout_ms = 30000;
    uint64_t min_rate_bytes_per_s = 1 << 20;
    RetryPolicy retry;

    // Reads the four variables. Returns an error line naming what is missing
    // or malformed (an endpoint must be http(s)://HOST[:PORT] with no path;
    // a region is lower-case letters, digits and '-').
    static S3Result<S3Config> from_environment();
    // The same checks on a config built in code.
    std::string validate() const;

    uint64_t attempt_timeout_ms(uint64_t body_bytes) const {
        return request_timeout_ms + body_bytes * 1000 / (min_rate_bytes_per_s ? min_rate_bytes_per_s : 1);
    }
};

}  // namespace ringpager::remote
