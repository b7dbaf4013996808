// libFuzzer target: the working-set file decoder (src/snapshot/working_set.cpp),
// which reads files an operator points `serve --working-set` at.
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.hpp"
#include "snapshot/working_set.hpp"

using namespace ringpager;
using ringpager::fuzz::printable_line;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view bytes(reinterpret_cast<const char*>(data), size);
    WorkingSet set;
    std::string error;
    if (!decode_working_set(bytes, set, error)) {
        FUZZ_REQUIRE_ERROR(printable_line(error) && !error.empty() && error.size() < 200, error);
        return 0;
    }
    // Accepted: every run is non-empty and inside the snapshot, and the set
    // survives its own encoding unchanged.
    const uint64_t source_pages = set.identity.size_bytes / set.page_size_bytes;
    for (const PageRun& r : set.runs)
        FUZZ_REQUIRE(r.pages != 0 && r.first_page < source_pages && r.pages <= source_pages - r.first_page);
    WorkingSet again;
    FUZZ_REQUIRE(decode_working_set(encode_working_set(set), again, error));
    FUZZ_REQUIRE(again.identity == set.identity && again.page_size_bytes == set.page_size_bytes);
    FUZZ_REQUIRE(again.runs.size() == set.runs.size());
    for (size_t i = 0; i < set.runs.size(); i++)
        FUZZ_REQUIRE(again.runs[i].first_page == set.runs[i].first_page && again.runs[i].pages == set.runs[i].pages);
    return 0;
}
