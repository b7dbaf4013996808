// One-line, thread-safe logging to stderr. Every line names its subject
// ("vm 3 (pid 812)") so an operator can grep one VM's life.
#pragma once

#include <atomic>
#include <cstddef>
#include <string>
#include <string_view>

namespace ringpager {

enum class LogLevel { debug = 0, info = 1, warn = 2, error = 3, quiet = 4 };

void set_log_level(LogLevel level);
LogLevel log_level();
void log_line(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

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
#define RP_DEBUG(...) RP_LOG(::ringpager::LogLevel::debug, __VA_ARGS__)
#define RP_INFO(...) RP_LOG(::ringpager::LogLevel::info, __VA_ARGS__)
#define RP_WARN(...) RP_LOG(::ringpager::LogLevel::warn, __VA_ARGS__)
#define RP_ERROR(...) RP_LOG(::ringpager::LogLevel::error, __VA_ARGS__)

}  // namespace ringpager
