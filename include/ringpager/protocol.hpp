// The Firecracker UFFD handshake: a JSON array of regions sent with the uffd,
// no length prefix. These functions are pure so every malformed shape can be
// unit tested without sockets.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "ringpager/region.hpp"

namespace ringpager {

// Handshakes larger than this are refused: four regions take ~500 bytes.
inline constexpr size_t kMaxHandshakeBytes = 64 * 1024;

// Which Firecracker generation the field shape points to (SPEC §1).
enum class HandshakeShape {
    no_page_size,     // 1.1–1.6: no page size fields (4096)
    page_size_kib,    // 1.7–1.11: only page_size_kib, value in bytes
    both_fields,      // 1.12+: page_size and page_size_kib, equal
};

enum class ScanStatus { incomplete, complete, invalid };

// Finds the end of the top-level JSON array at the start of `bytes` (after
// optional whitespace). On `complete`, `end` is one past the closing bracket.
ScanStatus scan_json_array(std::string_view bytes, size_t& end, std::string& error);

struct Handshake {
    RegionList regions;
    HandshakeShape shape = HandshakeShape::both_fields;
};

// Parses and checks a complete JSON array: non-empty, every region with
// base/size/offset, a known page size (4096 or 2097152) shared by every
// region, page-aligned base, size and offset, regions disjoint in address and
// in file offset. Returns false with a one-line error naming the region and
// field.
bool parse_handshake(std::string_view json, Handshake& out, std::string& error);

// Checks the regions against a source of `source_size_bytes`: every region's
// [offset, offset+size) must lie inside it.
bool check_regions_fit(const RegionList& regions, uint64_t source_size_bytes, std::string& error);

// What a parsed handshake may ask of the engine (SPEC §5).
struct HandshakeLimits {
    uint64_t source_size_bytes = 0;    // every region lies inside the source
    uint64_t max_vm_memory_bytes = 0;  // total guest memory; 0: the source size
};

// The handshake as a contract: every region inside the source and the
// guest no larger than max_vm_memory_bytes. Together with parse_handshake's
// checks, no accepted handshake can make the engine read outside the source
// or size anything from more than the source's bytes.
bool check_handshake_limits(const Handshake& handshake, const HandshakeLimits& limits, std::string& error);

const char* shape_name(HandshakeShape shape);

}  // namespace ringpager
