// Byte sizes on the command line: "4096", "4K", "64M", "2G" (binary units).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ringpager::sim {

inline constexpr uint64_t kKiB = 1024;
inline constexpr uint64_t kMiB = 1024 * kKiB;
inline constexpr uint64_t kGiB = 1024 * kMiB;
inline constexpr uint64_t kSmallPageBytes = 4 * kKiB;
inline constexpr uint64_t kHugePageBytes = 2 * kMiB;

std::optional<uint64_t> parse_size(std::string_view text);
// "64M,32M,8M" to sizes; nullopt when any element is malformed or the list is empty.
std::optional<std::vector<uint64_t>> parse_size_list(std::string_view text);
// 67108864 -> "64M"; exact sizes only, else plain bytes.
std::string format_size(uint64_t bytes);

}  // namespace ringpager::sim
