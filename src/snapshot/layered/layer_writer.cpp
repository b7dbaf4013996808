#include "snapshot/layered/layer_writer.hpp"

#include <sys/random.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>

#include "snapshot/layered/file_io.hpp"

namespace ringpager::layered {

std::string random_id(LayerId& id) {
    size_t done = 0;
    while (done < id.size()) {
        ssize_t n = ::getrandom(id.data() + done, id.size() - done, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            return errno_text("getrandom");
        }
        done += static_cast<size_t>(n);
    }
    return {};
}

std::string layer_file_path(const std::string& manifest_path, uint32_t index) {
    return manifest_path + ".layer" + std::to_string(index) + ".rpl";
}

std::string LayerWriter::create(const std::string& final_path, uint32_t index, const LayerId& snapshot_id,
                                uint64_t block_size_bytes, std::unique_ptr<LayerWriter>& out) {
    std::unique_ptr<LayerWriter> w(new LayerWriter());
    w->final_path_ = final_path;
    w->temp_path_ = final_path + ".tmp";
    w->header_.snapshot_id = snapshot_id;
    w->header_.layer_index = index;
    w->header_.block_size_bytes = block_size_bytes;
    w->header_.data_offset_bytes = layer_data_offset(block_size_bytes);
    if (auto e = random_id(w->header_.id); !e.empty()) return final_path + ": " + e;
    auto file = FileDesc::open(w->temp_path_.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (!file) return w->temp_path_ + ": " + file.error().message();
    w->file_ = std::move(*file);
    out = std::move(w);
    return {};
}

LayerWriter::~LayerWriter() {
    // A build that failed leaves no half-written layer behind. unlink() errors
    // are not actionable here: the build already reports its own failure.
    if (!committed_ && file_.valid()) (void)::unlink(temp_path_.c_str());
}

std::string LayerWriter::write_slots(uint64_t first_slot, std::vector<iovec>& iov) {
    uint64_t offset = header_.data_offset_bytes + first_slot * header_.block_size_bytes;
    return pwritev_all(file_.get(), iov, offset, temp_path_);
}

std::string LayerWriter::read_slot(uint64_t slot, std::span<std::byte> out) const {
    uint64_t offset = header_.data_offset_bytes + slot * header_.block_size_bytes;
    return pread_exact(file_.get(), out, offset, temp_path_);
}

std::string LayerWriter::finish(bool sync, LayerRecord& record, uint64_t& bytes_written) {
    header_.block_count = checksums_.size();
    header_.checksums_xxh3 = XXH3_64bits(checksums_.data(), checksums_.size() * sizeof(uint64_t));
    return seal(header_.data_offset_bytes + checksums_.size() * header_.block_size_bytes, sync, record, bytes_written);
}

std::string LayerWriter::finish_framed(const FramePacking& packing, bool sync, LayerRecord& record,
                                       std::vector<FrameRecord>& frames, uint64_t& bytes_written) {
    header_.version = framed_format_version;
    header_.codec = packing.codec;
    header_.block_count = checksums_.size();
    header_.checksums_xxh3 = XXH3_64bits(checksums_.data(), checksums_.size() * sizeof(uint64_t));
    const uint64_t plain_offset = header_.data_offset_bytes;
    std::vector<FrameRecord> mine;
    uint64_t size = plain_offset + checksums_.size() * header_.block_size_bytes;
    if (packing.codec == FrameCodec::none) {
        FileRef self{file_.get(), temp_path_};
        auto e = pack_frames(packing, self, plain_offset, checksums_.size(), self, plain_offset, mine);
        if (!e.empty()) return e;
    } else {
        // Compressed frames go back to back right after the header page.
        const std::string packed_path = final_path_ + ".frames.tmp";
        auto packed = FileDesc::open(packed_path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
        if (!packed) return packed_path + ": " + packed.error().message();
        const uint64_t data_offset = 4096;
        auto e = pack_frames(packing, FileRef{file_.get(), temp_path_}, plain_offset, checksums_.size(),
                             FileRef{packed->get(), packed_path}, data_offset, mine);
        if (!e.empty()) {
            (void)::unlink(packed_path.c_str());   // the build reports its own error
            return e;
        }
        // The packed file takes the plain one's place (and its cleanup on failure).
        (void)::unlink(temp_path_.c_str());
        file_ = std::move(*packed);
        temp_path_ = packed_path;
        header_.data_offset_bytes = data_offset;
        size = mine.empty() ? data_offset : mine.back().offset + mine.back().stored_bytes;
    }
    header_.frame_count = mine.size();
    header_.frames_xxh3 = hash_frames(mine);
    if (auto e = seal(size, sync, record, bytes_written); !e.empty()) return e;
    record.frame_count = header_.frame_count;
    record.frames_xxh3 = header_.frames_xxh3;
    frames.insert(frames.end(), mine.begin(), mine.end());
    return {};
}

std::string LayerWriter::seal(uint64_t size, bool sync, LayerRecord& record, uint64_t& bytes_written) {
    // The header gets a page of its own; for 2 MiB blocks the rest of the
    // first block stays a hole.
    std::vector<std::byte> page(4096);
    auto header = encode_layer_header(header_);
    std::copy(header.begin(), header.end(), page.begin());
    if (auto e = pwrite_all(file_.get(), page, 0, temp_path_); !e.empty()) return e;
    bytes_written += page.size() + (size - header_.data_offset_bytes);
    if (::ftruncate(file_.get(), static_cast<off_t>(size)) != 0) return temp_path_ + ": " + errno_text("ftruncate");
    if (sync && ::fsync(file_.get()) != 0) return temp_path_ + ": " + errno_text("fsync");
    record.id = header_.id;
    record.file_size_bytes = size;
    record.block_count = header_.block_count;
    record.data_offset_bytes = header_.data_offset_bytes;
    record.checksums_xxh3 = header_.checksums_xxh3;
    size_t slash = final_path_.find_last_of('/');
    record.path = slash == std::string::npos ? final_path_ : final_path_.substr(slash + 1);
    return {};
}

std::string LayerWriter::commit() {
    if (::rename(temp_path_.c_str(), final_path_.c_str()) != 0) {
        return temp_path_ + ": " + errno_text("rename") + " (to " + final_path_ + ")";
    }
    committed_ = true;
    return {};
}

}  // namespace ringpager::layered
