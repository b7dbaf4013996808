// Checking bytes a reader got for a range of guest memory against the
// manifest: stored blocks by their XXH3-64, zero blocks for being zero. The
// layered sources' verify() is this function.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "snapshot/layered/format.hpp"

namespace ringpager::layered {

// Checks `bytes` read for guest offsets [offset, offset + bytes.size()), both
// block aligned. Returns "" when every block is intact, else one line naming
// the snapshot or layer file and the first bad block.
std::string check_read(const Manifest& m, uint64_t offset, std::span<const std::byte> bytes);

}  // namespace ringpager::layered
