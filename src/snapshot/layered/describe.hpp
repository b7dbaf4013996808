// What `ringpager snapshot inspect` reports about a manifest, computed from
// the decoded manifest alone: the same numbers for a local snapshot and for
// one in an object store (src/remote/snapshot_store.cpp).
#pragma once

#include "ringpager/snapshot.hpp"
#include "snapshot/layered/format.hpp"

namespace ringpager::layered {

// Fills every field of `info` the manifest answers (identity, sizes, block and
// extent counts, each layer's record and referenced blocks; status "ok",
// resolved_path from the manifest's directory). The caller adds the manifest's
// size and each layer's status.
void describe_manifest(const Manifest& m, SnapshotInfo& info);

}  // namespace ringpager::layered
