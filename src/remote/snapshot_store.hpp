// Layered snapshots in an object store (docs/remote.md "Bucket layout"):
//
//   s3://BUCKET/NAME                       the manifest, byte for byte as built
//   s3://BUCKET/layers/<layer-id>.rpl      each layer file, named by its 128-bit
//                                          layer id in hex (32 characters)
//
// Layers are content-addressed by their id (a layer file never changes once
// built), so a layer already in the bucket is not uploaded again and
// manifests that share layers share their objects. A manifest's layer paths
// are not used in a bucket: a reader finds layer i at layer_key(layers[i].id).
// The manifest is uploaded last, so a reader never finds a manifest whose
// layers are not all there.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "remote/s3_client.hpp"
#include "ringpager/snapshot.hpp"
#include "snapshot/layered/format.hpp"

namespace ringpager::remote {

inline constexpr const char* layer_prefix = "layers/";
inline constexpr uint64_t max_manifest_bytes = uint64_t{1} << 30;   // a ~700 GiB guest with 4 KiB blocks

// "layers/<32 hex digits>.rpl"
std::string layer_key(const layered::LayerId& id);

struct PushOptions {
    uint64_t multipart_threshold_bytes = 64 << 20;   // larger layers go up in parts
    uint64_t part_bytes = 16 << 20;                  // at least 5 MiB (S3's floor)
    // Parts uploaded at once, each by a thread with its own client (connection);
    // memory is this many part buffers. 1: one part after the other.
    unsigned parallel_parts = 4;
    std::function<void(uint64_t done_bytes, uint64_t total_bytes)> progress;   // called on the caller's thread
    // Tests: called on an uploading thread just before part `number` is sent.
    std::function<void(uint32_t number)> before_part;
};

struct PushReport {
    uint32_t layers_uploaded = 0;
    uint32_t layers_present = 0;      // already in the bucket with the right size
    uint64_t bytes_uploaded = 0;      // layers and manifest
    uint64_t bytes_skipped = 0;       // layers found in the bucket
    uint64_t manifest_bytes = 0;
    uint64_t blocks_verified = 0;     // stored blocks re-hashed on their way up
    uint32_t parts_uploaded = 0;      // multipart layers' parts
    double seconds = 0;
};

// Validates the local snapshot (manifest and every layer file, as serving
// would), then uploads each layer not yet in the bucket (multipart above the
// threshold), verifying every stored block against the manifest's checksums
// as it is read, and finally the manifest to `destination`. Returns "" or one
// line naming the file or object and the cause (a failed multipart upload is
// aborted).
std::string push_snapshot(S3Client& client, const std::string& manifest_path, const S3Location& destination,
                          const PushOptions& options, PushReport& report);

struct RemoteSnapshot {
    std::string key;
    uint64_t manifest_bytes = 0;
    std::string last_modified;
    layered::ManifestHeaderSummary header;
};

struct RemoteListing {
    std::vector<RemoteSnapshot> snapshots;
    uint64_t other_objects = 0;   // objects under the prefix that are not manifests (layers/ excluded)
};

// Lists the manifests under `prefix` (bucket and key prefix; layers/ is never
// listed): each object's first 128 bytes must pass the manifest header checks.
// Bounded to `max_objects` keys.
std::string list_snapshots(S3Client& client, const S3Location& prefix, RemoteListing& out,
                           uint64_t max_objects = 100000);

// What `inspect` prints for a manifest in the bucket: the manifest is read and
// validated in full; each layer is HEADed (status "ok", or why it would be
// refused); resolved_path is the layer's s3:// URL.
std::string inspect_remote_snapshot(S3Client& client, const S3Location& manifest, SnapshotInfo& info);

}  // namespace ringpager::remote
