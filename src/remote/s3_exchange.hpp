// One HTTP exchange with the object store, shared by the blocking client and
// the range fetcher: what to ask (S3Request), how to set up a libcurl easy
// handle for it (path-style URL, SigV4 signed by libcurl, x-amz-content-sha256),
// how to collect the answer within bounds, and how to judge the result. An
// Exchange is one attempt; the callers own the retries.
#pragma once

#include <curl/curl.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "remote/s3_config.hpp"
#include "remote/s3_error.hpp"
#include "remote/s3_url.hpp"

namespace ringpager::remote {

struct S3Request {
    const char* method = "GET";    // GET, HEAD, PUT, POST, DELETE
    S3Location location;           // an empty key addresses the bucket itself
    std::vector<std::pair<std::string, std::string>> query;
    std::span<const std::byte> body;   // PUT/POST payload; sent as is, resent on a retry
    // A byte range: the answer must be 206 with exactly these bytes.
    bool ranged = false;
    uint64_t range_offset = 0;
    uint64_t range_length = 0;
    // Where the answer's body goes: exactly into `into` (its size is the
    // body's size), or else into a buffer of at most `max_body_bytes`.
    std::span<std::byte> into;
    size_t max_body_bytes = 0;

    // "s3://bucket/key" (or "s3://bucket") for messages.
    std::string name() const;
};

// A successful answer.
struct S3Response {
    long status = 0;
    uint64_t content_length = 0;    // as the headers say (HEAD: the object's size)
    bool has_content_length = false;
    std::string etag;               // as sent, quotes included
    std::string last_modified;      // HTTP date, as sent
    std::vector<std::byte> body;    // when the request had no `into`
    uint64_t body_bytes = 0;        // bytes received
};

class Exchange {
public:
    Exchange(const S3Config& config, const S3Request& request);
    ~Exchange();
    Exchange(const Exchange&) = delete;
    Exchange& operator=(const Exchange&) = delete;

    // Resets `easy` and sets every option for this request. The Exchange (and
    // the request's spans) must outlive the transfer. Returns "" or the cause.
    std::string attach(CURL* easy);

    // Judges the transfer that ended with `code` on the easy handle it was
    // attached to: the answer, or one line naming the object and what to check.
    S3Result<S3Response> finish(CURLcode code);

private:
    static size_t on_header(char* data, size_t size, size_t count, void* self);
    static size_t on_body(char* data, size_t size, size_t count, void* self);
    static size_t on_read(char* data, size_t size, size_t count, void* self);
    static int on_seek(void* self, curl_off_t offset, int origin);
    void header_line(std::string_view line);
    S3Error http_error() const;
    S3Error transport_error(CURLcode code) const;
    std::string check_success();

    const S3Config& config_;
    const S3Request& request_;
    CURL* easy_ = nullptr;
    curl_slist* headers_ = nullptr;
    std::string url_;
    std::string user_;
    std::string sigv4_;
    char curl_error_[CURL_ERROR_SIZE] = {};
    uint64_t sent_ = 0;   // upload position

    S3Response response_;
    uint64_t received_ = 0;
    bool overflow_ = false;
    bool bad_header_ = false;
    std::string content_range_;
    std::string error_body_;   // the first bytes of a non-2xx answer
};

// Makes sure curl_global_init has run (once per process, thread-safe).
// Returns "" or why libcurl cannot be used.
std::string init_curl();

}  // namespace ringpager::remote
