// ExpectedImage: the flattened memory file a guest should see, read-only,
// answering "what is the XXH3-64 of the bytes at this file offset".
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "guestsim/mapping.hpp"
#include "ringpager/result.hpp"

namespace ringpager::sim {

class ExpectedImage {
public:
    // Maps `path` read-only (shared, so it costs page cache, not copies). A
    // FIFO, device or directory is refused without blocking; `error`, when
    // given, receives one line naming the file and the cause.
    static Result<ExpectedImage> open(const std::string& path, std::string* error = nullptr);

    uint64_t size_bytes() const { return size_bytes_; }
    const std::string& path() const { return path_; }

    // XXH3-64 of [offset, offset + length); nullopt when the range is not inside the file.
    std::optional<uint64_t> hash(uint64_t offset_bytes, uint64_t length_bytes) const;
    // The bytes themselves; empty when the range is not inside the file.
    std::span<const std::byte> bytes(uint64_t offset_bytes, uint64_t length_bytes) const;

private:
    ExpectedImage(std::string path, Mapping map, uint64_t size_bytes)
        : path_(std::move(path)), map_(std::move(map)), size_bytes_(size_bytes) {}

    std::string path_;
    Mapping map_;  // empty for an empty file
    uint64_t size_bytes_ = 0;
};

// XXH3-64 of `length_bytes` zero bytes (cached per length).
uint64_t zero_hash(uint64_t length_bytes);
uint64_t hash_bytes(const void* data, uint64_t length_bytes);

}  // namespace ringpager::sim
