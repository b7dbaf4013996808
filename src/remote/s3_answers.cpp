#include "remote/s3_answers.hpp"

#include <algorithm>

#include "common/log.hpp"
#include "remote/s3_url.hpp"
#include "remote/s3_xml.hpp"

namespace ringpager::remote {

S3Error invalid_response(const std::string& name, const std::string& cause) {
    return S3Error{S3Error::Kind::invalid_response, 200, name + ": " + cause};
}

bool sane_token(std::string_view text) {
    return !text.empty() && text.size() <= max_token_bytes &&
           std::all_of(text.begin(), text.end(), [](char c) { return c >= 0x20 && c < 0x7f; });
}

S3Result<std::string> parse_upload_id(std::string_view doc, const std::string& name) {
    auto id = xml::text(doc, "UploadId", max_token_bytes);
    if (!id || !sane_token(*id)) return invalid_response(name, "no usable UploadId in the answer");
    return *id;
}

S3Result<std::string> parse_complete_answer(std::string_view doc, const std::string& name) {
    if (!xml::find_element(doc, "CompleteMultipartUploadResult")) {
        std::string code = escape_for_log(xml::text(doc, "Code", 64).value_or("no result"), 64);
        return S3Error{S3Error::Kind::server, 200, name + ": completing the upload failed (" + code + ")"};
    }
    // RGW (Ceph 16) answers an empty <ETag/>; a HEAD of the object has the real one.
    auto etag = xml::text(doc, "ETag", max_token_bytes).value_or("");
    if (!etag.empty() && !sane_token(etag)) return invalid_response(name, "the completed upload's ETag is malformed");
    return etag;
}

std::string complete_multipart_body(std::span<const CompletedPart> parts) {
    std::string body = "<CompleteMultipartUpload>";
    for (const CompletedPart& p : parts) {
        body += "<Part><PartNumber>" + std::to_string(p.number) + "</PartNumber><ETag>" + xml::escape(p.etag) +
                "</ETag></Part>";
    }
    return body + "</CompleteMultipartUpload>";
}

namespace {

// One <Contents> entry of a listing, or why it is unusable.
S3Result<ObjectSummary> parse_entry(std::string_view contents, const std::string& name, size_t index) {
    auto key = xml::text(contents, "Key", max_key_bytes);
    auto size = xml::text(contents, "Size", 24);
    auto parsed_size = size ? xml::parse_u64(*size) : std::nullopt;
    if (!key || key->empty() || !parsed_size) {
        return invalid_response(name, "listing entry " + std::to_string(index) + " has no usable Key or Size");
    }
    ObjectSummary o;
    o.key = std::move(*key);
    o.size_bytes = *parsed_size;
    o.etag = xml::text(contents, "ETag", max_token_bytes).value_or("");
    o.last_modified = xml::text(contents, "LastModified", 64).value_or("");
    return o;
}

}  // namespace

S3Result<ListPage> parse_list_page(std::string_view doc, const std::string& name, const std::string& prefix,
                                   uint32_t max_keys) {
    if (!xml::find_element(doc, "ListBucketResult")) return invalid_response(name, "the answer is not a listing");
    auto truncated = xml::text(doc, "IsTruncated", 8);
    if (!truncated || (*truncated != "true" && *truncated != "false")) {
        return invalid_response(name, "the listing has no IsTruncated true|false");
    }
    ListPage page;
    size_t at = 0, next = 0;
    while (auto contents = xml::find_element(doc, "Contents", at, &next)) {
        at = next;
        if (page.objects.size() == max_keys) {
            return invalid_response(name,
                                    "the listing holds more than the " + std::to_string(max_keys) + " keys asked for");
        }
        auto o = parse_entry(*contents, name, page.objects.size());
        if (!o) return o.error();
        if (o->key.rfind(prefix, 0) != 0) {
            return invalid_response(name, "the listing holds key '" + escape_for_log(o->key) + "' outside the prefix");
        }
        if (!page.objects.empty() && o->key <= page.objects.back().key) {
            return invalid_response(name, "the listing's keys are not in increasing order");
        }
        page.objects.push_back(std::move(*o));
    }
    if (*truncated == "true") {
        auto token = xml::text(doc, "NextContinuationToken", max_token_bytes);
        if (!token || !sane_token(*token)) {
            return invalid_response(name, "a truncated listing without a usable NextContinuationToken");
        }
        page.next_token = std::move(*token);
    }
    return page;
}

}  // namespace ringpager::remote
