// S3Error and S3Result<T>: how every object-store operation ends. The error
// is one line for an operator (it names the bucket and key and what to check)
// plus a kind the code can branch on. Nothing in src/remote throws.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <variant>

namespace ringpager::remote {

struct S3Error {
    enum class Kind : uint8_t {
        not_found,         // 404: no such bucket or key
        access_denied,     // 401/403: credentials, signature, permissions
        client,            // another 4xx: the request was refused as asked
        server,            // 5xx (after the retries)
        transport,         // no complete HTTP answer: connect, reset, timeout, cut short (after the retries)
        invalid_response,  // a complete answer that breaks the contract: wrong range, bad XML, too large
        invalid_argument,  // refused before anything was sent (bad URL, range, configuration)
        cancelled,         // cancelled or stopped before it ran
        deadline,          // the caller's deadline passed before an answer (RangeRequest::deadline); not retried
    };
    Kind kind = Kind::transport;
    int http_status = 0;   // 0 when there was no HTTP answer
    std::string message;   // one line, no newline

    // Worth another attempt: 5xx and 429, and transport failures (answers cut
    // short included). A complete answer that is wrong is not retried.
    bool retryable() const { return kind == Kind::server || kind == Kind::transport || http_status == 429; }
};

template <typename T>
class [[nodiscard]] S3Result {
public:
    S3Result(T value) : v_(std::move(value)) {}
    S3Result(S3Error error) : v_(std::move(error)) {}

    bool ok() const { return v_.index() == 0; }
    explicit operator bool() const { return ok(); }
    T& value() { return std::get<0>(v_); }
    const T& value() const { return std::get<0>(v_); }
    T& operator*() { return value(); }
    const T& operator*() const { return value(); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }
    const S3Error& error() const { return std::get<1>(v_); }

private:
    std::variant<T, S3Error> v_;
};

struct Done {};   // S3Result<Done>: an operation with nothing to return

inline S3Error invalid_argument(std::string message) {
    return S3Error{S3Error::Kind::invalid_argument, 0, std::move(message)};
}

}  // namespace ringpager::remote
