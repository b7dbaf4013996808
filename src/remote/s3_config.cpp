#include "remote/s3_config.hpp"

#include <algorithm>
#include <cstdlib>

#include "common/log.hpp"

namespace ringpager::remote {
namespace {

std::string env(const char* name) {
    const char* value = std::getenv(name);
    return value ? value : "";
}

bool printable_token(const std::string& text) {
    return !text.empty() && text.size() <= 256 &&
           std::all_of(text.begin(), text.end(), [](char c) { return c > 0x20 && c < 0x7f; });
}

// http(s)://HOST[:PORT] with HOST of letters, digits, '.', '-' or a bracketed IPv6 literal.
std::string check_endpoint(const std::string& endpoint) {
    std::string rest;
    if (endpoint.rfind("http://", 0) == 0) {
        rest = endpoint.substr(7);
    } else if (endpoint.rfind("https://", 0) == 0) {
        rest = endpoint.substr(8);
    } else {
        return "must start with http:// or https://";
    }
    if (!rest.empty() && rest.back() == '/') rest.pop_back();
    if (rest.empty()) return "has no host";
    bool ok = std::all_of(rest.begin(), rest.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
               c == '-' || c == ':' || c == '[' || c == ']';
    });
    if (!ok) return "must be http(s)://HOST[:PORT] with no path, user or query";
    return {};
}

}  // namespace

uint32_t RetryPolicy::delay_ms(unsigned attempt, uint64_t random) const {
    uint64_t cap = first_delay_ms;
    for (unsigned i = 2; i < attempt && cap < max_delay_ms; ++i) cap *= 2;
    cap = std::min<uint64_t>(cap, max_delay_ms);
    return static_cast<uint32_t>(cap ? random % (cap + 1) : 0);
}

std::string S3Config::validate() const {
    if (endpoint.empty()) return "AWS_ENDPOINT_URL is not set: set it to the object store's http(s)://HOST:PORT";
    if (auto e = check_endpoint(endpoint); !e.empty()) {
        return "AWS_ENDPOINT_URL '" + escape_for_log(endpoint, 128) + "' " + e;
    }
    if (access_key_id.empty()) return "AWS_ACCESS_KEY_ID is not set";
    if (!printable_token(access_key_id)) return "AWS_ACCESS_KEY_ID holds spaces or control characters";
    if (secret_access_key.empty()) return "AWS_SECRET_ACCESS_KEY is not set";
    if (!printable_token(secret_access_key)) return "AWS_SECRET_ACCESS_KEY holds spaces or control characters";
    bool region_ok = !region.empty() && region.size() <= 64 && std::all_of(region.begin(), region.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
    });
    if (!region_ok) return "AWS_REGION '" + escape_for_log(region, 64) + "' is not a region name (like us-east-1)";
    if (retry.max_attempts == 0) return "retry.max_attempts must be at least 1";
    return {};
}

S3Result<S3Config> S3Config::from_environment() {
    S3Config config;
    config.endpoint = env("AWS_ENDPOINT_URL");
    if (!config.endpoint.empty() && config.endpoint.back() == '/') config.endpoint.pop_back();
    config.access_key_id = env("AWS_ACCESS_KEY_ID");
    config.secret_access_key = env("AWS_SECRET_ACCESS_KEY");
    if (auto region = env("AWS_REGION"); !region.empty()) config.region = region;
    if (auto e = config.validate(); !e.empty()) return invalid_argument(e);
    return config;
}

}  // namespace ringpager::remote
