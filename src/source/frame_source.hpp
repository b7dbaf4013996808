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

// The frame cache's counters of a source open_frame_source made; nullopt for any other source.
std::optional<FrameCacheStats> frame_cache_stats(const Source& source);

}  // namespace ringpager
