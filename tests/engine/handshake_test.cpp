// Pins the handshake parser: every Firecracker field shape is accepted, every
// malformed input of SPEC §5 is refused with a message naming the fault.
#include <gtest/gtest.h>

#include "ringpager/protocol.hpp"

using namespace ringpager;

namespace {

std::string region(uint64_t base, uint64_t size, uint64_t offset, const std::string& page_fields) {
    return "{\"base_host_virt_addr\":" + std::to_string(base) + ",\"size\":" + std::to_string(size) +
           ",\"offset\":" + std::to_string(offset) + page_fields + "}";
}

bool parse(const std::string& json, Handshake& out, std::string& error) { return parse_handshake(json, out, error); }

std::string parse_error(const std::string& json) {
    Handshake h;
    std::string error;
    EXPECT_FALSE(parse(json, h, error)) << json;
    return error;
}

TEST(HandshakeScan, FindsTheEndOfTheArrayAcrossPartialReads) {
    const std::string json = "[" + region(4096, 8192, 0, "") + "]";
    size_t end = 0;
    std::string error;
    for (size_t cut = 0; cut < json.size(); cut++)
        EXPECT_EQ(scan_json_array(json.substr(0, cut), end, error), ScanStatus::incomplete) << cut;
    ASSERT_EQ(scan_json_array(json + "trailing", end, error), ScanStatus::complete);
    EXPECT_EQ(end, json.size());
}

TEST(HandshakeScan, BracketsInsideStringsDoNotCount) {
    size_t end = 0;
    std::string error;
    EXPECT_EQ(scan_json_array(R"([{"x":"]\"]"}])", end, error), ScanStatus::complete);
    EXPECT_EQ(end, 14u);
}

TEST(HandshakeScan, RefusesNonArrays) {
    size_t end = 0;
    std::string error;
    EXPECT_EQ(scan_json_array("  {\"a\":1}", end, error), ScanStatus::invalid);
    EXPECT_NE(error.find("not a JSON array"), std::string::npos);
}

TEST(HandshakeParse, FirecrackerOneDotOneHasNoPageSize) {
    Handshake h;
    std::string error;
    ASSERT_TRUE(parse("[" + region(1 << 20, 8192, 4096, "") + "]", h, error)) << error;
    ASSERT_EQ(h.regions.size(), 1u);
    EXPECT_EQ(h.regions[0].page_size_bytes, 4096u);
    EXPECT_EQ(h.regions[0].offset_bytes, 4096u);
    EXPECT_EQ(h.shape, HandshakeShape::no_page_size);
}

TEST(HandshakeParse, PageSizeKibCarriesBytesDespiteItsName) {
    Handshake h;
    std::string error;
    ASSERT_TRUE(parse("[" + region(2 << 20, 4 << 20, 0, ",\"page_size_kib\":2097152") + "]", h, error)) << error;
    EXPECT_EQ(h.regions[0].page_size_bytes, 2097152u);
    EXPECT_EQ(h.shape, HandshakeShape::page_size_kib);
}

TEST(HandshakeParse, BothFieldsAgreeingIsTheModernShape) {
    Handshake h;
    std::string error;
    const std::string both = ",\"page_size\":4096,\"page_size_kib\":4096";
    ASSERT_TRUE(parse("[" + region(0x10000, 8192, 0, both) + "," + region(0x40000, 4096, 8192, both) + "]", h, error))
        << error;
    EXPECT_EQ(h.regions.size(), 2u);
    EXPECT_EQ(h.shape, HandshakeShape::both_fields);
}

TEST(HandshakeParse, ContradictingPageSizesAreRefused) {
    EXPECT_NE(parse_error("[" + region(0, 4096, 0, ",\"page_size\":4096,\"page_size_kib\":2097152") + "]")
                  .find("contradicts"),
              std::string::npos);
}

TEST(HandshakeParse, UnknownPageSizeIsRefused) {
    EXPECT_NE(parse_error("[" + region(0, 4096, 0, ",\"page_size_kib\":4") + "]").find("unknown page size 4"),
              std::string::npos);
    EXPECT_NE(parse_error("[" + region(0, 65536, 0, ",\"page_size\":65536") + "]").find("unknown page size"),
              std::string::npos);
}

TEST(HandshakeParse, ZeroRegionsIsRefused) { EXPECT_EQ(parse_error("[]"), "handshake has zero regions"); }

TEST(HandshakeParse, MalformedJsonIsRefused) {
    EXPECT_EQ(parse_error("[{\"size\":1,}]"), "handshake is not valid JSON");
    EXPECT_EQ(parse_error("{\"a\":1}"), "handshake is not a JSON array");
}

TEST(HandshakeParse, MissingAndMistypedFieldsNameTheRegionAndField) {
    EXPECT_EQ(parse_error(R"([{"size":4096,"offset":0}])"), "region 0: missing field \"base_host_virt_addr\"");
    EXPECT_EQ(parse_error(R"([{"base_host_virt_addr":0,"size":-4096,"offset":0}])"),
              "region 0: field \"size\" is not a non-negative integer");
    EXPECT_EQ(parse_error(R"([{"base_host_virt_addr":0,"size":"4096","offset":0}])"),
              "region 0: field \"size\" is not a non-negative integer");
    EXPECT_EQ(parse_error(R"([{"base_host_virt_addr":0,"size":4096.5,"offset":0}])"),
              "region 0: field \"size\" is not a non-negative integer");
    EXPECT_EQ(parse_error("[" + region(0, 4096, 0, "") + ",7]"), "region 1 is not a JSON object");
}

TEST(HandshakeParse, MisalignedAndEmptyRegionsAreRefused) {
    EXPECT_NE(parse_error("[" + region(100, 4096, 0, "") + "]").find("multiples of the page size"), std::string::npos);
    EXPECT_NE(parse_error("[" + region(0, 4000, 0, "") + "]").find("multiples of the page size"), std::string::npos);
    EXPECT_NE(parse_error("[" + region(0, 4096, 512, "") + "]").find("multiples of the page size"), std::string::npos);
    EXPECT_EQ(parse_error("[" + region(0, 0, 0, "") + "]"), "region 0: size is zero");
    EXPECT_NE(parse_error("[" + region(0, 2 << 20, 0, ",\"page_size\":2097152,\"page_size_kib\":2097152") + "," +
                          region(3 << 20, 4096, 0, ",\"page_size\":2097152,\"page_size_kib\":2097152") + "]")
                  .find("region 1"),
              std::string::npos);
}

TEST(HandshakeParse, OverlappingRegionsAreRefused) {
    EXPECT_NE(parse_error("[" + region(0x10000, 0x4000, 0, "") + "," + region(0x12000, 0x4000, 0x4000, "") + "]")
                  .find("overlap"),
              std::string::npos);
}

TEST(HandshakeParse, MixedShapesAcrossRegionsAreRefused) {
    EXPECT_NE(parse_error("[" + region(0, 4096, 0, "") + "," + region(8192, 4096, 4096, ",\"page_size\":4096") + "]")
                  .find("disagree"),
              std::string::npos);
}

TEST(HandshakeParse, RegionsMustFitTheSnapshot) {
    Handshake h;
    std::string error;
    ASSERT_TRUE(parse("[" + region(0, 8192, 4096, "") + "]", h, error));
    EXPECT_TRUE(check_regions_fit(h.regions, 12288, error));
    EXPECT_FALSE(check_regions_fit(h.regions, 8192, error));
    EXPECT_EQ(error, "region 0 (offset 4096, size 8192) ends past the snapshot (8192 bytes)");
}

TEST(HandshakeParse, OneVmHasOnePageSize) {
    // The cross-tenant bug: a 4 KiB region beside one claiming 2 MiB pages.
    const std::string huge = ",\"page_size\":2097152,\"page_size_kib\":2097152";
    const std::string small = ",\"page_size\":4096,\"page_size_kib\":4096";
    EXPECT_EQ(parse_error("[" + region(0, 1 << 20, 0, small) + "," + region(4 << 20, 2 << 20, 2 << 20, huge) + "]"),
              "regions disagree on the page size (region 0: 4096 bytes, region 1: 2097152 bytes); one VM has one "
              "page size");
}

TEST(HandshakeParse, RegionsOverlappingInFileOffsetAreRefused) {
    // Disjoint addresses, one file range served twice: 64 such regions once
    // sized 64 times the source's worth of page state.
    EXPECT_EQ(parse_error("[" + region(0, 0x4000, 0, "") + "," + region(0x100000, 0x4000, 0x3000, "") + "]"),
              "regions overlap in file offset at 12288 (each byte of the memory file belongs to one region)");
    Handshake h;
    std::string error;
    EXPECT_TRUE(parse("[" + region(0, 0x4000, 0x4000, "") + "," + region(0x100000, 0x4000, 0, "") + "]", h, error))
        << error;
}

TEST(HandshakeLimitsTest, GuestSizeIsBoundedBySourceAndMaxVmMemory) {
    Handshake h;
    std::string error;
    ASSERT_TRUE(parse("[" + region(0, 8192, 0, "") + "," + region(1 << 20, 8192, 8192, "") + "]", h, error));
    EXPECT_TRUE(check_handshake_limits(h, {16384, 0}, error)) << error;
    EXPECT_TRUE(check_handshake_limits(h, {1 << 20, 16384}, error)) << error;
    EXPECT_FALSE(check_handshake_limits(h, {1 << 20, 12288}, error));
    EXPECT_EQ(error, "guest memory of 16384 bytes exceeds the 12288-byte limit (--max-vm-memory)");
    EXPECT_FALSE(check_handshake_limits(h, {12288, 0}, error));
    EXPECT_EQ(error, "region 1 (offset 8192, size 8192) ends past the snapshot (12288 bytes)");
}

TEST(HandshakeParse, DuplicateKeysAreRefused) {
    // Last value wins in a lenient parser: "size" would silently be 8192.
    EXPECT_EQ(parse_error(R"([{"base_host_virt_addr":0,"size":4096,"size":8192,"offset":0}])"),
              "handshake is not valid JSON: duplicate key \"size\" in object at depth 2");
}

TEST(HandshakeScan, PeerBytesInTheErrorAreEscaped) {
    size_t end = 0;
    std::string error;
    EXPECT_EQ(scan_json_array("\x1b[2J", end, error), ScanStatus::invalid);
    EXPECT_EQ(error, "handshake is not a JSON array (starts with '\\x1b')");
}

}  // namespace
