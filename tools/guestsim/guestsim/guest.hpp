// Guest: plays Firecracker's side of a snapshot restore with a userfaultfd
// backend (SPEC §1). It maps guest memory the way Firecracker does, creates
// and registers the uffd, connects once to the handler socket and sends the
// handshake with the uffd attached; then simulated vCPU threads touch memory
// and the guest checks every byte it sees against the expected image.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "guestsim/expected_image.hpp"
#include "guestsim/handshake.hpp"
#include "guestsim/mapping.hpp"
#include "guestsim/touch.hpp"
#include "ringpager/file_desc.hpp"
#include "ringpager/region.hpp"
#include "ringpager/result.hpp"

namespace ringpager::sim {

struct GuestConfig {
    std::string socket_path;
    std::vector<uint64_t> region_sizes_bytes;      // e.g. {64 MiB} or {32 MiB, 16 MiB, 8 MiB}
    uint64_t page_size_bytes = 4096;               // 4096, or 2 MiB for a hugetlb guest
    HandshakeShape shape = HandshakeShape::v1_12;
    std::vector<uint64_t> region_offsets_bytes;    // file offsets; empty: back to back from 0
    uint64_t gap_bytes = 2 << 20;                  // unmapped host-virtual gap between regions (an MMIO hole)
    bool force_dev_userfaultfd = false;            // create the uffd through /dev/userfaultfd (tests the fallback)
};

struct Mismatch {
    uint64_t guest_page_index = 0;
    uint64_t region_index = 0;
    uint64_t addr = 0;               // host virtual address of the page
    uint64_t file_offset_bytes = 0;  // where the page's bytes live in the memory file
    bool expected_zero = false;      // the page was discarded, so it had to read zeros
};

struct VerifyReport {
    uint64_t pages_checked = 0;
    uint64_t zero_pages_checked = 0;  // discarded pages, checked against zeros
    uint64_t mismatches = 0;
    std::vector<Mismatch> first_mismatches;  // at most kMaxListedMismatches
    uint64_t total_ns = 0;

    static constexpr size_t kMaxListedMismatches = 16;
    bool ok() const { return mismatches == 0 && pages_checked > 0; }
    std::string describe() const;  // one line; lists the first mismatches
};

enum class VerifyScope { all_pages, touched_pages };

class Guest {
public:
    // Maps the regions, creates the uffd and registers every region in
    // MISSING mode. Does not connect.
    static Result<Guest> create(const GuestConfig& config);

    Guest(Guest&&) noexcept = default;
    Guest& operator=(Guest&&) noexcept = default;
    ~Guest() = default;

    // Connects once (no retry) and sends the handshake JSON with the uffd in
    // one sendmsg. The connection stays open until the Guest is destroyed or
    // disconnect() is called, as Firecracker >= 1.12 does.
    Result<void> connect_and_send();
    // Closes the connection as if Firecracker had exited (memory stays mapped).
    void disconnect() { socket_.reset(); }

    // Starts `vcpus` threads together and touches the planned pages. Every
    // touch blocks until the handler serves the page; never call this without
    // a handler that has received the uffd. May run concurrently with
    // discard() (a balloon racing the vCPUs); nothing else is thread-safe.
    TouchReport touch(Pattern pattern, unsigned vcpus, double fraction, uint64_t seed,
                      const TouchOptions& options = {});
    // Touches exactly these linear page indices (each < page_count()), split
    // into contiguous slices between `vcpus` threads.
    TouchReport touch_pages(const std::vector<uint64_t>& pages, unsigned vcpus, const TouchOptions& options = {});

    // Hashes every guest page (or every touched one) and compares it with the
    // expected image at the page's file offset, or with zeros for discarded
    // pages. Reading an untouched page faults it in.
    VerifyReport verify(const ExpectedImage& expected, VerifyScope scope = VerifyScope::all_pages) const;

    // Drops [guest_offset, guest_offset + len) with MADV_DONTNEED, like a
    // balloon inflating: the handler gets UFFD_EVENT_REMOVE and those pages
    // must read zeros from now on. Offsets are linear guest offsets (regions
    // concatenated, gaps excluded), page aligned; the range may span regions.
    // Blocks until the handler has read the REMOVE event.
    Result<void> discard(uint64_t guest_offset_bytes, uint64_t length_bytes);
    // Discards random chunk-aligned chunks until ~fraction of memory is
    // discarded; returns the linear page indices discarded.
    Result<std::vector<uint64_t>> discard_random(double fraction, uint64_t chunk_bytes, uint64_t seed);

    const RegionList& regions() const { return regions_; }
    uint64_t page_size_bytes() const { return page_size_bytes_; }
    uint64_t page_count() const { return page_count_; }
    uint64_t memory_bytes() const { return page_count_ * page_size_bytes_; }
    std::byte* page_address(uint64_t guest_page_index) const;
    // Region index of a linear page index.
    size_t region_of_page(uint64_t guest_page_index) const;
    uint64_t file_offset_of_page(uint64_t guest_page_index) const;
    bool page_discarded(uint64_t guest_page_index) const { return discarded_[guest_page_index] != 0; }
    bool page_touched(uint64_t guest_page_index) const { return touched_[guest_page_index] != 0; }

    // The exact bytes connect_and_send() sends.
    std::string handshake_json() const { return sim::handshake_json(regions_, shape_); }
    int uffd() const { return uffd_.get(); }
    int socket_fd() const { return socket_.get(); }
    const std::string& socket_path() const { return socket_path_; }

private:
    Guest() = default;

    // Declaration order is destruction order in reverse: the mappings go
    // first (no fault can arrive after that), then the uffd, then the socket.
    FileDesc socket_;
    FileDesc uffd_;
    std::vector<Mapping> mappings_;  // one per region
    RegionList regions_;
    std::vector<uint64_t> region_first_page_;  // linear index of each region's first page
    // Per linear page. Two separate byte vectors, so that touch() (which
    // writes touched_) and discard() (which writes discarded_) may run on
    // different threads at the same time without a data race.
    std::vector<uint8_t> touched_;
    std::vector<uint8_t> discarded_;
    uint64_t page_size_bytes_ = 4096;
    uint64_t page_count_ = 0;
    HandshakeShape shape_ = HandshakeShape::v1_12;
    std::string socket_path_;
};

}  // namespace ringpager::sim
