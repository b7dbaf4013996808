// One-line, thread-safe logging to stderr. Every line names its subject
// ("vm 3 (pid 812)") so an operator can grep one VM's life.
#pragma once

#include <atomic>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

namespace ringpager {

enum class LogLevel { debug = 0, info = 1, warn = 2, error = 3, quiet = 4 };

void set_log_level(LogLevel level);
LogLevel log_level();
void log_line(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

// text: "12:00:01.234 ringpager info: <message>"; json: one object per line,
// {"time":"2026-11-27T12:00:01.234Z","level":"info","msg":"<message>"}, with
// an event's fields between level and msg (--log-format).
enum class LogFormat { text = 0, json = 1 };
void set_log_format(LogFormat format);
LogFormat log_format();

// One named value of a structured event. Integers stay integers in JSON.
struct LogField {
    enum class Kind : uint8_t { signed_int, unsigned_int, real, text };
    template <std::signed_integral T>
    LogField(const char* k, T v) : key(k), kind(Kind::signed_int), s(v) {}
    template <std::unsigned_integral T>
    LogField(const char* k, T v) : key(k), kind(Kind::unsigned_int), u(v) {}
    LogField(const char* k, double v) : key(k), kind(Kind::real), d(v) {}
    LogField(const char* k, std::string_view v) : key(k), kind(Kind::text), t(v) {}
    LogField(const char* k, const char* v) : key(k), kind(Kind::text), t(v) {}
    LogField(const char* k, const std::string& v) : key(k), kind(Kind::text), t(v) {}

    const char* key;
    Kind kind;
    int64_t s = 0;
    uint64_t u = 0;
    double d = 0;
    std::string_view t;
};

// A VM lifecycle event (connected, resident, released): the text format
// prints `message` alone; the JSON format adds "event" and the fields, so a
// log pipeline needs no parsing of the message. Field keys are code literals.
void log_event(LogLevel level, std::string_view event, std::initializer_list<LogField> fields,
               const std::string& message);

// JSON string contents for `bytes`: quote, backslash and control bytes
// escaped, bytes >= 0x80 as \u00XX so the line is valid UTF-8 whatever the input.
std::string json_escape(std::string_view bytes);

// Makes bytes from a peer or a file safe to quote in a log line or an error:
// printable ASCII stays, a backslash or double quote gets a backslash, every
// other byte becomes \xNN. At most `max_chars` characters of escaped text are
// kept (an escape is never cut); "..." follows when bytes were left out.
inline constexpr size_t kLogQuoteChars = 64;
std::string escape_for_log(std::string_view bytes, size_t max_chars = kLogQuoteChars);

#define RP_LOG(level, ...)                                                    \
    do {                                                                      \
        if (static_cast<int>(level) >= static_cast<int>(::ringpager::log_level())) \
            ::ringpager::log_line(level, __VA_ARGS__);                        \
    } while (0)
#define RP_EVENT(level, ...)                                                  \
    do {                                                                      \
        if (static_cast<int>(level) >= static_cast<int>(::ringpager::log_level())) \
            ::ringpager::log_event(level, __VA_ARGS__);                       \
    } while (0)
#define RP_DEBUG(...) RP_LOG(::ringpager::LogLevel::debug, __VA_ARGS__)
#define RP_INFO(...) RP_LOG(::ringpager::LogLevel::info, __VA_ARGS__)
#define RP_WARN(...) RP_LOG(::ringpager::LogLevel::warn, __VA_ARGS__)
#define RP_ERROR(...) RP_LOG(::ringpager::LogLevel::error, __VA_ARGS__)

}  // namespace ringpager
