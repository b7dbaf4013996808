// What the store answers, read as hostile input: the XML bodies of
// CreateMultipartUpload, CompleteMultipartUpload and ListObjectsV2, and the
// one XML body we send (CompleteMultipartUpload). Pure functions over text,
// so the tests feed them hostile bodies without an object store. Every value
// kept is bounded and checked before anything is sized from it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "remote/s3_error.hpp"

namespace ringpager::remote {

struct ObjectSummary {
    std::string key;
    uint64_t size_bytes = 0;
    std::string etag;
    std::string last_modified;   // ISO 8601, as listed
};

struct ListPage {
    std::vector<ObjectSummary> objects;   // in key order
    std::string next_token;               // "" when this was the last page
};

struct CompletedPart {
    uint32_t number = 0;   // 1..10000
    std::string etag;
};

inline constexpr size_t max_token_bytes = 1024;

// A complete answer that breaks the contract, named after the request.
S3Error invalid_response(const std::string& name, const std::string& cause);

// An upload id or ETag from the store: bounded, printable, non-empty.
bool sane_token(std::string_view text);

// The UploadId of a CreateMultipartUpload answer.
S3Result<std::string> parse_upload_id(std::string_view xml, const std::string& name);

// The object's ETag from a CompleteMultipartUpload answer ("" when the store
// sends none: RGW of Ceph 16 answers an empty <ETag/>). S3 may answer 200 and
// still report a failure in the body: that is an error of kind server.
S3Result<std::string> parse_complete_answer(std::string_view xml, const std::string& name);

// One ListObjectsV2 page of at most `max_keys` keys, all under `prefix`, in
// strictly increasing order.
S3Result<ListPage> parse_list_page(std::string_view xml, const std::string& name, const std::string& prefix,
                                   uint32_t max_keys);

std::string complete_multipart_body(std::span<const CompletedPart> parts);

}  // namespace ringpager::remote
