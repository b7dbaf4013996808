// Decimal numbers read from outside (HTTP headers, S3 answers, /proc files):
// the whole text or nothing.
#pragma once

#include <charconv>
#include <cstdint>
#include <optional>
#include <string_view>

namespace ringpager {

// A decimal u64 with no sign, space or leading '+'; nullopt otherwise or on overflow.
inline std::optional<uint64_t> parse_u64(std::string_view digits) {
    if (digits.empty() || digits.size() > 20) return std::nullopt;
    uint64_t value = 0;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value, 10);
    if (ec != std::errc{} || end != digits.data() + digits.size()) return std::nullopt;
    return value;
}

}  // namespace ringpager
