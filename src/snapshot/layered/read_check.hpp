// Checking bytes a reader got for a range of guest memory against the
// manifest: stored blocks by their XXH3-64, zero blocks for being zero. The
// layered sources' verify() is this function.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "ringpager/source.hpp"

#include "snapshot/layered/format.hpp"

namespace ringpager::layered {

// Checks `bytes` read for guest offsets [offset, offset + bytes.size()), both
// block aligned. Returns "" when every block is intact, else one line naming
// the snapshot or layer file and the first bad block.
std::string check_read(const Manifest& m, uint64_t offset, std::span<const std::byte> bytes);

// The manifest's word on the block holding guest offset `offset` (<
// guest_size_bytes): zero, or its checksum. The layered sources'
// block_digest() is this function.
BlockDigest manifest_block_digest(const Manifest& m, uint64_t offset);

// The manifest's packed order table as guest ranges, in touch order (empty
// without a packed working set). The layered sources' packed_working_set()
// is this function, wherever their layers are read from.
std::vector<GuestRange> manifest_packed_working_set(const Manifest& m);

}  // namespace ringpager::layered
