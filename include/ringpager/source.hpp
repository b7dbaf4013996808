// PageSource: where the bytes of each guest-memory offset live (DESIGN.md
// "Sources"). The pager asks a PageSource, never a concrete format, so raw
// memory files, layered snapshots and (later) object stores behind a chunk
// cache are served by the same code. plan() answers at once: zero, ready in
// a local file, or not here yet; fetch() makes a range ready asynchronously
// and completes on the reactor that asked.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
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

// What the pager does with a range (PageSource::plan).
struct ReadPlan {
    enum class Kind : uint8_t {
        zero,   // install zeros, read nothing
        ready,  // read `length_bytes` at `file_offset` of file `file_index`
        fetch,  // not here yet: fetch() the range, then plan again
    };
    Kind kind = Kind::zero;
    uint32_t file_index = 0;
    uint64_t file_offset = 0;
    uint64_t length_bytes = 0;   // > 0, at most the length asked for
};

// A run of guest-memory offsets [offset, offset + length_bytes).
struct GuestRange {
    uint64_t offset = 0;
    uint64_t length_bytes = 0;
    bool operator==(const GuestRange&) const = default;
};

// What a snapshot's own metadata says about one of its guest blocks, known
// without reading the block (PageSource::block_digest).
struct BlockDigest {
    uint64_t block_size_bytes = 0;   // the snapshot's block size
    bool zero = false;               // a zero block: nothing stored
    uint64_t xxh3 = 0;               // XXH3-64 of the block's bytes; stored blocks only
};

// Who waits on a fetch: a fault (a vCPU is stopped on it) goes ahead of prefetch.
enum class FetchFor : uint8_t { fault, prefetch };

// Where a fetch reports back. Called once per fetch, from any thread (also
// from inside fetch()): the reactor's implementation only posts a message to
// its own mailbox.
class FetchSink {
public:
    virtual ~FetchSink() = default;
    // `error` is "" when the range is ready now, else one line saying why not.
    virtual void fetched(uint64_t cookie, const std::string& error) = 0;
};

class PageSource {
public:
    virtual ~PageSource() = default;

    // Bytes of guest-memory space this source answers: offsets [0, size_bytes()).
    virtual uint64_t size_bytes() const = 0;

    // Granularity of extents: every extent boundary is a multiple of it.
    virtual uint64_t block_size_bytes() const = 0;

    // The open files the extents point into, in file_index order. The reactor
    // registers them with its ring; the source keeps ownership.
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

    // A working set packed into the snapshot (`snapshot pack-ws`,
    // docs/snapshot-format.md "Packed working-set layer"): the guest ranges
    // whose blocks it stores, in the order they are stored, which is the
    // order the guest first touched them. Empty when there is none.
    virtual std::vector<GuestRange> packed_working_set() const { return {}; }

    // The checksum the snapshot keeps for the guest block holding `offset`
    // (< size_bytes()), from metadata already in memory: no read, no fetch.
    // Layered snapshots answer from their manifest; sources without
    // per-block checksums (raw memory files) answer nullopt.
    virtual std::optional<BlockDigest> block_digest(uint64_t offset) const {
        (void)offset;
        return std::nullopt;
    }

    // One line for logs: what is served ("raw file /x/mem (512 MiB)").
    virtual std::string describe() const = 0;

    // The pager's question: what to do with [offset, offset + max_length_bytes)
    // now. The default answers from lookup(): zero or ready, never fetch.
    // Must be cheap: it is called on the fault path.
    virtual ReadPlan plan(uint64_t offset, uint64_t max_length_bytes) const {
        const SourceExtent e = lookup(offset, max_length_bytes);
        return ReadPlan{e.kind == SourceExtent::Kind::zero ? ReadPlan::Kind::zero : ReadPlan::Kind::ready,
                        e.file_index, e.file_offset, e.length_bytes};
    }

    // Makes [offset, offset + length_bytes) ready (a plan answered fetch for
    // it) and calls sink->fetched(cookie, ...) once it is, or failed; never
    // blocking the caller (a reactor). `why` lets a source put faults first.
    // Sources whose plans never say fetch report that they cannot.
    virtual void fetch(uint64_t offset, uint64_t length_bytes, std::shared_ptr<FetchSink> sink, uint64_t cookie,
                       FetchFor why) const {
        (void)offset;
        (void)length_bytes;
        (void)why;
        sink->fetched(cookie, describe() + " has nothing to fetch");
    }
    // The same for a fault.
    void fetch(uint64_t offset, uint64_t length_bytes, std::shared_ptr<FetchSink> sink, uint64_t cookie) const {
        fetch(offset, length_bytes, std::move(sink), cookie, FetchFor::fault);
    }
};

// The name the rest of the code base (and its tests) grew up with.
using Source = PageSource;

// Opens a Firecracker memory file (full, or sparse diff: holes read as zero).
// Errors are one line naming the file and the cause.
std::unique_ptr<Source> open_raw_source(const std::string& path, std::string& error);

}  // namespace ringpager
