// Reserving 2 MiB huge pages for hugetlb guests.
#pragma once

#include <cstdint>
#include <string>

namespace ringpager::sim {

// Makes sure at least `count` 2 MiB huge pages are free, raising
// /proc/sys/vm/nr_hugepages when needed (requires root). Returns an empty
// string on success, else one line saying what failed and what to do.
std::string ensure_hugepages(uint64_t count);

// HugePages_Free from /proc/meminfo (2 MiB pages), or -1 when unreadable.
int64_t free_hugepages();

}  // namespace ringpager::sim
