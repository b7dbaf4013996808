#include "common/log.hpp"

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <ctime>

namespace ringpager {
namespace {
std::atomic<int> g_level{static_cast<int>(LogLevel::info)};
const char* level_name(LogLevel level) {
    switch (level) {
        case LogLevel::debug: return "debug";
        case LogLevel::info: return "info";
        case LogLevel::warn: return "warn";
        case LogLevel::error: return "error";
        case LogLevel::quiet: return "";
    }
    return "";
}
}  // namespace

void set_log_level(LogLevel level) { g_level.store(static_cast<int>(level), std::memory_order_relaxed); }
LogLevel log_level() { return static_cast<LogLevel>(g_level.load(std::memory_order_relaxed)); }

std::string escape_for_log(std::string_view bytes, size_t max_chars) {
    static constexpr char hex_digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(std::min(bytes.size(), max_chars) + 3);
    for (const char c : bytes) {
        const auto byte = static_cast<unsigned char>(c);
        char piece[4];
        size_t length = 0;
        if (byte == '\\' || byte == '"') {
            piece[length++] = '\\';
            piece[length++] = c;
        } else if (byte >= 0x20 && byte < 0x7f) {
            piece[length++] = c;
        } else {
            piece[length++] = '\\';
            piece[length++] = 'x';
            piece[length++] = hex_digits[byte >> 4];
            piece[length++] = hex_digits[byte & 0xf];
        }
        if (out.size() + length > max_chars) return out + "...";
        out.append(piece, length);
    }
    return out;
}

void log_line(LogLevel level, const char* fmt, ...) {
    char body[1024];
    va_list args;
    va_start(args, fmt);
    vsnprintf(body, sizeof body, fmt, args);
    va_end(args);
    timespec now{};
    clock_gettime(CLOCK_REALTIME, &now);
    tm parts{};
    gmtime_r(&now.tv_sec, &parts);
    // One fprintf call per line: stdio locks the stream, so lines never interleave.
    fprintf(stderr, "%02d:%02d:%02d.%03ld ringpager %s: %s\n", parts.tm_hour, parts.tm_min,
            parts.tm_sec, now.tv_nsec / 1000000, level_name(level), body);
}

}  // namespace ringpager
