// libFuzzer target: the `serve --config` parser (src/cli/serve_config.cpp)
// and under it parse_strict_json (src/common/strict_json.cpp), which is
// checked against nlohmann's own, lenient parse of the same text.
#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "cli/serve_config.hpp"
#include "common/strict_json.hpp"
#include "fuzz_check.hpp"

namespace {

using namespace ringpager;
using ringpager::fuzz::printable_line;

const std::string kPath = "/etc/ringpager/fuzz.json";

// parse_strict_json accepts exactly what nlohmann accepts, minus duplicate
// keys and deep nesting, and then yields the same document.
void check_strict_json(std::string_view text) {
    nlohmann::json strict;
    std::string error;
    const bool accepted = parse_strict_json(text, strict, error);
    const nlohmann::json lenient = nlohmann::json::parse(text.begin(), text.end(), nullptr, false);
    if (accepted) {
        FUZZ_REQUIRE(!lenient.is_discarded() && strict == lenient);
        return;
    }
    FUZZ_REQUIRE_ERROR(printable_line(error), error);
    const bool strict_only = error.rfind("duplicate key \"", 0) == 0 || error.rfind("JSON nested deeper than ", 0) == 0;
    FUZZ_REQUIRE_ERROR(strict_only || error.rfind("invalid JSON at byte ", 0) == 0, error);
    if (!strict_only) FUZZ_REQUIRE(lenient.is_discarded());
}

// Every config parse_serve_config accepts: 1 to 1024 listeners, each with a
// distinct non-empty socket and a non-empty source path, neither holding a
// NUL byte (it would cut the path short at open()), and the listeners are
// the document's, in order.
void check_accepted(std::string_view text, const std::vector<ListenerSpec>& specs) {
    FUZZ_REQUIRE(specs.size() >= 1 && specs.size() <= kMaxConfigListeners);
    std::set<std::string> sockets;
    for (const ListenerSpec& spec : specs) {
        FUZZ_REQUIRE(!spec.socket.empty() && spec.socket.find('\0') == std::string::npos);
        FUZZ_REQUIRE(!spec.path.empty() && spec.path.find('\0') == std::string::npos);
        FUZZ_REQUIRE(spec.mode == ServeMode::lazy || spec.mode == ServeMode::prefetch);
        FUZZ_REQUIRE(sockets.insert(spec.socket).second);
    }
    const nlohmann::json doc = nlohmann::json::parse(text.begin(), text.end(), nullptr, false);
    FUZZ_REQUIRE(doc.is_object() && doc.size() == 1 && doc["listeners"].size() == specs.size());
    for (size_t i = 0; i < specs.size(); i++) {
        const nlohmann::json& l = doc["listeners"][i];
        FUZZ_REQUIRE(l["socket"] == specs[i].socket);
        FUZZ_REQUIRE(l[specs[i].layered ? "snapshot" : "mem_file"] == specs[i].path);
        FUZZ_REQUIRE(!l.contains(specs[i].layered ? "mem_file" : "snapshot"));
        FUZZ_REQUIRE((specs[i].mode == ServeMode::prefetch) == (l.contains("mode") && l["mode"] == "prefetch"));
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    check_strict_json(text);

    std::vector<ListenerSpec> specs(1);  // parse_serve_config appends, and only on success
    std::string error;
    if (parse_serve_config(text, kPath, specs, error)) {
        specs.erase(specs.begin());
        check_accepted(text, specs);
        return 0;
    }
    FUZZ_REQUIRE(specs.size() == 1);
    FUZZ_REQUIRE_ERROR(printable_line(error) && error.rfind("config file " + kPath + ": ", 0) == 0, error);
    FUZZ_REQUIRE_ERROR(error.size() <= kPath.size() + 400, error);  // quoted values are bounded
    return 0;
}
