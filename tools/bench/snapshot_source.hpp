// rp-bench --snapshot-source: what `ringpager serve` serves the image from.
// local: the memory file itself (--mem-file). layered, layered-zstd: a
// layered snapshot built from it once per run (--snapshot). layered-packed:
// the layered snapshot, and for the replay handler that snapshot packed with
// the recorded working set (`snapshot pack-ws`), served with no
// --working-set (the packed layer is replayed). s3-cold, s3-warm:
// that snapshot pushed to a throwaway Ceph RGW (tests/remote/rgw.sh) and
// served from s3:// through a chunk cache that is emptied before every
// scenario (cold) or holds every layer before it (warm: the layer files are
// copied in, and the engine verifies every chunk when it opens the snapshot).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace ringpager::bench {

// Ordered: the s3 sources last (from_store compares against s3_cold).
enum class SnapshotSource { local, layered, layered_zstd, layered_packed, s3_cold, s3_warm };

const char* snapshot_source_name(SnapshotSource source);
std::optional<SnapshotSource> parse_snapshot_source(std::string_view text);

class PreparedSource {
public:
    // Builds the snapshot of `mem_file` in `work_dir` and, for s3-*, starts
    // the store with `rgw_script` and pushes it. nullptr with one line in `error`.
    static std::unique_ptr<PreparedSource> prepare(SnapshotSource source, const std::string& mem_file,
                                                   const std::string& work_dir, const std::string& rgw_script,
                                                   std::string& error);
    // Stops the store it started.
    ~PreparedSource();
    PreparedSource(const PreparedSource&) = delete;
    PreparedSource& operator=(const PreparedSource&) = delete;

    SnapshotSource source() const { return source_; }
    // `ringpager serve` arguments naming the snapshot (in place of --mem-file FILE).
    std::vector<std::string> serve_args() const;
    // layered-packed: the snapshot packed with `working_set` (written once,
    // beside the snapshot, named after the set). "" or one line.
    std::string pack(const std::string& working_set) const;
    // Its path (whether written yet or not).
    std::string packed_manifest(const std::string& working_set) const;
    // The local files ringpager reads for this source (manifests and layer
    // files, packed ones included): what --cold-cache drops besides the image.
    std::vector<std::string> local_files() const;
    // Before each scenario: s3-cold empties the cache directory, s3-warm
    // fills it. "" or one line.
    std::string before_scenario() const;
    // Bytes the cache directory's files hold on disk: after a cold scenario,
    // what the engine fetched from the store (chunks are block aligned).
    uint64_t cache_bytes() const;

private:
    PreparedSource() = default;

    SnapshotSource source_ = SnapshotSource::local;
    std::string manifest_;      // the built snapshot
    std::string url_;           // s3://BUCKET/NAME
    std::string cache_dir_;
    std::string rgw_script_, rgw_dir_;   // set while the store runs
    std::vector<std::pair<std::string, std::string>> warm_files_;   // layer file -> cache file name
    mutable std::set<std::string> packed_;   // layered-packed: manifests written by this run
};

}  // namespace ringpager::bench
