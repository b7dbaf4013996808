// Parsing and validation of the Firecracker handshake JSON (SPEC §1, §5).
#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>

#include "common/log.hpp"
#include "common/strict_json.hpp"
#include "ringpager/protocol.hpp"

namespace ringpager {

ScanStatus scan_json_array(std::string_view bytes, size_t& end, std::string& error) {
    size_t i = 0;
    while (i < bytes.size() && std::isspace(static_cast<unsigned char>(bytes[i]))) i++;
    if (i == bytes.size()) return ScanStatus::incomplete;
    if (bytes[i] != '[') {
        // The byte is the peer's: never write it to a log raw.
        error = "handshake is not a JSON array (starts with '" + escape_for_log(bytes.substr(i, 1)) + "')";
        return ScanStatus::invalid;
    }
    int depth = 0;
    bool in_string = false;
    bool escaped = false;
    for (; i < bytes.size(); i++) {
        const char c = bytes[i];
        if (in_string) {
            if (escaped) escaped = false;
            else if (c == '\\') escaped = true;
            else if (c == '"') in_string = false;
            continue;
        }
        if (c == '"') in_string = true;
        else if (c == '[' || c == '{') depth++;
        else if (c == ']' || c == '}') {
            if (--depth == 0) {
                end = i + 1;
                return ScanStatus::complete;
            }
        }
        if (depth > 16) {
            error = "handshake JSON is nested deeper than any Firecracker message";
            return ScanStatus::invalid;
        }
    }
    return ScanStatus::incomplete;
}

namespace {

bool read_u64(const nlohmann::json& obj, const char* key, size_t index, bool required, uint64_t& out,
              bool& present, std::string& error) {
    auto it = obj.find(key);
    present = it != obj.end();
    if (!present) {
        if (required) error = "region " + std::to_string(index) + ": missing field \"" + key + "\"";
        return !required;
    }
    if (!it->is_number_unsigned()) {
        // nlohmann stores non-negative integers as unsigned; anything else is wrong here.
        error = "region " + std::to_string(index) + ": field \"" + key + "\" is not a non-negative integer";
        return false;
    }
    out = it->get<uint64_t>();
    return true;
}

bool known_page_size(uint64_t bytes) { return bytes == 4096 || bytes == 2 * 1024 * 1024; }

bool parse_region(const nlohmann::json& obj, size_t index, Region& region, int& shape_bits,
                  std::string& error) {
    if (!obj.is_object()) {
        error = "region " + std::to_string(index) + " is not a JSON object";
        return false;
    }
    bool present = false;
    if (!read_u64(obj, "base_host_virt_addr", index, true, region.base_host_virt_addr, present, error) ||
        !read_u64(obj, "size", index, true, region.size_bytes, present, error) ||
        !read_u64(obj, "offset", index, true, region.offset_bytes, present, error))
        return false;
    uint64_t page_size = 0, page_size_kib = 0;
    bool has_page_size = false, has_kib = false;
    if (!read_u64(obj, "page_size", index, false, page_size, has_page_size, error) ||
        !read_u64(obj, "page_size_kib", index, false, page_size_kib, has_kib, error))
        return false;
    // Firecracker 1.7–1.11 put the page size in bytes into "page_size_kib".
    if (has_page_size && has_kib && page_size != page_size_kib) {
        error = "region " + std::to_string(index) + ": page_size " + std::to_string(page_size) +
                " contradicts page_size_kib " + std::to_string(page_size_kib) + " (both are bytes)";
        return false;
    }
    region.page_size_bytes = has_page_size ? page_size : has_kib ? page_size_kib : 4096;
    shape_bits |= (has_page_size ? 1 : 0) | (has_kib ? 2 : 0) | (!has_page_size && !has_kib ? 4 : 0);
    const std::string where = "region " + std::to_string(index) + ": ";
    if (!known_page_size(region.page_size_bytes)) {
        error = where + "unknown page size " + std::to_string(region.page_size_bytes) +
                " (expected 4096 or 2097152 bytes)";
        return false;
    }
    const uint64_t ps = region.page_size_bytes;
    if (region.size_bytes == 0) {
        error = where + "size is zero";
        return false;
    }
    if (region.base_host_virt_addr % ps || region.size_bytes % ps || region.offset_bytes % ps) {
        error = where + "base_host_virt_addr, size and offset must be multiples of the page size " +
                std::to_string(ps);
        return false;
    }
    if (region.base_host_virt_addr + region.size_bytes < region.base_host_virt_addr ||
        region.offset_bytes + region.size_bytes < region.offset_bytes) {
        error = where + "address or offset range overflows";
        return false;
    }
    return true;
}

}  // namespace

bool parse_handshake(std::string_view json, Handshake& out, std::string& error) {
    // Strict: a key given twice (Firecracker's own parser refuses it) would
    // otherwise silently take its last value.
    nlohmann::json doc;
    std::string why;
    if (!parse_strict_json(json, doc, why)) {
        // A syntax error is named as such; what strictness adds is spelled out.
        error = why.rfind("invalid JSON", 0) == 0 ? "handshake is not valid JSON" : "handshake is not valid JSON: " + why;
        return false;
    }
    if (!doc.is_array()) {
        error = "handshake is not a JSON array";
        return false;
    }
    if (doc.empty()) {
        error = "handshake has zero regions";
        return false;
    }
    if (doc.size() > 64) {
        error = "handshake has " + std::to_string(doc.size()) + " regions (at most 64 accepted)";
        return false;
    }
    out.regions.clear();
    int shape_bits = 0;
    for (size_t i = 0; i < doc.size(); i++) {
        Region region;
        if (!parse_region(doc[i], i, region, shape_bits, error)) return false;
        out.regions.push_back(region);
    }
    if (shape_bits != 1 && shape_bits != 2 && shape_bits != 3 && shape_bits != 4) {
        error = "regions disagree on which page size fields they carry";
        return false;
    }
    out.shape = shape_bits == 4 ? HandshakeShape::no_page_size
                : shape_bits == 2 ? HandshakeShape::page_size_kib
                                  : HandshakeShape::both_fields;
    // One page size per VM: buffers, runs and installs are sized from it.
    for (size_t i = 1; i < out.regions.size(); i++) {
        if (out.regions[i].page_size_bytes != out.regions[0].page_size_bytes) {
            error = "regions disagree on the page size (region 0: " + std::to_string(out.regions[0].page_size_bytes) +
                    " bytes, region " + std::to_string(i) + ": " + std::to_string(out.regions[i].page_size_bytes) +
                    " bytes); one VM has one page size";
            return false;
        }
    }
    // Disjoint in address (one page, one place) and in file offset (no
    // snapshot byte is served twice, so the guest size is bounded by the file).
    std::vector<Region> sorted = out.regions;
    std::sort(sorted.begin(), sorted.end(),
              [](const Region& a, const Region& b) { return a.base_host_virt_addr < b.base_host_virt_addr; });
    for (size_t i = 1; i < sorted.size(); i++) {
        if (sorted[i].base_host_virt_addr < sorted[i - 1].end_addr()) {
            error = "regions overlap at address " + std::to_string(sorted[i].base_host_virt_addr);
            return false;
        }
    }
    std::sort(sorted.begin(), sorted.end(),
              [](const Region& a, const Region& b) { return a.offset_bytes < b.offset_bytes; });
    for (size_t i = 1; i < sorted.size(); i++) {
        if (sorted[i].offset_bytes < sorted[i - 1].offset_bytes + sorted[i - 1].size_bytes) {
            error = "regions overlap in file offset at " + std::to_string(sorted[i].offset_bytes) +
                    " (each byte of the memory file belongs to one region)";
            return false;
        }
    }
    return true;
}

bool check_regions_fit(const RegionList& regions, uint64_t source_size_bytes, std::string& error) {
    for (size_t i = 0; i < regions.size(); i++) {
        const Region& r = regions[i];
        if (r.offset_bytes + r.size_bytes > source_size_bytes) {
            error = "region " + std::to_string(i) + " (offset " + std::to_string(r.offset_bytes) + ", size " +
                    std::to_string(r.size_bytes) + ") ends past the snapshot (" +
                    std::to_string(source_size_bytes) + " bytes)";
            return false;
        }
    }
    return true;
}

bool check_handshake_limits(const Handshake& handshake, const HandshakeLimits& limits, std::string& error) {
    if (!check_regions_fit(handshake.regions, limits.source_size_bytes, error)) return false;
    // Regions are disjoint in file offset and inside the source, so this sum
    // cannot overflow: it is at most the source size.
    uint64_t total = 0;
    for (const Region& r : handshake.regions) total += r.size_bytes;
    const uint64_t max = limits.max_vm_memory_bytes != 0 ? limits.max_vm_memory_bytes : limits.source_size_bytes;
    if (total > max) {
        error = "guest memory of " + std::to_string(total) + " bytes exceeds the " + std::to_string(max) +
                "-byte limit (--max-vm-memory)";
        return false;
    }
    return true;
}

const char* shape_name(HandshakeShape shape) {
    switch (shape) {
        case HandshakeShape::no_page_size: return "firecracker-1.1-1.6";
        case HandshakeShape::page_size_kib: return "firecracker-1.7-1.11";
        case HandshakeShape::both_fields: return "firecracker-1.12+";
    }
    return "?";
}

}  // namespace ringpager
