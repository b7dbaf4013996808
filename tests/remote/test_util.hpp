// Helpers of the remote suite: deterministic random bytes, their XXH3-128,
// a FaultProxy in front of the suite's store, and error lines with their
// timing (which varies) masked.
#pragma once

#include <gtest/gtest.h>
#include <xxhash.h>

#include <cstring>
#include <random>
#include <regex>
#include <span>
#include <string>
#include <vector>

#include "fault_proxy.hpp"
#include "rgw_environment.hpp"

namespace rgwtest {

using Bytes = std::vector<std::byte>;

inline Bytes random_bytes(size_t size, uint64_t seed) {
    Bytes out(size);
    std::mt19937_64 rng(seed);
    for (size_t i = 0; i < size; i += 8) {
        uint64_t v = rng();
        std::memcpy(out.data() + i, &v, std::min<size_t>(8, size - i));
    }
    return out;
}

inline std::string hash(std::span<const std::byte> bytes) {
    XXH128_hash_t h = XXH3_128bits(bytes.data(), bytes.size());
    return std::to_string(h.high64) + ":" + std::to_string(h.low64);
}

// Times vary: "after 0 ms", "in 123 ms" -> "after N ms", "in N ms".
inline std::string mask_ms(const std::string& line) {
    return std::regex_replace(line, std::regex(" [0-9]+ ms"), " N ms");
}

inline uint16_t port_of(const std::string& endpoint) {
    return static_cast<uint16_t>(std::stoi(endpoint.substr(endpoint.rfind(':') + 1)));
}

// A bucket on the store plus a proxy in front of it, and a client of each.
struct ProxyFixture : public BucketFixture {
    void SetUp() override {
        BucketFixture::SetUp();
        if (HasFatalFailure()) return;
        std::string error;
        proxy = FaultProxy::start(port_of(rgw().endpoint), error);
        ASSERT_TRUE(proxy) << error;
    }
    // A config that goes through the proxy.
    ringpager::remote::S3Config proxied() const {
        auto c = rgw().config();
        c.endpoint = proxy->endpoint();
        return c;
    }
    std::unique_ptr<ringpager::remote::S3Client> proxied_client(ringpager::remote::S3Config c) const {
        auto made = ringpager::remote::S3Client::create(std::move(c));
        EXPECT_TRUE(made) << made.error().message;
        return made ? std::move(*made) : nullptr;
    }
    std::unique_ptr<FaultProxy> proxy;
};

}  // namespace rgwtest
