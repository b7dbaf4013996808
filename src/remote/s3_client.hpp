// S3Client: the blocking object-store API for tools (`ringpager snapshot
// push|ls|inspect`) and tests. One client owns one libcurl easy handle, so
// its connection is kept alive between calls; it is not thread-safe (use one
// per thread, or the RangeFetcher). Every call retries 5xx, 429, resets,
// timeouts and cut-short answers with capped exponential backoff and jitter
// (S3Config::retry) and ends in an S3Result whose error is one line naming the
// object and what to check. Answers are hostile: every body kept is bounded,
// a range is exactly the bytes asked for, XML is read defensively.
//
// The client does not hash what it moves: a corrupted body of the right
// length is caught by the caller's own checksum (the snapshot format's XXH3
// block checksums), not here.
#pragma once

#include <curl/curl.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "remote/s3_answers.hpp"
#include "remote/s3_config.hpp"
#include "remote/s3_error.hpp"
#include "remote/s3_exchange.hpp"
#include "remote/s3_url.hpp"

namespace ringpager::remote {

struct ObjectInfo {
    uint64_t size_bytes = 0;
    std::string etag;            // as the store sent it, quotes included
    std::string last_modified;   // HTTP date
};

// What a client has sent, for tests and progress reports.
struct S3ClientStats {
    uint64_t requests = 0;   // attempts, retries included
    uint64_t retries = 0;
    uint64_t puts = 0;       // PUT attempts (objects and parts)
    uint64_t bytes_sent = 0;
    uint64_t bytes_received = 0;
};

inline constexpr uint32_t max_list_keys = 1000;
inline constexpr uint32_t max_part_count = 10000;
inline constexpr uint64_t min_part_bytes = 5 << 20;     // S3's floor for every part but the last

class S3Client {
public:
    // Validates the configuration and sets up libcurl.
    static S3Result<std::unique_ptr<S3Client>> create(S3Config config);
    ~S3Client();
    S3Client(const S3Client&) = delete;
    S3Client& operator=(const S3Client&) = delete;

    S3Result<ObjectInfo> head(const S3Location& object);
    // The whole object, refused (before it is read) when it is larger than `max_bytes`.
    S3Result<std::vector<std::byte>> get(const S3Location& object, uint64_t max_bytes);
    // Exactly `out.size()` (> 0) bytes from `offset`, or an error.
    S3Result<Done> get_range(const S3Location& object, uint64_t offset, std::span<std::byte> out);
    // Returns the new object's ETag.
    S3Result<std::string> put(const S3Location& object, std::span<const std::byte> bytes);
    S3Result<Done> remove(const S3Location& object);
    S3Result<Done> create_bucket(const std::string& bucket);

    // Multipart upload: create, upload parts (1..10000, each but the last at
    // least 5 MiB), then complete with every part in order, or abort.
    S3Result<std::string> create_multipart(const S3Location& object);   // the upload id
    S3Result<std::string> upload_part(const S3Location& object, const std::string& upload_id, uint32_t number,
                                      std::span<const std::byte> bytes);   // the part's ETag
    S3Result<std::string> complete_multipart(const S3Location& object, const std::string& upload_id,
                                             std::span<const CompletedPart> parts);   // the object's ETag ("" from RGW)
    S3Result<Done> abort_multipart(const S3Location& object, const std::string& upload_id);

    // ListObjectsV2: one page of at most `max_keys` (1..1000) keys under
    // `prefix`, after `continuation_token` ("" for the first page).
    S3Result<ListPage> list_page(const std::string& bucket, const std::string& prefix,
                                 const std::string& continuation_token, uint32_t max_keys = max_list_keys);
    // Every key under `prefix`, following continuation tokens; refused past `max_objects`.
    S3Result<std::vector<ObjectSummary>> list(const std::string& bucket, const std::string& prefix,
                                              uint64_t max_objects);

    const S3Config& config() const { return config_; }
    const S3ClientStats& stats() const { return stats_; }

private:
    explicit S3Client(S3Config config, CURL* easy) : config_(std::move(config)), easy_(easy) {}
    // One request with the retry policy; the last attempt's result.
    S3Result<S3Response> perform(const S3Request& request);

    S3Config config_;
    CURL* easy_ = nullptr;
    S3ClientStats stats_;
    uint64_t jitter_state_ = 0;
};

}  // namespace ringpager::remote
