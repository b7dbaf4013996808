// LayerWriter: writes one compacted layer file. Blocks get consecutive slots,
// slot s living at data_offset + s * block_size. The file is written under a
// temporary name and renamed into place by commit(); a writer destroyed before
// commit() removes its temporary file, so a failed build leaves nothing behind.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "ringpager/file_desc.hpp"
#include "snapshot/layered/format.hpp"
#include "snapshot/layered/frame_packer.hpp"

namespace ringpager::layered {

class LayerWriter {
public:
    // Creates `final_path`'s temporary file. Returns "" or an error naming it.
    static std::string create(const std::string& final_path, uint32_t index, const LayerId& snapshot_id,
                              uint64_t block_size_bytes, std::unique_ptr<LayerWriter>& out);
    ~LayerWriter();
    LayerWriter(const LayerWriter&) = delete;
    LayerWriter& operator=(const LayerWriter&) = delete;

    const std::string& final_path() const { return final_path_; }
    uint64_t next_slot() const { return checksums_.size(); }

    // Assigns the next slot to a block whose XXH3-64 is `checksum`.
    uint64_t add_block(uint64_t checksum) {
        checksums_.push_back(checksum);
        return checksums_.size() - 1;
    }

    // Writes the blocks of slots [first_slot, ...) from `iov`, back to back.
    std::string write_slots(uint64_t first_slot, std::vector<iovec>& iov);

    // Reads back the stored block of `slot` (already written).
    std::string read_slot(uint64_t slot, std::span<std::byte> out) const;

    // Writes the header, sets the final size, optionally fsyncs, and
    // describes the file for the manifest. `bytes_written` grows by what it wrote.
    std::string finish(bool sync, LayerRecord& record, uint64_t& bytes_written);

    // finish() for format version 2: stores the slots as frames (compressed
    // into a new temporary file that takes the plain one's place, or, without
    // a codec, left where they are and only hashed) and appends the layer's
    // frame records to `frames`.
    std::string finish_framed(const FramePacking& packing, bool sync, LayerRecord& record,
                              std::vector<FrameRecord>& frames, uint64_t& bytes_written);

    // Renames the finished file to its final name.
    std::string commit();

    std::span<const uint64_t> checksums() const { return checksums_; }

private:
    LayerWriter() = default;
    // Writes the header page, sets the file to `size_bytes`, optionally
    // fsyncs, and fills `record`.
    std::string seal(uint64_t size_bytes, bool sync, LayerRecord& record, uint64_t& bytes_written);

    std::string final_path_;
    std::string temp_path_;
    FileDesc file_;
    LayerHeader header_;
    std::vector<uint64_t> checksums_;
    bool committed_ = false;
};

// Fills `id` from the kernel's random source.
std::string random_id(LayerId& id);

// The final name of layer `index` of the manifest at `manifest_path`.
std::string layer_file_path(const std::string& manifest_path, uint32_t index);

}  // namespace ringpager::layered
