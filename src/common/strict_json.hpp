// Strict JSON: nlohmann::json parsing that also refuses what Firecracker's own
// parser (serde) refuses and nlohmann accepts, duplicate object keys, and that
// bounds nesting, since every JSON ringpager reads has a shallow fixed shape.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace ringpager {

// Deep enough for every ringpager input (a config file is 3 levels, a
// handshake 2), shallow enough that a hostile input costs nothing to refuse.
inline constexpr size_t kStrictJsonMaxDepth = 16;

// Parses `text` as exactly one JSON value (whitespace around it allowed) into
// `out`. Refuses with a one-line `error`: invalid JSON (naming the byte where
// parsing stopped), an object holding the same key twice at any depth, and
// containers nested deeper than `max_depth` (the outermost is depth 1). Input
// bytes quoted in `error` are escaped and bounded (escape_for_log). Throws
// nothing but std::bad_alloc; `out` is unspecified on failure.
bool parse_strict_json(std::string_view text, nlohmann::json& out, std::string& error,
                       size_t max_depth = kStrictJsonMaxDepth);

}  // namespace ringpager
