// UringReader: reads a list of file ranges through io_uring with several
// large reads in flight, and hands each range to a consumer in list order.
// The snapshot builder and the verify tool read whole memory files and layer
// files with it; the engine's fault path has its own ring and never uses this.
#pragma once

#include <liburing.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "ringpager/result.hpp"

namespace ringpager::io {

struct ReadTask {
    uint64_t offset = 0;
    uint64_t length_bytes = 0;   // at most the reader's buffer size
};

class UringReader {
public:
    // Return "" to go on, or an error message to stop reading.
    using Consumer = std::function<std::string(size_t task_index, std::span<std::byte> bytes)>;

    static Result<std::unique_ptr<UringReader>> create(unsigned reads_in_flight, uint64_t buffer_bytes);
    ~UringReader();
    UringReader(const UringReader&) = delete;
    UringReader& operator=(const UringReader&) = delete;

    uint64_t buffer_bytes() const { return buffer_bytes_; }

    // Reads every task from `fd` and calls `consume` for each, in task order.
    // Returns "" or the first error (a read failure names `path`). Never
    // returns while a read into one of its buffers is still in flight.
    std::string read_all(int fd, const std::string& path, std::span<const ReadTask> tasks, const Consumer& consume);

private:
    struct Slot {
        size_t task = 0;
        uint64_t done_bytes = 0;
        bool in_flight = false;
        bool complete = false;
    };
    struct FreeDeleter {
        void operator()(std::byte* p) const;
    };

    UringReader(unsigned reads_in_flight, uint64_t buffer_bytes);
    void prepare(int fd, size_t slot_index, std::span<const ReadTask> tasks);
    std::string submit();
    std::string wait_one(int fd, const std::string& path, std::span<const ReadTask> tasks);
    void drain();

    io_uring ring_{};
    bool ring_ready_ = false;
    unsigned depth_ = 0;
    uint64_t buffer_bytes_ = 0;
    std::vector<std::unique_ptr<std::byte, FreeDeleter>> buffers_;
    std::vector<Slot> slots_;
    unsigned in_flight_ = 0;     // prepared or submitted and not yet completed
    unsigned unsubmitted_ = 0;   // prepared and not yet taken by the kernel
    bool broken_ = false;        // a drain failed; buffers were leaked on purpose
};

}  // namespace ringpager::io

namespace ringpager::layered {
// The snapshot builder and verifier read their inputs through it.
using io::ReadTask;
using io::UringReader;
}  // namespace ringpager::layered
