// What the fuzz targets share: an invariant check that names the failed
// condition before it aborts (libFuzzer then saves the input as a crash), and
// the shape every refusal must have.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>

#include "common/log.hpp"

#define FUZZ_REQUIRE(condition)                                                                  \
    do {                                                                                         \
        if (!(condition)) {                                                                      \
            std::fprintf(stderr, "invariant failed: %s (%s:%d)\n", #condition, __FILE__, __LINE__); \
            std::abort();                                                                        \
        }                                                                                        \
    } while (0)

// The same for a check on an error text, which is shown (escaped) on failure.
#define FUZZ_REQUIRE_ERROR(condition, error)                                                          \
    do {                                                                                              \
        if (!(condition)) {                                                                           \
            std::fprintf(stderr, "invariant failed: %s (%s:%d) for the error \"%s\"\n", #condition,     \
                         __FILE__, __LINE__, ringpager::escape_for_log(error, 4096).c_str());         \
            std::abort();                                                                             \
        }                                                                                             \
    } while (0)

namespace ringpager::fuzz {

// An error is one non-empty line (SPEC §4: errors are one line).
inline bool one_line(const std::string& error) {
    return !error.empty() && error.find('\n') == std::string::npos && error.find('\r') == std::string::npos;
}

// ... of printable ASCII only: file and peer bytes in it were escaped (SPEC §5).
inline bool printable_line(const std::string& error) {
    if (!one_line(error)) return false;
    for (const char c : error)
        if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e) return false;
    return true;
}

}  // namespace ringpager::fuzz
