// Object locations: `s3://BUCKET/KEY` parsed strictly, and the encodings a
// signed path-style request needs (every byte but the unreserved ones
// percent-encoded, query parameters sorted: libcurl signs the URL as it is).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ringpager::remote {

struct S3Location {
    std::string bucket;
    std::string key;   // may be empty only where a prefix is meant (ls)

    std::string url() const { return "s3://" + bucket + "/" + key; }
};

inline constexpr size_t max_key_bytes = 1024;
inline constexpr uint64_t max_object_bytes = uint64_t{5} << 40;   // S3's largest object

// S3's bucket naming rules: 3 to 63 characters of a-z, 0-9, '.', '-', starting
// and ending with a letter or digit, no "..", not shaped like an IPv4 address.
bool valid_bucket_name(std::string_view name);

// A key: 1 to 1024 bytes, no ASCII control characters (it is quoted in
// messages), not starting with '/', no empty path segment ("a//b").
bool valid_key(std::string_view key);

enum class KeyRule { required, optional };

// Parses `s3://BUCKET/KEY` (KeyRule::optional also takes `s3://BUCKET` and
// `s3://BUCKET/`, a key prefix that may end in '/'). Returns "" or a one-line
// error quoting the (escaped) text.
std::string parse_s3_url(std::string_view text, KeyRule rule, S3Location& out);

// RFC 3986 percent-encoding as SigV4 wants it: A-Z a-z 0-9 - _ . ~ stay,
// every other byte becomes %XX (upper case); '/' stays when `keep_slash`.
std::string uri_encode(std::string_view bytes, bool keep_slash);

// "name=value&..." sorted by name, each part encoded; every parameter has an
// '=' (SigV4's canonical form, which libcurl 7.88 signs verbatim).
std::string canonical_query(std::vector<std::pair<std::string, std::string>> params);

}  // namespace ringpager::remote
