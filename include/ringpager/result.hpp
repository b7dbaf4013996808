// Result<T>: the value of an operation, or the errno it failed with plus the
// name of the call that failed. Used on the fault path instead of exceptions.
#pragma once

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>
#include <variant>

namespace ringpager {

struct Error {
    int code = 0;              // a positive errno value
    const char* what = "";     // the syscall or operation that failed (static string)

    std::string message() const { return std::string(what) + ": " + std::strerror(code); }
};

template <typename T>
class [[nodiscard]] Result {
public:
    Result(T value) : v_(std::move(value)) {}
    Result(Error error) : v_(error) {}

    bool ok() const { return v_.index() == 0; }
    explicit operator bool() const { return ok(); }
    T& value() { return std::get<0>(v_); }
    const T& value() const { return std::get<0>(v_); }
    T& operator*() { return value(); }
    T* operator->() { return &value(); }
    const Error& error() const { return std::get<1>(v_); }

private:
    std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
public:
    Result() = default;
    Result(Error error) : error_(error) {}

    bool ok() const { return error_.code == 0; }
    explicit operator bool() const { return ok(); }
    const Error& error() const { return error_; }

private:
    Error error_{};
};

inline Error errno_error(const char* what) { return Error{errno, what}; }

}  // namespace ringpager
