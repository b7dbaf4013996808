// The source of a compressed layered snapshot (format version 2 with zstd or
// lz4): plan() answers `fetch` for blocks whose frame is not decompressed yet
// and `ready` in the decompressed-frame cache once it is (source/frame_cache.hpp).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ringpager/snapshot.hpp"
#include "snapshot/layered/format.hpp"
#include "source/frame_cache.hpp"

namespace ringpager {

// Takes a validated compressed manifest and its opened layer files; creates
// the frame cache. nullptr with a one-line `error` when the cache cannot be set up.
std::unique_ptr<Source> open_frame_source(layered::Manifest m, std::vector<FileDesc> layers,
                                          const LayeredSourceOptions& options, std::string& error);

// Where the stored (compressed) frames come from when the layer files are
// not all there yet: an object store's chunk cache (remote/remote_source).
// Frame indices are into Manifest::frames.
class StoredFrames {
public:
    virtual ~StoredFrames() = default;
    // Whether the stored bytes of frame `index` are in its layer file,
    // verified. Lock free: called on the fault path.
    virtual bool present(uint64_t index) const = 0;
    // Brings every frame of `frames` into its layer file, then calls
    // sink->fetched(cookie, "" or one line) once, from any thread (also from
    // inside bring()); never blocks the caller.
    virtual void bring(std::span<const uint64_t> frames, FetchFor why, std::shared_ptr<FetchSink> sink,
                       uint64_t cookie) const = 0;
    // For describe(): where the stored frames come from.
    virtual std::string describe() const = 0;
};

// The same on layer files that `stored` fills (it owns them, and must outlive
// every fetch it calls back): a frame is brought in by `stored`, then
// decompressed by the frame cache's workers.
std::unique_ptr<Source> open_frame_source(layered::Manifest m, std::vector<int> layer_fds,
                                          std::shared_ptr<const StoredFrames> stored,
                                          const LayeredSourceOptions& options, std::string& error);

// The frame cache's counters of a source open_frame_source made; nullopt for any other source.
std::optional<FrameCacheStats> frame_cache_stats(const Source& source);

}  // namespace ringpager
