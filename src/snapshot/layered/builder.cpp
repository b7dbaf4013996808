// build_layered_snapshot: turns a Firecracker base memory file and a chain of
// diff files into a manifest plus one compacted layer file per input.
//
// Invariants while building:
// - block_map_[b] is the location of guest block b's bytes after every input
//   processed so far (zero_location until some input gives it data);
// - every location in block_map_ and in dedup_ names a slot that is either
//   written to its layer file or pending in the current chunk's buffer;
// - slots are handed out in guest order, so runs of new blocks become single
//   extents.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <optional>
#include <cstring>

#include "common/log.hpp"
#include "ringpager/snapshot.hpp"
#include "snapshot/layered/codec.hpp"
#include "snapshot/layered/dedup_index.hpp"
#include "snapshot/layered/file_io.hpp"
#include "snapshot/layered/format.hpp"
#include "snapshot/layered/input_plan.hpp"
#include "snapshot/layered/layer_writer.hpp"

namespace ringpager {
namespace layered {
namespace {

// Reads run through holes and skipped blocks shorter than this.
constexpr uint64_t read_gap_bytes = 64 << 10;

class Builder {
public:
    Builder(const SnapshotBuildOptions& options, SnapshotBuildReport& report)
        : options_(options), report_(report), block_size_(options.block_size_bytes) {}

    std::string run();

private:
    std::string check_frame_options() const;
    std::string open_inputs();
    std::string check_outputs();
    std::string build_layer(uint32_t index, const InputPlan& plan);
    std::string process_chunk(uint32_t index, const ReadTask& task, std::span<std::byte> bytes);
    std::string overlay_previous(const BuildInput& in, uint64_t block, size_t cursor, std::span<std::byte> out);
    std::string same_bytes(uint32_t index, uint64_t location, const std::byte* block, bool& same);
    std::string flush_pending(uint32_t index);
    std::string write_manifest();
    std::vector<Extent> make_extents() const;

    const SnapshotBuildOptions& options_;
    SnapshotBuildReport& report_;
    uint64_t block_size_;
    uint64_t block_count_ = 0;
    LayerId snapshot_id_{};
    std::vector<BuildInput> inputs_;
    std::vector<uint16_t> last_full_;
    std::vector<uint64_t> block_map_;
    DedupIndex dedup_;
    std::unique_ptr<UringReader> reader_;
    std::vector<std::unique_ptr<LayerWriter>> writers_;
    std::vector<LayerRecord> records_;
    std::vector<std::byte> scratch_;          // one block: previous content or a dedup candidate
    std::vector<const std::byte*> pending_;   // blocks of this chunk given slots, not yet written
    uint64_t chunk_first_slot_ = 0;
    std::vector<iovec> iov_;
    uint64_t done_bytes_ = 0;
    uint64_t total_bytes_ = 0;
};

std::string Builder::open_inputs() {
    inputs_.resize(1 + options_.diff_paths.size());
    if (auto e = open_input(options_.base_path, "base", inputs_[0]); !e.empty()) return e;
    const BuildInput& base = inputs_[0];
    if (base.size_bytes == 0) return "base " + base.path + ": the file is empty";
    if (base.size_bytes % block_size_ != 0) {
        return "base " + base.path + ": size " + std::to_string(base.size_bytes) +
               " bytes is not a multiple of the block size (" + format_bytes(block_size_) + ")";
    }
    for (size_t i = 0; i < options_.diff_paths.size(); ++i) {
        BuildInput& in = inputs_[i + 1];
        if (auto e = open_input(options_.diff_paths[i], "diff " + std::to_string(i + 1), in); !e.empty()) return e;
        if (in.size_bytes != base.size_bytes) {
            return in.role + " " + in.path + ": size " + std::to_string(in.size_bytes) + " bytes differs from the base's " +
                   std::to_string(base.size_bytes) + " bytes (a diff must be the same size as its base)";
        }
    }
    block_count_ = base.size_bytes / block_size_;
    return {};
}

std::string Builder::check_frame_options() const {
    if (!options_.frames) return {};
    const FrameOptions& f = *options_.frames;
    if (!valid_codec(static_cast<uint32_t>(f.codec))) {
        return "unknown frame codec " + std::to_string(static_cast<uint32_t>(f.codec));
    }
    if (f.codec == FrameCodec::zstd && (f.zstd_level < min_zstd_level || f.zstd_level > max_zstd_level)) {
        return "zstd level " + std::to_string(f.zstd_level) + " is not between 1 and 19";
    }
    if (!std::has_single_bit(f.frame_bytes) || f.frame_bytes < block_size_ || f.frame_bytes > max_frame_bytes) {
        return "frame size " + std::to_string(f.frame_bytes) + " is not a power of two between the block size (" +
               format_bytes(block_size_) + ") and 64 MiB";
    }
    return {};
}

// Refuses an output name that is one of the inputs: the build would replace it.
std::string Builder::check_outputs() {
    std::vector<std::string> outputs{options_.manifest_path};
    for (uint32_t i = 0; i < inputs_.size(); ++i) outputs.push_back(layer_file_path(options_.manifest_path, i));
    for (const std::string& out : outputs) {
        struct stat st {};
        if (::stat(out.c_str(), &st) != 0) continue;   // does not exist yet: nothing to clobber
        for (const BuildInput& in : inputs_) {
            if (st.st_dev == in.device && st.st_ino == in.inode) {
                return out + ": is the " + in.role + " input " + in.path + "; choose another --out";
            }
        }
    }
    size_t slash = outputs.back().find_last_of('/');
    std::string name = slash == std::string::npos ? outputs.back() : outputs.back().substr(slash + 1);
    if (name.size() >= layer_path_bytes) return options_.manifest_path + ": file name is too long for a layer name";
    if (!valid_layer_name(name)) {
        return escape_for_log(options_.manifest_path, layer_path_bytes) + ": file name holds a control character";
    }
    return {};
}

std::string Builder::run() {
    auto start = std::chrono::steady_clock::now();
    if (!std::has_single_bit(block_size_) || block_size_ < min_block_size_bytes || block_size_ > max_block_size_bytes) {
        return "block size " + std::to_string(block_size_) + " is not a power of two between 4 KiB and 1 GiB";
    }
    if (options_.manifest_path.empty()) return "no output manifest path given";
    if (options_.diff_paths.size() + 1 > max_layer_count) return "too many diffs (at most 65533)";
    if (auto e = check_frame_options(); !e.empty()) return e;
    if (auto e = open_inputs(); !e.empty()) return e;
    if (auto e = check_outputs(); !e.empty()) return e;
    if (auto e = random_id(snapshot_id_); !e.empty()) return options_.manifest_path + ": " + e;

    uint64_t buffer = std::max(block_size_, options_.read_buffer_bytes / block_size_ * block_size_);
    auto reader = UringReader::create(std::max(1u, options_.reads_in_flight), buffer);
    if (!reader) return "cannot set up io_uring for reading: " + reader.error().message();
    reader_ = std::move(*reader);
    if (inputs_.size() > 1) last_full_ = last_full_writers(inputs_, block_size_, block_count_);
    std::vector<InputPlan> plans;
    for (uint32_t i = 0; i < inputs_.size(); ++i) {
        plans.push_back(plan_reads(inputs_[i], i, last_full_, block_size_, buffer, read_gap_bytes));
        total_bytes_ += plans.back().read_bytes;
        report_.blocks_total += plans.back().touched_blocks;
        for (const ByteRange& r : inputs_[i].data) report_.bytes_in += r.end - r.begin;
    }
    block_map_.assign(block_count_, zero_location);
    scratch_.resize(block_size_);
    for (uint32_t i = 0; i < inputs_.size(); ++i) {
        if (auto e = build_layer(i, plans[i]); !e.empty()) return e;
    }
    if (auto e = write_manifest(); !e.empty()) return e;

    report_.blocks_shadowed =
        report_.blocks_total - report_.blocks_zero - report_.blocks_duplicate - report_.blocks_stored;
    report_.bytes_read = total_bytes_;
    report_.guest_size_bytes = block_count_ * block_size_;
    report_.block_size_bytes = block_size_;
    report_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return {};
}

std::string Builder::build_layer(uint32_t index, const InputPlan& plan) {
    std::unique_ptr<LayerWriter> writer;
    std::string path = layer_file_path(options_.manifest_path, index);
    if (auto e = LayerWriter::create(path, index, snapshot_id_, block_size_, writer); !e.empty()) return e;
    writers_.push_back(std::move(writer));
    const BuildInput& in = inputs_[index];
    auto consume = [&](size_t task, std::span<std::byte> bytes) {
        return process_chunk(index, plan.tasks[task], bytes);
    };
    return reader_->read_all(in.file.get(), in.role + " " + in.path, plan.tasks, consume);
}

std::string Builder::process_chunk(uint32_t index, const ReadTask& task, std::span<std::byte> bytes) {
    const BuildInput& in = inputs_[index];
    LayerWriter& writer = *writers_[index];
    chunk_first_slot_ = writer.next_slot();
    pending_.clear();
    // The first data region that ends after this chunk starts.
    auto region = std::partition_point(in.data.begin(), in.data.end(),
                                       [&](const ByteRange& r) { return r.end <= task.offset; });
    size_t cursor = static_cast<size_t>(region - in.data.begin());
    for (uint64_t at = 0; at < task.length_bytes; at += block_size_) {
        uint64_t block = (task.offset + at) / block_size_;
        uint64_t begin = block * block_size_;
        while (cursor < in.data.size() && in.data[cursor].end <= begin) ++cursor;
        bool touched = cursor < in.data.size() && in.data[cursor].begin < begin + block_size_;
        if (!touched || shadowed(last_full_, block, index)) continue;   // read through, not part of this layer
        std::span<std::byte> bytes_of_block = bytes.subspan(at, block_size_);
        bool whole = cursor < in.data.size() && in.data[cursor].begin <= begin && in.data[cursor].end >= begin + block_size_;
        if (!whole) {
            if (auto e = overlay_previous(in, block, cursor, bytes_of_block); !e.empty()) return e;
        }
        const std::byte* p = bytes_of_block.data();
        if (is_zero_block(p, block_size_)) {
            block_map_[block] = zero_location;
            ++report_.blocks_zero;
            continue;
        }
        XXH128_hash_t key = XXH3_128bits(p, block_size_);
        std::optional<uint64_t> earlier = dedup_.find(key);
        if (earlier) {
            bool same = false;
            if (auto e = same_bytes(index, *earlier, p, same); !e.empty()) return e;
            if (same) {
                block_map_[block] = *earlier;
                ++report_.blocks_duplicate;
                continue;
            }
            ++report_.hash_collisions;   // keep the first block under this key; store this one apart
        }
        uint64_t location = make_location(index, writer.add_block(XXH3_64bits(p, block_size_)));
        pending_.push_back(p);
        block_map_[block] = location;
        if (!earlier) dedup_.insert(key, location);
        ++report_.blocks_stored;
    }
    if (auto e = flush_pending(index); !e.empty()) return e;
    done_bytes_ += task.length_bytes;
    if (options_.progress) options_.progress(done_bytes_, total_bytes_);
    return {};
}

// Fills the parts of `out` (block `block` as read from `in`) that no data
// region of `in` covers with the block's previous content: those bytes did
// not change in this diff.
std::string Builder::overlay_previous(const BuildInput& in, uint64_t block, size_t cursor, std::span<std::byte> out) {
    uint64_t location = block_map_[block];
    bool zero = is_zero_location(location);
    if (!zero) {
        // SAFETY: the previous content was stored by an earlier input, whose
        // layer is complete on disk.
        auto e = writers_[location_layer(location)]->read_slot(location_slot(location), scratch_);
        if (!e.empty()) return e;
    }
    uint64_t begin = block * block_size_;
    uint64_t end = begin + block_size_;
    auto fill = [&](uint64_t from, uint64_t to) {
        if (zero) {
            std::memset(out.data() + (from - begin), 0, to - from);
        } else {
            std::memcpy(out.data() + (from - begin), scratch_.data() + (from - begin), to - from);
        }
    };
    uint64_t pos = begin;
    for (size_t i = cursor; i < in.data.size() && in.data[i].begin < end; ++i) {
        uint64_t covered_begin = std::max(in.data[i].begin, begin);
        if (covered_begin > pos) fill(pos, covered_begin);
        pos = std::max(pos, std::min(in.data[i].end, end));
    }
    if (pos < end) fill(pos, end);
    return {};
}

std::string Builder::same_bytes(uint32_t index, uint64_t location, const std::byte* block, bool& same) {
    uint32_t layer = location_layer(location);
    uint64_t slot = location_slot(location);
    const std::byte* stored = scratch_.data();
    if (layer == index && slot >= chunk_first_slot_) {
        stored = pending_[slot - chunk_first_slot_];   // still in this chunk's buffer
    } else if (auto e = writers_[layer]->read_slot(slot, scratch_); !e.empty()) {
        return e;
    }
    same = std::memcmp(stored, block, block_size_) == 0;
    return {};
}

// Writes this chunk's new blocks: consecutive slots, so one pwritev.
std::string Builder::flush_pending(uint32_t index) {
    if (pending_.empty()) return {};
    iov_.clear();
    for (const std::byte* p : pending_) {
        auto* base = const_cast<std::byte*>(p);
        if (!iov_.empty() && static_cast<std::byte*>(iov_.back().iov_base) + iov_.back().iov_len == base) {
            iov_.back().iov_len += block_size_;
        } else {
            iov_.push_back({base, block_size_});
        }
    }
    return writers_[index]->write_slots(chunk_first_slot_, iov_);
}

std::vector<Extent> Builder::make_extents() const {
    std::vector<Extent> extents;
    uint64_t previous = 0;
    for (uint64_t b = 0; b < block_count_; ++b) {
        uint64_t location = block_map_[b];
        bool continues = !extents.empty() && (is_zero_location(previous) ? is_zero_location(location)
                                                                         : location == previous + 1);
        if (!continues) extents.push_back({b, location});
        previous = location;
    }
    return extents;
}

// Removes a temporary file unless it was renamed into place.
struct TempFile {
    std::string path;
    bool renamed = false;
    ~TempFile() {
        // An unlink failure here cannot be acted on; the build reports its own error.
        if (!path.empty() && !renamed) (void)::unlink(path.c_str());
    }
};

std::string sync_directory(const std::string& directory) {
    auto dir = FileDesc::open(directory.c_str(), O_RDONLY | O_DIRECTORY);
    if (!dir) return directory + ": " + dir.error().message();
    if (::fsync(dir->get()) != 0) return directory + ": " + errno_text("fsync");
    return {};
}

// Finishes every layer, writes the manifest under a temporary name, then
// renames layers first and the manifest last: a reader never sees a new
// manifest naming layers that are not in place yet.
std::string Builder::write_manifest() {
    Manifest m;
    m.block_size_bytes = block_size_;
    m.guest_size_bytes = block_count_ * block_size_;
    m.block_count = block_count_;
    m.snapshot_id = snapshot_id_;
    FramePacking packing;
    if (options_.frames) {
        const FrameOptions& f = *options_.frames;
        m.version = framed_format_version;
        m.codec = f.codec;
        m.codec_level = f.codec == FrameCodec::zstd ? static_cast<uint32_t>(f.zstd_level) : 0;
        m.frame_blocks = f.frame_bytes / block_size_;
        packing = FramePacking{f.codec, f.zstd_level, m.frame_blocks, block_size_, f.threads};
    }
    for (auto& writer : writers_) {
        LayerRecord record;
        uint64_t& written = report_.bytes_written;
        auto e = options_.frames ? writer->finish_framed(packing, options_.sync, record, m.frames, written)
                                 : writer->finish(options_.sync, record, written);
        if (!e.empty()) return e;
        m.layers.push_back(std::move(record));
        m.checksums.insert(m.checksums.end(), writer->checksums().begin(), writer->checksums().end());
    }
    if (options_.frames) {
        report_.frames = m.frames.size();
        report_.stored_plain_bytes = m.checksums.size() * block_size_;
        for (const FrameRecord& f : m.frames) report_.stored_frame_bytes += f.stored_bytes;
    }
    m.extents = make_extents();
    report_.extent_count = m.extents.size();
    std::vector<std::byte> bytes = encode_manifest(m);

    TempFile temp{options_.manifest_path + ".tmp"};
    auto file = FileDesc::open(temp.path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (!file) {
        std::string cause = temp.path + ": " + file.error().message();
        temp.path.clear();   // never created, nothing to remove
        return cause;
    }
    if (auto e = pwrite_all(file->get(), bytes, 0, temp.path); !e.empty()) return e;
    if (options_.sync && ::fsync(file->get()) != 0) return temp.path + ": " + errno_text("fsync");
    report_.bytes_written += bytes.size();
    for (auto& writer : writers_) {
        if (auto e = writer->commit(); !e.empty()) return e;
    }
    if (::rename(temp.path.c_str(), options_.manifest_path.c_str()) != 0) {
        return temp.path + ": " + errno_text("rename") + " (to " + options_.manifest_path + ")";
    }
    temp.renamed = true;
    if (options_.sync) {
        if (auto e = sync_directory(parent_directory(options_.manifest_path)); !e.empty()) return e;
    }
    report_.files_written.push_back(options_.manifest_path);
    for (auto& writer : writers_) report_.files_written.push_back(writer->final_path());
    return {};
}

}  // namespace
}  // namespace layered

bool build_layered_snapshot(const SnapshotBuildOptions& options, SnapshotBuildReport& report, std::string& error) {
    report = SnapshotBuildReport{};
    layered::Builder builder(options, report);
    error = builder.run();
    return error.empty();
}

}  // namespace ringpager
