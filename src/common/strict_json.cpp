// Two passes: a SAX pass that only checks (keys, depth, syntax) and stops at
// the first fault, then nlohmann's own DOM parse of text that is known good.
// The inputs are small (a config file, a handshake), so parsing twice is
// cheaper than a hand-written DOM builder to get wrong.
#include "common/strict_json.hpp"

#include <functional>
#include <set>
#include <vector>

#include "common/log.hpp"

namespace ringpager {
namespace {

using json = nlohmann::json;

// nlohmann's messages read "[json.exception.parse_error.101] parse error at
// line 1, column 3: syntax error while parsing value - invalid literal; last
// read: 'tx'". Keeps the part after the position and escapes the input token
// it quotes (nlohmann only escapes control characters in it).
std::string describe_parse_error(const std::string& what, const std::string& token) {
    std::string text = what;
    if (!text.empty() && text[0] == '[') {
        const size_t close = text.find("] ");
        if (close != std::string::npos) text.erase(0, close + 2);
    }
    if (text.rfind("parse error", 0) == 0) {
        const size_t colon = text.find(": ");
        if (colon != std::string::npos) text.erase(0, colon + 2);
    }
    const std::string quoted = "'" + token + "'";
    const size_t at = token.empty() ? std::string::npos : text.find(quoted);
    if (at == std::string::npos) return escape_for_log(text, 2 * kLogQuoteChars);
    return text.substr(0, at) + "'" + escape_for_log(token) + "'" + text.substr(at + quoted.size());
}

// The checking pass (nlohmann's SAX interface): returning false stops parsing.
class StrictChecker {
public:
    StrictChecker(size_t max_depth, std::string& error) : max_depth_(max_depth), error_(error) {}

    bool null() { return true; }
    bool boolean(bool) { return true; }
    bool number_integer(json::number_integer_t) { return true; }
    bool number_unsigned(json::number_unsigned_t) { return true; }
    bool number_float(json::number_float_t, const json::string_t&) { return true; }
    bool string(json::string_t&) { return true; }
    bool binary(json::binary_t&) { return true; }

    bool start_object(size_t) { return open(); }
    bool start_array(size_t) { return open(); }
    bool end_object() { return close(); }
    bool end_array() { return close(); }

    bool key(json::string_t& name) {
        // The parser only reports keys inside an object, so the top frame is one.
        if (!frames_.back().insert(name).second) {
            error_ = "duplicate key \"" + escape_for_log(name) + "\" in object at depth " +
                     std::to_string(frames_.size());
            return false;
        }
        return true;
    }

    bool parse_error(size_t position, const std::string& last_token, const json::exception& e) {
        error_ = "invalid JSON at byte " + std::to_string(position) + ": " + describe_parse_error(e.what(), last_token);
        return false;
    }

private:
    bool open() {
        if (frames_.size() >= max_depth_) {
            error_ = "JSON nested deeper than " + std::to_string(max_depth_) + " levels";
            return false;
        }
        frames_.emplace_back();
        return true;
    }
    bool close() {
        frames_.pop_back();
        return true;
    }

    size_t max_depth_;
    std::string& error_;
    // One key set per open container, innermost last (an array's stays empty).
    std::vector<std::set<std::string, std::less<>>> frames_;
};

}  // namespace

bool parse_strict_json(std::string_view text, json& out, std::string& error, size_t max_depth) {
    StrictChecker checker(max_depth, error);
    if (!json::sax_parse(text.begin(), text.end(), &checker)) return false;
    out = json::parse(text.begin(), text.end(), nullptr, false);
    if (out.is_discarded()) {  // the checking pass accepted it, so this is a bug, not bad input
        error = "invalid JSON (refused by the second parsing pass)";
        return false;
    }
    return true;
}

}  // namespace ringpager
