// Parsing and printing of binary byte sizes.
#include "guestsim/units.hpp"

#include <charconv>

namespace ringpager::sim {

std::optional<uint64_t> parse_size(std::string_view text) {
    uint64_t value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || end == text.data()) return std::nullopt;
    std::string_view suffix(end, static_cast<size_t>(text.data() + text.size() - end));
    // Accepted: none, B, K/M/G, KB/MB/GB, KiB/MiB/GiB (any case); all binary.
    if (suffix.size() == 3 && (suffix[1] == 'i' || suffix[1] == 'I') && (suffix[2] == 'b' || suffix[2] == 'B')) {
        suffix = suffix.substr(0, 1);
    } else if (suffix.size() == 2 && (suffix[1] == 'b' || suffix[1] == 'B')) {
        suffix = suffix.substr(0, 1);
    }
    uint64_t unit = 1;
    if (suffix.size() > 1) return std::nullopt;
    if (suffix.size() == 1) {
        switch (suffix[0]) {
            case 'k': case 'K': unit = kKiB; break;
            case 'm': case 'M': unit = kMiB; break;
            case 'g': case 'G': unit = kGiB; break;
            case 'b': case 'B': unit = 1; break;
            default: return std::nullopt;
        }
    }
    if (value > UINT64_MAX / unit) return std::nullopt;
    return value * unit;
}

std::optional<std::vector<uint64_t>> parse_size_list(std::string_view text) {
    std::vector<uint64_t> sizes;
    while (!text.empty()) {
        size_t comma = text.find(',');
        auto size = parse_size(text.substr(0, comma));
        if (!size || *size == 0) return std::nullopt;
        sizes.push_back(*size);
        if (comma == std::string_view::npos) break;
        text.remove_prefix(comma + 1);
    }
    if (sizes.empty()) return std::nullopt;
    return sizes;
}

std::string format_size(uint64_t bytes) {
    if (bytes != 0 && bytes % kGiB == 0) return std::to_string(bytes / kGiB) + "G";
    if (bytes != 0 && bytes % kMiB == 0) return std::to_string(bytes / kMiB) + "M";
    if (bytes != 0 && bytes % kKiB == 0) return std::to_string(bytes / kKiB) + "K";
    return std::to_string(bytes);
}

}  // namespace ringpager::sim
