#include "remote/s3_client.hpp"

#include <algorithm>
#include <chrono>
#include <random>
#include <thread>

#include "common/log.hpp"

namespace ringpager::remote {
namespace {

constexpr size_t max_small_answer_bytes = 64 << 10;   // PUT/DELETE/multipart answers
constexpr size_t max_list_answer_bytes = 8 << 20;     // 1000 keys of 1 KiB plus their fields

std::string_view as_text(const std::vector<std::byte>& body) {
    return {reinterpret_cast<const char*>(body.data()), body.size()};
}

}  // namespace

S3Result<std::unique_ptr<S3Client>> S3Client::create(S3Config config) {
    if (auto e = config.validate(); !e.empty()) return invalid_argument(e);
    if (auto e = init_curl(); !e.empty()) return invalid_argument(e);
    CURL* easy = curl_easy_init();
    if (!easy) return invalid_argument("libcurl cannot create a handle (out of memory)");
    std::unique_ptr<S3Client> client(new S3Client(std::move(config), easy));
    client->jitter_state_ = std::random_device{}();
    return client;
}

S3Client::~S3Client() { curl_easy_cleanup(easy_); }

S3Result<S3Response> S3Client::perform(const S3Request& request) {
    const RetryPolicy& retry = config_.retry;
    auto start = std::chrono::steady_clock::now();
    for (unsigned attempt = 1;; ++attempt) {
        if (attempt > 1) {
            ++stats_.retries;
            // Backoff between attempts (not waiting for an event: the store asked us to come back later).
            std::this_thread::sleep_for(std::chrono::milliseconds(retry.delay_ms(attempt, next_random(jitter_state_))));
        }
        Exchange exchange(config_, request);
        if (auto e = exchange.attach(easy_); !e.empty()) return invalid_argument(request.name() + ": " + e);
        ++stats_.requests;
        if (std::string_view(request.method) == "PUT") ++stats_.puts;
        CURLcode code = curl_easy_perform(easy_);
        auto result = exchange.finish(code);
        if (result) {
            stats_.bytes_sent += request.body.size();
            stats_.bytes_received += result->body_bytes;
            return result;
        }
        if (!result.error().retryable() || attempt >= retry.max_attempts) {
            if (attempt == 1) return result;
            S3Error error = result.error();
            auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
            error.message += "; gave up after " + std::to_string(attempt) + " attempts in " +
                             std::to_string(ms.count()) + " ms";
            return error;
        }
    }
}

S3Result<ObjectInfo> S3Client::head(const S3Location& object) {
    S3Request request;
    request.method = "HEAD";
    request.location = object;
    auto r = perform(request);
    if (!r) return r.error();
    if (!r->has_content_length) return invalid_response(request.name(), "the HEAD answer has no Content-Length");
    return ObjectInfo{r->content_length, r->etag, r->last_modified};
}

S3Result<std::vector<std::byte>> S3Client::get(const S3Location& object, uint64_t max_bytes) {
    auto info = head(object);
    if (!info) return info.error();
    if (info->size_bytes > max_bytes) {
        return S3Error{S3Error::Kind::invalid_response, 200,
                       object.url() + ": the object holds " + std::to_string(info->size_bytes) +
                           " bytes, more than the " + std::to_string(max_bytes) + " this reader accepts"};
    }
    std::vector<std::byte> bytes(info->size_bytes);
    if (bytes.empty()) return bytes;
    auto r = get_range(object, 0, bytes);
    if (!r) return r.error();
    return bytes;
}

S3Result<Done> S3Client::get_range(const S3Location& object, uint64_t offset, std::span<std::byte> out) {
    if (out.empty() || offset > max_object_bytes || out.size() > max_object_bytes - offset) {
        return invalid_argument(object.url() + ": range " + std::to_string(offset) + "+" + std::to_string(out.size()) +
                                " is empty or past the largest object S3 holds");
    }
    S3Request request;
    request.location = object;
    request.ranged = true;
    request.range_offset = offset;
    request.range_length = out.size();
    request.into = out;
    auto r = perform(request);
    if (!r) return r.error();
    return Done{};
}

S3Result<std::string> S3Client::put(const S3Location& object, std::span<const std::byte> bytes) {
    S3Request request;
    request.method = "PUT";
    request.location = object;
    request.body = bytes;
    request.max_body_bytes = max_small_answer_bytes;
    auto r = perform(request);
    if (!r) return r.error();
    return r->etag;
}

S3Result<Done> S3Client::remove(const S3Location& object) {
    S3Request request;
    request.method = "DELETE";
    request.location = object;
    request.max_body_bytes = max_small_answer_bytes;
    auto r = perform(request);
    if (!r) return r.error();
    return Done{};
}

S3Result<Done> S3Client::create_bucket(const std::string& bucket) {
    if (!valid_bucket_name(bucket)) return invalid_argument("'" + escape_for_log(bucket) + "' is not a bucket name");
    S3Request request;
    request.method = "PUT";
    request.location = {bucket, ""};
    request.max_body_bytes = max_small_answer_bytes;
    auto r = perform(request);
    if (!r) return r.error();
    return Done{};
}

S3Result<std::string> S3Client::create_multipart(const S3Location& object) {
    S3Request request;
    request.method = "POST";
    request.location = object;
    request.query = {{"uploads", ""}};
    request.max_body_bytes = max_small_answer_bytes;
    auto r = perform(request);
    if (!r) return r.error();
    return parse_upload_id(as_text(r->body), request.name());
}

S3Result<std::string> S3Client::upload_part(const S3Location& object, const std::string& upload_id, uint32_t number,
                                            std::span<const std::byte> bytes) {
    if (number == 0 || number > max_part_count) {
        return invalid_argument(object.url() + ": part number " + std::to_string(number) + " is not 1..10000");
    }
    S3Request request;
    request.method = "PUT";
    request.location = object;
    request.query = {{"partNumber", std::to_string(number)}, {"uploadId", upload_id}};
    request.body = bytes;
    request.max_body_bytes = max_small_answer_bytes;
    auto r = perform(request);
    if (!r) return r.error();
    if (!sane_token(r->etag)) return invalid_response(request.name(), "part " + std::to_string(number) + " has no ETag");
    return r->etag;
}

S3Result<std::string> S3Client::complete_multipart(const S3Location& object, const std::string& upload_id,
                                                   std::span<const CompletedPart> parts) {
    if (parts.empty() || parts.size() > max_part_count) {
        return invalid_argument(object.url() + ": a multipart upload has 1 to 10000 parts, not " +
                                std::to_string(parts.size()));
    }
    std::string body = complete_multipart_body(parts);
    S3Request request;
    request.method = "POST";
    request.location = object;
    request.query = {{"uploadId", upload_id}};
    request.body = std::as_bytes(std::span(body));
    request.max_body_bytes = max_small_answer_bytes;
    auto r = perform(request);
    if (!r) return r.error();
    return parse_complete_answer(as_text(r->body), request.name());
}

S3Result<Done> S3Client::abort_multipart(const S3Location& object, const std::string& upload_id) {
    S3Request request;
    request.method = "DELETE";
    request.location = object;
    request.query = {{"uploadId", upload_id}};
    request.max_body_bytes = max_small_answer_bytes;
    auto r = perform(request);
    if (!r) return r.error();
    return Done{};
}

S3Result<ListPage> S3Client::list_page(const std::string& bucket, const std::string& prefix,
                                       const std::string& continuation_token, uint32_t max_keys) {
    if (max_keys == 0 || max_keys > max_list_keys) return invalid_argument("max_keys must be 1..1000");
    S3Request request;
    request.location = {bucket, ""};
    request.query = {{"list-type", "2"}, {"max-keys", std::to_string(max_keys)}};
    if (!prefix.empty()) request.query.emplace_back("prefix", prefix);
    if (!continuation_token.empty()) request.query.emplace_back("continuation-token", continuation_token);
    request.max_body_bytes = max_list_answer_bytes;
    auto r = perform(request);
    if (!r) return r.error();
    return parse_list_page(as_text(r->body), "s3://" + bucket + "/" + prefix, prefix, max_keys);
}

S3Result<std::vector<ObjectSummary>> S3Client::list(const std::string& bucket, const std::string& prefix,
                                                    uint64_t max_objects) {
    std::vector<ObjectSummary> all;
    std::string token;
    do {
        auto page = list_page(bucket, prefix, token);
        if (!page) return page.error();
        if (!all.empty() && !page->objects.empty() && page->objects.front().key <= all.back().key) {
            return invalid_response("s3://" + bucket + "/" + prefix, "a listing page went back to earlier keys");
        }
        if (page->objects.empty() && !page->next_token.empty()) {
            return invalid_response("s3://" + bucket + "/" + prefix, "an empty listing page that is not the last");
        }
        if (page->objects.size() > max_objects - all.size()) {
            return invalid_response("s3://" + bucket + "/" + prefix,
                                    "more than " + std::to_string(max_objects) + " objects under this prefix");
        }
        for (auto& o : page->objects) all.push_back(std::move(o));
        token = std::move(page->next_token);
    } while (!token.empty());
    return all;
}

}  // namespace ringpager::remote
