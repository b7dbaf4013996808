#include "remote/s3_exchange.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <mutex>

#include "common/log.hpp"
#include "remote/s3_xml.hpp"

namespace ringpager::remote {
namespace {

constexpr size_t max_error_body_bytes = 4096;   // enough for <Error><Code>..</Code>...
constexpr size_t max_header_value_bytes = 256;

std::string lower(std::string_view text) {
    std::string out(text);
    for (char& c : out) {
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
    return out;
}

std::string_view trim(std::string_view text) {
    while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
    while (!text.empty() && (text.back() == ' ' || text.back() == '\t' || text.back() == '\r' || text.back() == '\n')) {
        text.remove_suffix(1);
    }
    return text;
}

bool printable(std::string_view text) {
    return std::all_of(text.begin(), text.end(), [](char c) { return c >= 0x20 && c < 0x7f; });
}

bool is_write_method(const char* method) { return std::strcmp(method, "PUT") == 0 || std::strcmp(method, "POST") == 0; }

}  // namespace

std::string init_curl() {
    static std::once_flag once;
    static CURLcode code = CURLE_OK;
    std::call_once(once, [] { code = curl_global_init(CURL_GLOBAL_DEFAULT); });
    if (code != CURLE_OK) return std::string("libcurl cannot start: ") + curl_easy_strerror(code);
    return {};
}

std::string S3Request::name() const { return location.key.empty() ? "s3://" + location.bucket : location.url(); }

Exchange::Exchange(const S3Config& config, const S3Request& request) : config_(config), request_(request) {}

Exchange::~Exchange() { curl_slist_free_all(headers_); }

std::string Exchange::attach(CURL* easy) {
    easy_ = easy;
    curl_easy_reset(easy);   // keeps the handle's live connections
    std::string endpoint = config_.endpoint;
    if (!endpoint.empty() && endpoint.back() == '/') endpoint.pop_back();
    url_ = endpoint + "/" + request_.location.bucket;
    if (!request_.location.key.empty()) url_ += "/" + uri_encode(request_.location.key, true);
    if (!request_.query.empty()) url_ += "?" + canonical_query(request_.query);
    user_ = config_.access_key_id + ":" + config_.secret_access_key;
    sigv4_ = "aws:amz:" + config_.region + ":s3";

    auto add = [&](const std::string& header) {
        curl_slist* grown = curl_slist_append(headers_, header.c_str());
        if (grown) headers_ = grown;
        return grown != nullptr;
    };
    // No "Expect:" header to turn 100-continue off: libcurl 7.88 signs the
    // empty header it then does not send, and the store refuses the signature.
    bool ok = add("x-amz-content-sha256: UNSIGNED-PAYLOAD");
    uint64_t payload_bytes = request_.body.size();
    if (request_.ranged) {
        ok = ok && add("Range: bytes=" + std::to_string(request_.range_offset) + "-" +
                       std::to_string(request_.range_offset + request_.range_length - 1));
        payload_bytes = request_.range_length;
    } else if (!request_.into.empty()) {
        payload_bytes = request_.into.size();
    }
    if (is_write_method(request_.method)) ok = ok && add("Content-Type: application/octet-stream");
    if (!ok) return "out of memory building the request headers";

    curl_easy_setopt(easy, CURLOPT_URL, url_.c_str());
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(easy, CURLOPT_USERAGENT, "ringpager/0.1");
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, curl_error_);
    curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(easy, CURLOPT_EXPECT_100_TIMEOUT_MS, 100L);   // large PUTs: wait briefly for "100 Continue"
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(config_.connect_timeout_ms));
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, static_cast<long>(config_.attempt_timeout_ms(payload_bytes)));
    curl_easy_setopt(easy, CURLOPT_USERPWD, user_.c_str());
    curl_easy_setopt(easy, CURLOPT_AWS_SIGV4, sigv4_.c_str());
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers_);
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, &Exchange::on_header);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, this);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &Exchange::on_body);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, this);

    const std::string method = request_.method;
    if (method == "HEAD") {
        curl_easy_setopt(easy, CURLOPT_NOBODY, 1L);
    } else if (method == "PUT") {
        curl_easy_setopt(easy, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(easy, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(request_.body.size()));
        curl_easy_setopt(easy, CURLOPT_READFUNCTION, &Exchange::on_read);
        curl_easy_setopt(easy, CURLOPT_READDATA, this);
        curl_easy_setopt(easy, CURLOPT_SEEKFUNCTION, &Exchange::on_seek);
        curl_easy_setopt(easy, CURLOPT_SEEKDATA, this);
    } else if (method == "POST") {
        curl_easy_setopt(easy, CURLOPT_POST, 1L);
        curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request_.body.size()));
        const void* fields = request_.body.empty() ? static_cast<const void*>("") : request_.body.data();
        curl_easy_setopt(easy, CURLOPT_POSTFIELDS, fields);
    } else if (method != "GET") {
        curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, request_.method);
    }
    return {};
}

size_t Exchange::on_header(char* data, size_t size, size_t count, void* self) {
    auto* ex = static_cast<Exchange*>(self);
    size_t bytes = size * count;
    ex->header_line(std::string_view(data, bytes));
    return ex->bad_header_ ? 0 : bytes;
}

void Exchange::header_line(std::string_view line) {
    if (line.substr(0, 5) == "HTTP/") {   // a status line: a new answer starts (after a 100 Continue too)
        response_ = S3Response{};
        content_range_.clear();
        size_t space = line.find(' ');
        auto status = space == std::string_view::npos ? std::nullopt : xml::parse_u64(line.substr(space + 1, 3));
        if (!status || *status < 100 || *status > 599) {
            bad_header_ = true;
        } else {
            response_.status = static_cast<long>(*status);
        }
        return;
    }
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) return;   // the blank line that ends the headers
    std::string name = lower(trim(line.substr(0, colon)));
    std::string_view value = trim(line.substr(colon + 1));
    auto keep = [&](std::string& field) {
        if (value.size() > max_header_value_bytes || !printable(value)) {
            bad_header_ = true;
        } else {
            field = std::string(value);
        }
    };
    if (name == "content-length") {
        auto length = xml::parse_u64(value);
        if (!length) bad_header_ = true;
        response_.content_length = length.value_or(0);
        response_.has_content_length = length.has_value();
    } else if (name == "etag") {
        keep(response_.etag);
    } else if (name == "last-modified") {
        keep(response_.last_modified);
    } else if (name == "content-range") {
        keep(content_range_);
    }
}

size_t Exchange::on_body(char* data, size_t size, size_t count, void* self) {
    auto* ex = static_cast<Exchange*>(self);
    size_t bytes = size * count;
    if (ex->response_.status < 200 || ex->response_.status >= 300) {
        size_t room = max_error_body_bytes - std::min(max_error_body_bytes, ex->error_body_.size());
        ex->error_body_.append(data, std::min(room, bytes));
        return bytes;   // the rest of an error page is read and dropped
    }
    const auto& into = ex->request_.into;
    uint64_t limit = !into.empty() ? into.size() : ex->request_.max_body_bytes;
    if (bytes > limit - ex->received_) {
        ex->overflow_ = true;
        return 0;   // curl stops the transfer with CURLE_WRITE_ERROR
    }
    if (!into.empty()) {
        std::memcpy(into.data() + ex->received_, data, bytes);
    } else {
        auto* first = reinterpret_cast<const std::byte*>(data);
        ex->response_.body.insert(ex->response_.body.end(), first, first + bytes);
    }
    ex->received_ += bytes;
    return bytes;
}

size_t Exchange::on_read(char* data, size_t size, size_t count, void* self) {
    auto* ex = static_cast<Exchange*>(self);
    size_t n = std::min<uint64_t>(size * count, ex->request_.body.size() - ex->sent_);
    std::memcpy(data, ex->request_.body.data() + ex->sent_, n);
    ex->sent_ += n;
    return n;
}

int Exchange::on_seek(void* self, curl_off_t offset, int origin) {
    auto* ex = static_cast<Exchange*>(self);
    if (origin != SEEK_SET || offset < 0 || static_cast<uint64_t>(offset) > ex->request_.body.size()) {
        return CURL_SEEKFUNC_CANTSEEK;
    }
    ex->sent_ = static_cast<uint64_t>(offset);
    return CURL_SEEKFUNC_OK;
}

S3Result<S3Response> Exchange::finish(CURLcode code) {
    if (code != CURLE_OK) return transport_error(code);
    if (response_.status < 200 || response_.status >= 300) return http_error();
    if (auto e = check_success(); !e.empty()) {
        return S3Error{S3Error::Kind::invalid_response, static_cast<int>(response_.status), request_.name() + ": " + e};
    }
    response_.body_bytes = received_;
    return std::move(response_);
}

// A 2xx answer must also be the answer asked for: a range comes back as 206
// with that range and exactly its bytes; a body into a buffer fills it.
std::string Exchange::check_success() {
    std::string got = std::to_string(received_) + " bytes";
    if (request_.ranged) {
        uint64_t last = request_.range_offset + request_.range_length - 1;
        std::string want = "bytes " + std::to_string(request_.range_offset) + "-" + std::to_string(last) + "/";
        if (response_.status != 206) {
            return "asked for bytes " + std::to_string(request_.range_offset) + "-" + std::to_string(last) +
                   ", the store answered " + std::to_string(response_.status) + " instead of 206 Partial Content";
        }
        if (content_range_.rfind(want, 0) != 0) {
            return "asked for " + want.substr(0, want.size() - 1) + ", the store sent range '" +
                   escape_for_log(content_range_) + "'";
        }
        if (received_ != request_.range_length) {
            return "asked for " + std::to_string(request_.range_length) + " bytes, received " + got;
        }
    } else if (!request_.into.empty() && received_ != request_.into.size()) {
        return "expected " + std::to_string(request_.into.size()) + " bytes, received " + got;
    }
    if (std::strcmp(request_.method, "HEAD") != 0 && response_.has_content_length &&
        received_ != response_.content_length) {
        return "the answer says " + std::to_string(response_.content_length) + " bytes, received " + got;
    }
    return {};
}

S3Error Exchange::http_error() const {
    const int status = static_cast<int>(response_.status);
    std::string code = escape_for_log(xml::text(error_body_, "Code", 64).value_or(""), 64);
    std::string answer = "(" + std::to_string(status) + (code.empty() ? "" : " " + code) + ")";
    const std::string name = request_.name();
    const std::string& bucket = request_.location.bucket;
    const std::string endpoint = escape_for_log(config_.endpoint, 128);
    using Kind = S3Error::Kind;
    if (status == 404) {
        if (code == "NoSuchBucket") {
            return {Kind::not_found, status, name + ": no bucket '" + bucket + "' at " + endpoint + " " + answer +
                                                 ": check the bucket name and AWS_ENDPOINT_URL"};
        }
        if (code == "NoSuchKey") {
            return {Kind::not_found, status, name + ": no object '" + request_.location.key + "' in bucket '" +
                                                 bucket + "' " + answer + ": check the name"};
        }
        return {Kind::not_found, status, name + ": not found at " + endpoint + " " + answer +
                                             ": check the bucket name, the object name and AWS_ENDPOINT_URL"};
    }
    if (status == 401 || status == 403) {
        if (code == "AccessDenied") {
            return {Kind::access_denied, status, name + ": access denied " + answer +
                                                     ": check that the key in AWS_ACCESS_KEY_ID may use bucket '" +
                                                     bucket + "'"};
        }
        return {Kind::access_denied, status, name + ": refused by " + endpoint + " " + answer +
                                                 ": check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION"};
    }
    if (status == 416) {
        return {Kind::client, status, name + ": bytes " + std::to_string(request_.range_offset) + "+" +
                                          std::to_string(request_.range_length) + " lie past the end of the object " +
                                          answer};
    }
    if (status >= 300 && status < 400) {
        return {Kind::client, status, name + ": redirected by " + endpoint + " " + answer +
                                          ": path-style requests need the bucket's own endpoint and region; check "
                                          "AWS_ENDPOINT_URL and AWS_REGION"};
    }
    if (status >= 500) return {Kind::server, status, name + ": the store failed " + answer};
    return {Kind::client, status, name + ": the store refused the " + request_.method + " request " + answer};
}

S3Error Exchange::transport_error(CURLcode code) const {
    using Kind = S3Error::Kind;
    const std::string name = request_.name();
    const std::string endpoint = escape_for_log(config_.endpoint, 128);
    std::string detail = escape_for_log(curl_error_[0] ? curl_error_ : curl_easy_strerror(code), 160);
    const int status = static_cast<int>(response_.status);
    if (code == CURLE_WRITE_ERROR && overflow_) {
        uint64_t limit = !request_.into.empty() ? request_.into.size() : request_.max_body_bytes;
        return {Kind::invalid_response, status,
                name + ": the answer is larger than the " + std::to_string(limit) + " bytes expected"};
    }
    if (code == CURLE_WRITE_ERROR && bad_header_) {
        return {Kind::invalid_response, status, name + ": malformed answer header from " + endpoint};
    }
    if (code == CURLE_PARTIAL_FILE) {
        return {Kind::transport, status,
                name + ": the answer was cut short after " + std::to_string(received_) + " bytes (" + detail + ")"};
    }
    if (code == CURLE_OPERATION_TIMEDOUT) {
        return {Kind::transport, status, name + ": no complete answer from " + endpoint + " in time (" + detail + ")"};
    }
    if (code == CURLE_COULDNT_CONNECT || code == CURLE_COULDNT_RESOLVE_HOST) {
        return {Kind::transport, 0, name + ": cannot connect to " + endpoint + " (" + detail +
                                        "): check AWS_ENDPOINT_URL and that the store is running"};
    }
    return {Kind::transport, status, name + ": " + detail + " (talking to " + endpoint + ")"};
}

}  // namespace ringpager::remote
