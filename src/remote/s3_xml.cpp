#include "remote/s3_xml.hpp"

#include <charconv>

namespace ringpager::remote::xml {
namespace {

void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xc0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xe0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
        out += static_cast<char>(0x80 | (cp & 0x3f));
    } else {
        out += static_cast<char>(0xf0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
        out += static_cast<char>(0x80 | (cp & 0x3f));
    }
}

std::optional<uint32_t> code_point(std::string_view ref) {   // "#65" or "#x41"
    int base = 10;
    ref.remove_prefix(1);
    if (!ref.empty() && (ref.front() == 'x' || ref.front() == 'X')) {
        base = 16;
        ref.remove_prefix(1);
    }
    uint32_t cp = 0;
    auto [end, ec] = std::from_chars(ref.data(), ref.data() + ref.size(), cp, base);
    if (ec != std::errc{} || end != ref.data() + ref.size() || ref.empty()) return std::nullopt;
    if (cp == 0 || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return std::nullopt;
    return cp;
}

}  // namespace

std::optional<std::string_view> find_element(std::string_view doc, std::string_view tag, size_t from, size_t* next) {
    std::string open = "<" + std::string(tag);
    std::string close = "</" + std::string(tag) + ">";
    size_t at = from;
    while ((at = doc.find(open, at)) != std::string_view::npos) {
        size_t after = at + open.size();
        if (after >= doc.size()) return std::nullopt;
        char c = doc[after];
        if (c == '/' && after + 1 < doc.size() && doc[after + 1] == '>') {   // <Tag/>: empty
            if (next) *next = after + 2;
            return std::string_view{};
        }
        if (c != '>' && c != ' ' && c != '\t' && c != '\r' && c != '\n') {   // <TagLonger>: not ours
            at = after;
            continue;
        }
        size_t body = doc.find('>', after);
        if (body == std::string_view::npos) return std::nullopt;
        ++body;
        size_t end = doc.find(close, body);
        if (end == std::string_view::npos) return std::nullopt;
        if (next) *next = end + close.size();
        return doc.substr(body, end - body);
    }
    return std::nullopt;
}

std::optional<std::string> unescape(std::string_view raw) {
    std::string out;
    out.reserve(raw.size());
    size_t i = 0;
    while (i < raw.size()) {
        if (raw[i] != '&') {
            out += raw[i++];
            continue;
        }
        size_t semi = raw.find(';', i);
        if (semi == std::string_view::npos || semi - i > 12) return std::nullopt;
        std::string_view ref = raw.substr(i + 1, semi - i - 1);
        if (ref == "amp") {
            out += '&';
        } else if (ref == "lt") {
            out += '<';
        } else if (ref == "gt") {
            out += '>';
        } else if (ref == "quot") {
            out += '"';
        } else if (ref == "apos") {
            out += '\'';
        } else if (!ref.empty() && ref.front() == '#') {
            auto cp = code_point(ref);
            if (!cp) return std::nullopt;
            append_utf8(out, *cp);
        } else {
            return std::nullopt;
        }
        i = semi + 1;
    }
    return out;
}

std::optional<std::string> text(std::string_view doc, std::string_view tag, size_t max_bytes) {
    auto raw = find_element(doc, tag);
    if (!raw) return std::nullopt;
    auto decoded = unescape(*raw);
    if (!decoded || decoded->size() > max_bytes) return std::nullopt;
    return decoded;
}

std::string escape(std::string_view text) {
    std::string out;
    for (char c : text) {
        switch (c) {
        case '&': out += "&amp;"; break;
        case '<': out += "&lt;"; break;
        case '>': out += "&gt;"; break;
        case '"': out += "&quot;"; break;
        case '\'': out += "&apos;"; break;
        default: out += c;
        }
    }
    return out;
}

}  // namespace ringpager::remote::xml
