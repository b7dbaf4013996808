// libFuzzer target: the Firecracker handshake as the acceptor takes it
// (src/server/listener.cpp): scan_json_array finds the end of the array in
// the bytes received so far, parse_handshake checks the regions,
// check_handshake_limits checks them against the source and the guest size
// bound. Input: 8 bytes, the source size (little-endian), 8 bytes of
// --max-vm-memory (0: the source size), then the bytes the peer sent.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "fuzz_check.hpp"
#include "ringpager/protocol.hpp"

namespace {

using namespace ringpager;
using ringpager::fuzz::printable_line;

bool known_page_size(uint64_t bytes) { return bytes == 4096 || bytes == 2 * 1024 * 1024; }

// Every handshake parse_handshake accepts (SPEC §1, §5): 1 to 64 regions,
// one known page size for all of them, page-aligned non-empty regions whose
// address and file ranges do not wrap, and no two regions overlapping in the
// address space or in the file.
void check_parsed(const Handshake& h) {
    FUZZ_REQUIRE(!h.regions.empty() && h.regions.size() <= 64);
    for (const Region& r : h.regions) {
        const uint64_t ps = r.page_size_bytes;
        FUZZ_REQUIRE(known_page_size(ps));
        FUZZ_REQUIRE(r.size_bytes > 0);
        FUZZ_REQUIRE(r.base_host_virt_addr % ps == 0 && r.size_bytes % ps == 0 && r.offset_bytes % ps == 0);
        FUZZ_REQUIRE(r.base_host_virt_addr + r.size_bytes > r.base_host_virt_addr);
        FUZZ_REQUIRE(r.offset_bytes + r.size_bytes > r.offset_bytes);
        FUZZ_REQUIRE(r.page_count() > 0 && r.page_count() * ps == r.size_bytes);
    }
    for (const Region& r : h.regions) FUZZ_REQUIRE(r.page_size_bytes == h.regions[0].page_size_bytes);
    RegionList sorted = h.regions;
    std::sort(sorted.begin(), sorted.end(),
              [](const Region& a, const Region& b) { return a.base_host_virt_addr < b.base_host_virt_addr; });
    for (size_t i = 1; i < sorted.size(); i++) FUZZ_REQUIRE(sorted[i - 1].end_addr() <= sorted[i].base_host_virt_addr);
    std::sort(sorted.begin(), sorted.end(), [](const Region& a, const Region& b) { return a.offset_bytes < b.offset_bytes; });
    for (size_t i = 1; i < sorted.size(); i++)
        FUZZ_REQUIRE(sorted[i - 1].offset_bytes + sorted[i - 1].size_bytes <= sorted[i].offset_bytes);
}

// The regions written back in the shape parse_handshake detected parse to the
// same handshake: what it accepts depends on the regions only.
void check_round_trip(const Handshake& h) {
    std::string json = "[";
    for (const Region& r : h.regions) {
        if (json.size() > 1) json += ",";
        json += "{\"base_host_virt_addr\":" + std::to_string(r.base_host_virt_addr) +
                ",\"size\":" + std::to_string(r.size_bytes) + ",\"offset\":" + std::to_string(r.offset_bytes);
        const std::string ps = std::to_string(r.page_size_bytes);
        if (h.shape == HandshakeShape::both_fields) json += ",\"page_size\":" + ps;
        if (h.shape != HandshakeShape::no_page_size) json += ",\"page_size_kib\":" + ps;
        json += "}";
    }
    json += "]";
    Handshake again;
    std::string error;
    FUZZ_REQUIRE(parse_handshake(json, again, error));
    FUZZ_REQUIRE(again.shape == h.shape && again.regions.size() == h.regions.size());
    for (size_t i = 0; i < h.regions.size(); i++) {
        const Region &a = h.regions[i], &b = again.regions[i];
        FUZZ_REQUIRE(a.base_host_virt_addr == b.base_host_virt_addr && a.size_bytes == b.size_bytes &&
                     a.offset_bytes == b.offset_bytes && a.page_size_bytes == b.page_size_bytes);
    }
}

bool inside_source(const Region& r, uint64_t source_size_bytes) {
    return r.offset_bytes <= source_size_bytes && r.size_bytes <= source_size_bytes - r.offset_bytes;
}

// The acceptor's checks, in its order, on a complete handshake: true when the
// engine would start serving it. A new check the acceptor makes goes here, in
// the same place as in src/server/listener.cpp.
bool accepted_by_acceptor(std::string_view json, const HandshakeLimits& limits, Handshake& handshake) {
    std::string error;
    if (!parse_handshake(json, handshake, error)) {
        FUZZ_REQUIRE_ERROR(printable_line(error), error);
        return false;
    }
    check_parsed(handshake);
    check_round_trip(handshake);
    const bool fits = check_regions_fit(handshake.regions, limits.source_size_bytes, error);
    FUZZ_REQUIRE(fits == std::all_of(handshake.regions.begin(), handshake.regions.end(),
                                     [&](const Region& r) { return inside_source(r, limits.source_size_bytes); }));
    const bool within = check_handshake_limits(handshake, limits, error);
    FUZZ_REQUIRE(within <= fits);  // the limits include the fit
    if (!within) FUZZ_REQUIRE_ERROR(printable_line(error), error);
    return within;
}

// Invariants of a handshake the engine serves: the place for every promise the
// acceptor's validation makes (validate_handshake's, as it grows: one page
// size for all regions, no overlap in the file, bounded guest size). A VM
// served from a handshake that breaks one reads outside the snapshot or
// serves a page twice.
void check_servable(const Handshake& h, const HandshakeLimits& limits) {
    check_parsed(h);
    uint64_t guest_bytes = 0;
    for (const Region& r : h.regions) {
        FUZZ_REQUIRE(inside_source(r, limits.source_size_bytes));
        // The last byte any fault in this region reads lies inside the source.
        FUZZ_REQUIRE(r.offset_bytes + (r.end_addr() - 1 - r.base_host_virt_addr) < limits.source_size_bytes);
        // Every read is one run of pages in one region, at most a buffer
        // slot: 64 KiB of 4 KiB pages, or one 2 MiB page; either way a whole
        // number of this VM's pages, the one page size all regions share.
        FUZZ_REQUIRE(r.page_size_bytes == h.regions[0].page_size_bytes);
        guest_bytes += r.size_bytes;  // cannot wrap: disjoint in the file, inside the source
        FUZZ_REQUIRE(guest_bytes <= limits.source_size_bytes);
    }
    // The guest, and so the page states sized from it, is bounded.
    const uint64_t max = limits.max_vm_memory_bytes != 0 ? limits.max_vm_memory_bytes : limits.source_size_bytes;
    FUZZ_REQUIRE(guest_bytes <= max);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    HandshakeLimits limits;
    if (size < 16) return 0;
    std::memcpy(&limits.source_size_bytes, data, 8);
    std::memcpy(&limits.max_vm_memory_bytes, data + 8, 8);
    const std::string_view bytes(reinterpret_cast<const char*>(data) + 16, size - 16);
    if (bytes.size() > kMaxHandshakeBytes) return 0;  // the acceptor refuses before it scans

    size_t end = 0;
    std::string error;
    Handshake handshake;
    switch (scan_json_array(bytes, end, error)) {
        case ScanStatus::invalid:
            FUZZ_REQUIRE_ERROR(printable_line(error), error);
            return 0;
        case ScanStatus::complete:
            FUZZ_REQUIRE(end > 0 && end <= bytes.size() && (bytes[end - 1] == ']' || bytes[end - 1] == '}'));
            if (accepted_by_acceptor(bytes.substr(0, end), limits, handshake)) check_servable(handshake, limits);
            return 0;
        case ScanStatus::incomplete:
            // The acceptor waits for more bytes; parse_handshake is a pure
            // function of any text, so it gets this one too.
            if (accepted_by_acceptor(bytes, limits, handshake)) check_servable(handshake, limits);
            return 0;
    }
    return 0;
}
