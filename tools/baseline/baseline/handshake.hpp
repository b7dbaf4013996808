// Reading and validating Firecracker's handshake (all three shapes, SPEC §1).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "ringpager/file_desc.hpp"
#include "ringpager/region.hpp"

namespace ringpager::baseline {

inline constexpr size_t kMaxHandshakeBytes = 64 * 1024;

// Parses the JSON array: page size from "page_size" and/or "page_size_kib"
// (bytes in both; equal when both are given; 4096 when absent); 4 KiB or
// 2 MiB only; bases and sizes page aligned; regions must not overlap and must
// lie inside a memory file of `file_size_bytes`. On failure returns nullopt
// and sets `error` to one line naming the fault.
std::optional<RegionList> parse_handshake(std::string_view json, uint64_t file_size_bytes, std::string& error);

struct Handshake {
    RegionList regions;
    FileDesc uffd;
};

// Reads from `conn` until a complete JSON array has arrived (bounded by
// kMaxHandshakeBytes and `timeout_ms`, abandoned when `stop_fd` becomes
// readable). Exactly one fd, a userfaultfd, must come with it; every other
// received fd is closed.
std::optional<Handshake> read_handshake(int conn, int stop_fd, int timeout_ms, uint64_t file_size_bytes,
                                        std::string& error);

}  // namespace ringpager::baseline
