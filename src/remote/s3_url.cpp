#include "remote/s3_url.hpp"

#include <algorithm>

#include "common/log.hpp"

namespace ringpager::remote {
namespace {

bool lower_or_digit(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

bool looks_like_ipv4(std::string_view name) {
    int dots = 0;
    for (char c : name) {
        if (c == '.') {
            ++dots;
        } else if (c < '0' || c > '9') {
            return false;
        }
    }
    return dots == 3;
}

}  // namespace

bool valid_bucket_name(std::string_view name) {
    if (name.size() < 3 || name.size() > 63) return false;
    if (!lower_or_digit(name.front()) || !lower_or_digit(name.back())) return false;
    for (size_t i = 0; i < name.size(); ++i) {
        char c = name[i];
        if (!lower_or_digit(c) && c != '.' && c != '-') return false;
        if (c == '.' && i > 0 && name[i - 1] == '.') return false;
    }
    return !looks_like_ipv4(name);
}

bool valid_key(std::string_view key) {
    if (key.empty() || key.size() > max_key_bytes || key.front() == '/') return false;
    if (key.find("//") != std::string_view::npos) return false;
    return std::none_of(key.begin(), key.end(), [](char c) {
        auto byte = static_cast<unsigned char>(c);
        return byte < 0x20 || byte == 0x7f;
    });
}

std::string parse_s3_url(std::string_view text, KeyRule rule, S3Location& out) {
    auto fail = [&](const std::string& cause) {
        return "'" + escape_for_log(text, 128) + "' is not an s3://BUCKET/" +
               (rule == KeyRule::required ? "NAME" : "[PREFIX]") + " URL: " + cause;
    };
    constexpr std::string_view scheme = "s3://";
    if (text.substr(0, scheme.size()) != scheme) return fail("it does not start with s3://");
    std::string_view rest = text.substr(scheme.size());
    size_t slash = rest.find('/');
    std::string_view bucket = rest.substr(0, slash);
    std::string_view key = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash + 1);
    if (!valid_bucket_name(bucket)) {
        return fail("bucket name '" + escape_for_log(bucket, 80) +
                    "' breaks S3's rules (3 to 63 of a-z 0-9 . -, starting and ending with a letter or digit)");
    }
    if (rule == KeyRule::required && key.empty()) return fail("no object name after the bucket");
    if (!key.empty() && !valid_key(key)) {
        return fail("the name is longer than 1024 bytes, starts with '/', has an empty segment or a control "
                    "character");
    }
    out.bucket = std::string(bucket);
    out.key = std::string(key);
    return {};
}

std::string uri_encode(std::string_view bytes, bool keep_slash) {
    static constexpr char hex[] = "0123456789ABCDEF";
    std::string out;
    out.reserve(bytes.size());
    for (char c : bytes) {
        auto byte = static_cast<unsigned char>(c);
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (alnum || c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/')) {
            out += c;
        } else {
            out += '%';
            out += hex[byte >> 4];
            out += hex[byte & 0xf];
        }
    }
    return out;
}

std::string canonical_query(std::vector<std::pair<std::string, std::string>> params) {
    std::sort(params.begin(), params.end());
    std::string out;
    for (const auto& [name, value] : params) {
        if (!out.empty()) out += '&';
        out += uri_encode(name, false) + "=" + uri_encode(value, false);
    }
    return out;
}

}  // namespace ringpager::remote
