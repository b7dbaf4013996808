#include "common/log.hpp"

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <ctime>

namespace ringpager {
namespace {
std::atomic<int> g_level{static_cast<int>(LogLevel::info)};
std::atomic<int> g_format{static_cast<int>(LogFormat::text)};
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
void set_log_format(LogFormat format) { g_format.store(static_cast<int>(format), std::memory_order_relaxed); }
LogFormat log_format() { return static_cast<LogFormat>(g_format.load(std::memory_order_relaxed)); }

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

std::string json_escape(std::string_view bytes) {
    static constexpr char hex_digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(bytes.size() + 8);
    for (const char c : bytes) {
        const auto byte = static_cast<unsigned char>(c);
        if (byte == '"' || byte == '\\') {
            out += '\\';
            out += c;
        } else if (byte >= 0x20 && byte < 0x7f) {
            out += c;
        } else {
            out += "\\u00";
            out += hex_digits[byte >> 4];
            out += hex_digits[byte & 0xf];
        }
    }
    return out;
}

namespace {

// Writes one finished line. One fwrite per line: stdio locks the stream, so
// lines from different threads never interleave.
void emit(LogLevel level, std::string_view event, std::initializer_list<LogField> fields, std::string_view message) {
    timespec now{};
    clock_gettime(CLOCK_REALTIME, &now);
    tm parts{};
    gmtime_r(&now.tv_sec, &parts);
    const long millis = now.tv_nsec / 1000000;
    std::string line;
    if (log_format() == LogFormat::text) {
        char head[64];
        snprintf(head, sizeof head, "%02d:%02d:%02d.%03ld ringpager %s: ", parts.tm_hour, parts.tm_min,
                 parts.tm_sec, millis, level_name(level));
        line.append(head).append(message);
    } else {
        char head[96];
        snprintf(head, sizeof head, "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"level\":\"%s\"",
                 parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday, parts.tm_hour, parts.tm_min, parts.tm_sec,
                 millis, level_name(level));
        line.append(head);
        if (!event.empty()) line.append(",\"event\":\"").append(json_escape(event)).append("\"");
        for (const LogField& f : fields) {
            line.append(",\"").append(json_escape(f.key)).append("\":");
            char number[32];
            switch (f.kind) {
                case LogField::Kind::signed_int: line.append(std::to_string(f.s)); break;
                case LogField::Kind::unsigned_int: line.append(std::to_string(f.u)); break;
                case LogField::Kind::real:
                    // JSON has no NaN or infinity.
                    if (std::isfinite(f.d)) {
                        snprintf(number, sizeof number, "%.6g", f.d);
                        line.append(number);
                    } else {
                        line.append("null");
                    }
                    break;
                case LogField::Kind::text: line.append("\"").append(json_escape(f.t)).append("\""); break;
            }
        }
        line.append(",\"msg\":\"").append(json_escape(message)).append("\"}");
    }
    line += '\n';
    fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace

void log_event(LogLevel level, std::string_view event, std::initializer_list<LogField> fields,
               const std::string& message) {
    emit(level, event, fields, message);
}

void log_line(LogLevel level, const char* fmt, ...) {
    char body[1024];
    va_list args;
    va_start(args, fmt);
    vsnprintf(body, sizeof body, fmt, args);
    va_end(args);
    emit(level, {}, {}, body);
}

}  // namespace ringpager
