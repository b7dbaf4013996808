// Serializes the handshake exactly like Firecracker's serde_json output.
#include "guestsim/handshake.hpp"

namespace ringpager::sim {

std::string handshake_json(const RegionList& regions, HandshakeShape shape) {
    // Written by hand rather than through a JSON library so the key order and
    // the absence of whitespace are pinned, as serde_json::to_string emits them.
    std::string out = "[";
    for (size_t i = 0; i < regions.size(); ++i) {
        const Region& r = regions[i];
        if (i > 0) out += ',';
        out += "{\"base_host_virt_addr\":" + std::to_string(r.base_host_virt_addr);
        out += ",\"size\":" + std::to_string(r.size_bytes);
        out += ",\"offset\":" + std::to_string(r.offset_bytes);
        switch (shape) {
            case HandshakeShape::v1_1:
                break;
            case HandshakeShape::v1_7:
                out += ",\"page_size_kib\":" + std::to_string(r.page_size_bytes);
                break;
            case HandshakeShape::v1_12:
                out += ",\"page_size\":" + std::to_string(r.page_size_bytes);
                out += ",\"page_size_kib\":" + std::to_string(r.page_size_bytes);
                break;
        }
        out += '}';
    }
    out += ']';
    return out;
}

std::optional<HandshakeShape> parse_handshake_shape(std::string_view text) {
    if (text == "1.1" || text == "v1_1") return HandshakeShape::v1_1;
    if (text == "1.7" || text == "v1_7") return HandshakeShape::v1_7;
    if (text == "1.12" || text == "v1_12") return HandshakeShape::v1_12;
    return std::nullopt;
}

const char* handshake_shape_name(HandshakeShape shape) {
    switch (shape) {
        case HandshakeShape::v1_1: return "1.1";
        case HandshakeShape::v1_7: return "1.7";
        case HandshakeShape::v1_12: return "1.12";
    }
    return "?";
}

}  // namespace ringpager::sim
