// The source of a layered snapshot in an object store
// (`serve --snapshot s3://BUCKET/NAME --cache-dir DIR`): the manifest is read
// from the bucket at open, each layer's bytes come from the process's chunk
// cache (remote/chunk_cache.hpp). plan() answers `ready` in a layer's cache
// file once the chunk holding the block is there, `fetch` before that;
// fetch() asks the cache for every chunk of the range, faults ahead of
// prefetch.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "remote/chunk_cache.hpp"
#include "remote/s3_client.hpp"
#include "ringpager/snapshot.hpp"

namespace ringpager::remote {

// Reads and validates the manifest at `manifest` (bounded by
// max_manifest_bytes), checks every layer object is in the bucket with its
// size, and adds the layers to `cache`. nullptr with a one-line `error`
// naming the object and what to check. A compressed snapshot (format version
// 2 with zstd or lz4) is served by the frame source (source/frame_source.hpp):
// each stored frame is one chunk of the cache, fetched, verified, then
// decompressed by the source's workers (options.decompress_*).
std::unique_ptr<Source> open_remote_source(S3Client& client, const S3Location& manifest,
                                           std::shared_ptr<ChunkCache> cache, const LayeredSourceOptions& options,
                                           std::string& error);

}  // namespace ringpager::remote
