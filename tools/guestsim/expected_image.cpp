// The expected memory image, mapped read-only and hashed on demand.
#include "guestsim/expected_image.hpp"

#include <fcntl.h>

#include <map>
#include <mutex>
#include <vector>

#include <xxhash.h>

#include "common/regular_file.hpp"
#include "guestsim/file_io.hpp"
#include "ringpager/file_desc.hpp"

namespace ringpager::sim {

Result<ExpectedImage> ExpectedImage::open(const std::string& path, std::string* error) {
    std::string message;
    auto failed = [&](const Error& e) -> Result<ExpectedImage> {
        if (error != nullptr) *error = message.empty() ? "memory file " + path + ": " + e.message() : message;
        return e;
    };
    auto fd = open_regular_file(path, "memory file", message);
    if (!fd) return failed(fd.error());
    auto size = file_size(fd->get());
    if (!size) return failed(size.error());
    Mapping map;
    if (*size > 0) {
        auto mapped = Mapping::map(nullptr, *size, PROT_READ, MAP_SHARED, fd->get(), 0);
        if (!mapped) return failed(mapped.error());
        map = std::move(*mapped);
    }
    // The mapping keeps the file alive; the descriptor is no longer needed.
    return ExpectedImage(path, std::move(map), *size);
}

std::span<const std::byte> ExpectedImage::bytes(uint64_t offset_bytes, uint64_t length_bytes) const {
    if (offset_bytes > size_bytes_ || length_bytes > size_bytes_ - offset_bytes) return {};
    return {map_.data() + offset_bytes, length_bytes};
}

std::optional<uint64_t> ExpectedImage::hash(uint64_t offset_bytes, uint64_t length_bytes) const {
    auto span = bytes(offset_bytes, length_bytes);
    if (span.size() != length_bytes) return std::nullopt;
    return hash_bytes(span.data(), length_bytes);
}

uint64_t hash_bytes(const void* data, uint64_t length_bytes) { return XXH3_64bits(data, length_bytes); }

uint64_t zero_hash(uint64_t length_bytes) {
    static std::mutex mutex;
    static std::map<uint64_t, uint64_t> cache;
    std::lock_guard lock(mutex);
    auto it = cache.find(length_bytes);
    if (it != cache.end()) return it->second;
    std::vector<std::byte> zeros(length_bytes);
    const uint64_t h = hash_bytes(zeros.data(), length_bytes);
    cache.emplace(length_bytes, h);
    return h;
}

}  // namespace ringpager::sim
