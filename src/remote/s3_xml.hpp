// A small, tolerant reader of the XML S3 answers with (ListObjectsV2,
// multipart, errors), and the one XML body we send (CompleteMultipartUpload).
// It finds elements by name and decodes the five named entities and numeric
// character references; it does not validate documents. Callers bound what
// they keep: sizes, counts and the characters of each value.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/decimal.hpp"

namespace ringpager::remote::xml {

// The raw text between <tag> (or <tag attr...>) and the next </tag>, for the
// first such element at or after `from`; `next` is set past its end tag.
std::optional<std::string_view> find_element(std::string_view doc, std::string_view tag, size_t from = 0,
                                             size_t* next = nullptr);

// The decoded text of the first <tag> element, or nullopt when there is none,
// its entities are malformed, or it decodes to more than `max_bytes` bytes.
std::optional<std::string> text(std::string_view doc, std::string_view tag, size_t max_bytes);

// Decodes &amp; &lt; &gt; &quot; &apos; &#N; &#xN; (code points as UTF-8).
// nullopt on a malformed or unknown reference.
std::optional<std::string> unescape(std::string_view raw);

// Escapes & < > " ' for element text.
std::string escape(std::string_view text);

using ::ringpager::parse_u64;  // common/decimal.hpp

}  // namespace ringpager::remote::xml
