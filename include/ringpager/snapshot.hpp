// Layered snapshots (docs/snapshot-format.md): a manifest mapping every block
// of guest memory to a block of a compacted layer file, or to "zero". This
// header is the whole public surface: serve one (open_layered_source), build
// one from Firecracker memory files, inspect one, verify one.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ringpager/source.hpp"

namespace ringpager {

struct LayeredSourceOptions {
    // The Source asks the reactor to verify() every block it reads.
    bool verify_reads = true;
    // Compressed snapshots (format version 2 with zstd or lz4): frames are
    // decompressed by this many threads of the source's own into an unlinked
    // temporary file in this directory ("": $TMPDIR, else /tmp), which grows
    // up to the snapshot's stored (uncompressed) size while VMs are served.
    std::string decompress_dir;
    unsigned decompress_threads = 2;
    // Keep the decompressed frames in `decompress_dir` as
    // frames-SNAPSHOTID.plain, so an engine started again on that directory
    // reuses every frame whose blocks still match their checksums instead of
    // decompressing it again. The caller keeps other engines off the
    // directory (serve from s3:// does: the chunk cache's lock).
    bool keep_decompressed = false;
};

// Opens a layered snapshot manifest (format version 1 or 2); validates header,
// checksums, frame table, every layer's size and identity. Returns nullptr and
// sets `error` (one line naming the file and the cause) on failure. The Source
// of a compressed snapshot answers `fetch` for blocks whose frame is not
// decompressed yet (docs/snapshot-format.md, "Serving frames").
std::unique_ptr<Source> open_layered_source(const std::string& manifest_path, const LayeredSourceOptions& options,
                                            std::string& error);
// The same with the default options but `verify_reads`.
std::unique_ptr<Source> open_layered_source(const std::string& manifest_path, bool verify_reads, std::string& error);

// ---- build ----------------------------------------------------------------

// How format version 2 stores each frame of a layer (docs/snapshot-format.md).
enum class FrameCodec : uint32_t { none = 0, zstd = 1, lz4 = 2 };

// Format version 2: each layer's stored blocks are grouped into frames that
// are stored (compressed) one by one, each decompressible on its own.
struct FrameOptions {
    FrameCodec codec = FrameCodec::zstd;
    int zstd_level = 1;                  // 1..19; see docs/benchmarks.md for what 1 and 3 give
    uint64_t frame_bytes = 2 << 20;      // plain bytes per frame: a power of two from the block size to 64 MiB
    unsigned threads = 2;                // frames compressed at once while building
};

struct SnapshotBuildOptions {
    std::string base_path;                 // Firecracker full memory file
    std::vector<std::string> diff_paths;   // Firecracker diff memory files, oldest first (sparse, same size)
    std::string manifest_path;             // layers go next to it: <manifest>.layer<N>.rpl
    uint64_t block_size_bytes = 4096;      // 4096, or 2 MiB for huge-page guests
    unsigned reads_in_flight = 8;          // io_uring reads kept in flight
    uint64_t read_buffer_bytes = 8 << 20;  // bytes per read; a multiple of the block size
    bool sync = true;                      // fsync the files before renaming them into place
    std::optional<FrameOptions> frames;    // set: format version 2 (frames); unset: version 1
    // Called after each chunk of input is processed; `total_bytes` is what the build will read.
    std::function<void(uint64_t done_bytes, uint64_t total_bytes)> progress;
};

struct SnapshotBuildReport {
    // Every block of every input that held data is exactly one of these.
    uint64_t blocks_total = 0;
    uint64_t blocks_zero = 0;        // all-zero: stored as a zero extent, no bytes
    uint64_t blocks_duplicate = 0;   // same bytes as a block stored earlier (any layer)
    uint64_t blocks_stored = 0;      // written to a layer file
    uint64_t blocks_shadowed = 0;    // wholly replaced by a later diff, so never stored
    uint64_t hash_collisions = 0;    // equal XXH3-128 keys with different bytes (stored separately)
    uint64_t bytes_in = 0;           // input data: the data regions (SEEK_DATA) of every input
    uint64_t bytes_read = 0;         // what the build read: bytes_in less skipped blocks, plus short holes read through
    uint64_t bytes_written = 0;      // manifest plus layer files
    uint64_t guest_size_bytes = 0;
    uint64_t block_size_bytes = 0;
    uint64_t extent_count = 0;
    double seconds = 0;
    std::vector<std::string> files_written;   // manifest first, then layers in order
    // Format version 2 only (zero in version 1).
    uint64_t frames = 0;
    uint64_t stored_plain_bytes = 0;   // the stored blocks: blocks_stored * block size
    uint64_t stored_frame_bytes = 0;   // what their frames take in the layer files

    uint64_t bytes_saved() const { return bytes_in > bytes_written ? bytes_in - bytes_written : 0; }
    double gib_per_second() const {
        return seconds > 0 ? static_cast<double>(bytes_in) / (1024.0 * 1024.0 * 1024.0) / seconds : 0.0;
    }
};

// Builds a manifest plus one layer file per input. On failure returns false,
// sets `error` (one line naming the file and the cause) and leaves no new files.
bool build_layered_snapshot(const SnapshotBuildOptions& options, SnapshotBuildReport& report, std::string& error);

// ---- pack a working set ----------------------------------------------------

// `ringpager snapshot pack-ws` (docs/snapshot-format.md, "Packed working-set
// layer"): a new manifest that serves the same guest bytes as `manifest_path`
// from the same layer files plus one more, whose slots hold the working set's
// non-zero pages in the order the guest first touched them.
struct PackWorkingSetOptions {
    std::string manifest_path;      // format version 1, 4 KiB blocks, not packed already
    std::string working_set_path;   // recorded against that snapshot (same identity), 4 KiB pages
    std::string out_path;           // the new manifest, in manifest_path's directory
    bool sync = true;               // fsync the written files before renaming them into place
};

struct PackWorkingSetReport {
    uint64_t set_pages = 0;      // pages of the working set
    uint64_t packed_pages = 0;   // its non-zero pages: the packed layer's slots
    uint64_t zero_pages = 0;     // its zero pages: they stay zero extents, no storage
    uint64_t extent_count = 0;   // of the new manifest
    uint64_t bytes_written = 0;
    std::string layer_path;      // the packed layer file
};

// Writes `out_path` and `out_path`.layerN.rpl (N: the snapshot's layer count),
// layer first, manifest last, each renamed into place. On failure returns
// false with a one-line `error` and leaves no new file.
bool pack_working_set(const PackWorkingSetOptions& options, PackWorkingSetReport& report, std::string& error);

// ---- inspect ---------------------------------------------------------------

struct SnapshotLayerInfo {
    uint32_t index = 0;
    std::string path;                // as recorded: relative to the manifest
    std::string resolved_path;       // where it was looked for
    std::string id_hex;              // 128-bit layer id
    uint64_t file_size_bytes = 0;
    uint64_t data_offset_bytes = 0;
    uint64_t stored_blocks = 0;      // slots in the file
    uint64_t referenced_blocks = 0;  // guest blocks served from this layer
    std::string status;              // "ok", or why the file would be refused
    uint64_t frames = 0;             // format version 2: frames in the file
    uint64_t stored_file_bytes = 0;  // what its stored blocks take in the file (compressed frames)
    bool packed_ws = false;          // a packed working set: slots in touch order (`snapshot pack-ws`)
};

struct SnapshotInfo {
    std::string manifest_path;
    uint64_t manifest_size_bytes = 0;
    uint32_t version = 0;
    std::string snapshot_id_hex;
    uint64_t block_size_bytes = 0;
    uint64_t guest_size_bytes = 0;
    uint64_t block_count = 0;
    uint64_t zero_blocks = 0;
    uint64_t data_blocks = 0;
    uint64_t extent_count = 0;
    uint64_t zero_extents = 0;
    uint64_t data_extents = 0;
    uint64_t stored_plain_bytes = 0;   // every layer's stored blocks: blocks * block size
    uint64_t stored_file_bytes = 0;    // what the layer files hold for them (version 2: the frames)
    // Format version 2 ("" and zero in version 1).
    std::string codec;                 // "none", "zstd", "lz4"
    uint32_t codec_level = 0;          // the zstd level it was built with
    uint64_t frame_bytes = 0;          // plain bytes per frame
    uint64_t frame_count = 0;
    uint64_t packed_ws_blocks = 0;     // blocks of the packed working-set layer (0: none)
    uint64_t packed_ws_pages = 0;      // blocks of its packed order: the whole set, zero ones too
    std::vector<SnapshotLayerInfo> layers;

    bool layers_ok() const {
        for (const auto& l : layers) {
            if (l.status != "ok") return false;
        }
        return true;
    }
};

// Reads and validates the manifest and checks each layer file's size and
// identity (reported per layer in `status`, not as a failure). Returns false
// with `error` only when the manifest itself cannot be used.
bool inspect_layered_snapshot(const std::string& manifest_path, SnapshotInfo& info, std::string& error);

// ---- verify ----------------------------------------------------------------

struct SnapshotVerifyReport {
    uint64_t blocks_checked = 0;
    uint64_t bad_blocks = 0;
    uint64_t frames_checked = 0;   // format version 2
    uint64_t bad_frames = 0;       // frames whose stored bytes failed their checksum or did not decompress
    uint64_t bytes_read = 0;
    double seconds = 0;
};

// Opens the snapshot like open_layered_source, then re-hashes every stored
// block of every layer (version 2: checks each frame's stored bytes against
// its checksum, decompresses it, then re-hashes its blocks). Returns true when
// all are intact; otherwise false with `error` naming the first bad frame (in
// layer order) or else the first bad block (lowest guest offset) and its layer
// file, or why the snapshot could not be opened (then report.bad_blocks and
// report.bad_frames are 0).
bool verify_layered_snapshot(const std::string& manifest_path, SnapshotVerifyReport& report, std::string& error,
                             const std::function<void(uint64_t done_bytes, uint64_t total_bytes)>& progress = {});

}  // namespace ringpager
