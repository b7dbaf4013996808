// One guest memory region as Firecracker describes it in the handshake.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ringpager {

struct Region {
    uint64_t base_host_virt_addr = 0;  // where the region starts in the VM process
    uint64_t size_bytes = 0;           // length of the region
    uint64_t offset_bytes = 0;         // where the region's bytes start in the memory file
    uint64_t page_size_bytes = 4096;   // 4096, or 2097152 for hugetlb guests

    uint64_t end_addr() const { return base_host_virt_addr + size_bytes; }
    uint64_t page_count() const { return size_bytes / page_size_bytes; }
    bool contains(uint64_t addr) const { return addr >= base_host_virt_addr && addr < end_addr(); }
};

using RegionList = std::vector<Region>;

}  // namespace ringpager
