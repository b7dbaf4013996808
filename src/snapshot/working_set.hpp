// The working-set file (issue 11): the pages one VM faulted on first, in the
// order it first touched them, recorded by `serve --record-ws` and replayed by
// `serve --mode prefetch --working-set`. The format is small and strict:
//
//   header (72 bytes, little endian)
//     magic "RPWSET01" | version u32 (1) | header_bytes u32 (72)
//     page_size_bytes u64 | source_size_bytes u64 | source_fingerprint u64
//     pages u64 (sum of the runs) | runs u64 | body_bytes u32 | reserved u32
//     body_xxh3 u64 (XXH3-64 of the body)
//   body: `runs` runs, each two LEB128 varints: the run's first page as a
//     zigzag delta from the previous run's end, then its length in pages.
//
// Pages are global page indexes across the VM's regions in handshake order
// (PageRun), so a set replays onto VMs restored from the same snapshot with
// the same memory layout.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "ringpager/engine.hpp"
#include "ringpager/source.hpp"

namespace ringpager {

// Which snapshot a set belongs to: the source's size plus a fingerprint of
// kIdentitySamples sampled 4 KiB blocks of its guest (evenly spaced, first
// and last included), taken two ways:
//   - Layered snapshots (local, compressed, s3://): XXH3-64 over the
//     manifest's XXH3-64 checksums of the blocks holding the samples, as 16
//     little-endian u64 (a zero block counts as the checksum a stored block
//     of zeros would have: XXH3-64 of block-size zero bytes). Nothing is read
//     or fetched: the manifest is in memory already. The checksums are of
//     the plain bytes, so an uncompressed, a zstd, an lz4 and an s3:// copy
//     of one guest, and a re-layout that keeps block checksums (a packed
//     working-set layer), share the identity; a build with another block
//     size does not.
//   - Raw memory files: XXH3-64 over the 16 sampled blocks' bytes (zero
//     extents hash as zeros), read by pread at serve start.
// Like size+mtime+inode it costs next to nothing, but unlike them it follows
// the content: a copied snapshot keeps its identity, a rebuilt one with other
// bytes loses it. It is a fingerprint, not a proof: two snapshots that differ
// only outside the sampled blocks share it.
//
// A raw memory file and a layered build of it have different identities, and
// so have files recorded against a layered snapshot before the identity came
// from the manifest (it was the bytes' then): such a set is refused at load
// as "recorded from another snapshot (content fingerprint differs)", one
// line, and the VM is served without replay; record it again. The file
// version stays 1: files of raw snapshots are still valid.
struct SnapshotIdentity {
    uint64_t size_bytes = 0;
    uint64_t fingerprint = 0;
    bool operator==(const SnapshotIdentity&) const = default;
};
inline constexpr unsigned kIdentitySamples = 16;
// From the manifest when `source` answers block_digest(), else by reading
// the samples from its files; on a read error returns false with a one-line
// `error`.
bool snapshot_identity(const Source& source, SnapshotIdentity& out, std::string& error);

struct WorkingSet {
    uint64_t page_size_bytes = 4096;
    SnapshotIdentity identity;
    std::vector<PageRun> runs;  // in first-touch order
    uint64_t pages() const;
};

inline constexpr char kWorkingSetMagic[8] = {'R', 'P', 'W', 'S', 'E', 'T', '0', '1'};
inline constexpr uint32_t kWorkingSetVersion = 1;
inline constexpr size_t kWorkingSetHeaderBytes = 72;
inline constexpr size_t kMaxWorkingSetFileBytes = 256u << 20;

// Pages in first-touch order (each once) to runs: a page that follows the
// previous one extends its run.
std::vector<PageRun> runs_from_pages(const std::vector<uint64_t>& pages_in_order);
// The pages of `runs`, in order.
std::vector<uint64_t> pages_from_runs(const std::vector<PageRun>& runs);

// The working set packed into `source` (Source::packed_working_set), as runs
// of pages of `page_size_bytes` in stored (touch) order; empty when there is
// none or its ranges are not whole pages. Like a recorded set, page p is
// memory-file offset p * page_size: Firecracker writes its regions back to
// back in handshake order.
std::vector<PageRun> packed_working_set_runs(const Source& source, uint64_t page_size_bytes);

std::string encode_working_set(const WorkingSet& set);
// Parses and checks a file's bytes (magic, version, lengths, checksum, runs
// that overlap or pass the source's size); `error` says which check failed.
bool decode_working_set(std::string_view bytes, WorkingSet& out, std::string& error);

// `ringpager ws merge`: the union of several recordings of one snapshot
// (same identity and page size, else false with a one-line `error`), keeping
// the pages seen in at least `min_count` of them (1: all), ordered by their
// median first-touch rank (a page's index in each recording's page order; the
// lower middle for an even count), ties broken by more recordings first, then
// by page number.
bool merge_working_sets(const std::vector<WorkingSet>& sets, unsigned min_count, WorkingSet& out, std::string& error);

// Writes `set` to `path` atomically: a temporary file beside it, fsync,
// rename over `path`. Concurrent recorders (engines or reactors) serialize on
// an flock of "PATH.lock", which is left in place (removing a lock file races
// with the next locker). One-line `error` on failure.
bool write_working_set_file(const std::string& path, const WorkingSet& set, std::string& error);
// Reads and decodes `path` (a regular file of at most kMaxWorkingSetFileBytes).
bool load_working_set_file(const std::string& path, WorkingSet& out, std::string& error);
// load_working_set_file plus the identity check against `expected`:
// "working set PATH: CAUSE" on failure.
bool load_working_set_for(const std::string& path, const SnapshotIdentity& expected, WorkingSet& out,
                          std::string& error);

}  // namespace ringpager
