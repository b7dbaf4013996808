// The handshake message Firecracker sends to the page-fault handler, in the
// three shapes its releases have used (SPEC §1).
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "ringpager/region.hpp"

namespace ringpager::sim {

enum class HandshakeShape {
    v1_1,   // Firecracker 1.1-1.6: no page size fields (means 4096)
    v1_7,   // Firecracker 1.7-1.11: only "page_size_kib", whose value is in BYTES
    v1_12,  // Firecracker 1.12+: "page_size" and "page_size_kib", same byte value
};

// The compact JSON array Firecracker sends, byte for byte: one object per
// region with the keys in Firecracker's serialization order, no whitespace.
std::string handshake_json(const RegionList& regions, HandshakeShape shape);

// "1.1", "1.7", "1.12" (also "v1_1" etc.) to a shape; nullopt when unknown.
std::optional<HandshakeShape> parse_handshake_shape(std::string_view text);
const char* handshake_shape_name(HandshakeShape shape);

}  // namespace ringpager::sim
