// Source: where the bytes of each guest-memory offset live. The reactor asks a
// Source, never a concrete format, so raw memory files and layered snapshots
// are served by the same code.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "ringpager/result.hpp"

namespace ringpager {

// A maximal run of guest-memory offsets answered the same way.
struct SourceExtent {
    enum class Kind : uint8_t { data, zero };
    Kind kind = Kind::zero;
    uint32_t file_index = 0;     // index into Source::file_fds(); meaningful for data
    uint64_t file_offset = 0;    // file position of the extent's first byte; data only
    uint64_t length_bytes = 0;   // > 0; data extents are contiguous in their file
};

class Source {
public:
    virtual ~Source() = default;

    // Bytes of guest-memory space this source answers: offsets [0, size_bytes()).
    virtual uint64_t size_bytes() const = 0;

    // Granularity of extents: every extent boundary is a multiple of it.
    virtual uint64_t block_size_bytes() const = 0;

    // The open files the extents point into, in file_index order. The reactor
    // registers them with its ring; the Source keeps ownership.
    virtual std::span<const int> file_fds() const = 0;

    // The extent containing `offset` (< size_bytes()), clipped so it starts at
    // `offset` and is at most `max_length_bytes` long. Must be cheap: it is
    // called on the fault path.
    virtual SourceExtent lookup(uint64_t offset, uint64_t max_length_bytes) const = 0;

    // When true the reactor calls verify() on every data block it read.
    virtual bool verifies_reads() const { return false; }

    // Checks `bytes` read for guest offsets [offset, offset + bytes.size()),
    // both block aligned. Returns an error message naming the file and block,
    // or an empty string when the bytes are intact.
    virtual std::string verify(uint64_t offset, std::span<const std::byte> bytes) const {
        (void)offset;
        (void)bytes;
        return {};
    }

    // One line for logs: what is served ("raw file /x/mem (512 MiB)").
    virtual std::string describe() const = 0;
};

// Opens a Firecracker memory file (full, or sparse diff: holes read as zero).
// Errors are one line naming the file and the cause.
std::unique_ptr<Source> open_raw_source(const std::string& path, std::string& error);

}  // namespace ringpager
