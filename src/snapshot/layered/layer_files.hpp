// Opening a manifest's layer files and proving each is the file the manifest
// was built with: present, regular, exactly the recorded size, and carrying
// the recorded layer id, snapshot id and checksum-list hash in its header.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ringpager/file_desc.hpp"
#include "snapshot/layered/format.hpp"

namespace ringpager::layered {

// Opens layer `index` read-only (open_regular_file: a FIFO, device or
// directory is refused without blocking) and checks it. Returns "" or one
// line naming the layer file and the cause.
std::string open_layer(const Manifest& m, uint32_t index, FileDesc& out);

// open_layer for every layer, in order; stops at the first failure.
std::string open_layers(const Manifest& m, std::vector<FileDesc>& out);

// Loads the manifest and opens every layer: what serving and verifying need.
std::string open_snapshot(const std::string& manifest_path, Manifest& m, std::vector<FileDesc>& layers);

}  // namespace ringpager::layered
