// Barrier hooks at named points of the fault path (DESIGN.md "Testing
// seams"). Compiled in with -Dtest_hooks=true; when no hook is armed the cost
// is one relaxed atomic load. Race tests arm a hook, park the reactor there,
// act from the simulated guest, then release it.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>

#include "io/io_loop.hpp"

namespace ringpager::test_hooks {

enum class Point : unsigned {
    before_copy = 0,        // a completed read is about to be installed (page = first page)
    after_event_drain = 1,  // a VM's events of this turn were applied
    before_take_mail = 2,   // a reactor is about to take its mailbox (vm_id = the reactor's index)
    before_fetch = 3,       // a VM asks its source to fetch a range (page = its first page)
    count = 4,
};

using Hook = std::function<void(uint64_t vm_id, uint64_t page)>;
// Called at the start of every loop turn of every reactor, on its thread:
// the fake io backend's seam (tests arm injected results there).
using IoHook = std::function<void(unsigned reactor, io::IoFaults& faults)>;

#ifdef RINGPAGER_TEST_HOOKS
extern std::atomic<bool> g_armed[static_cast<unsigned>(Point::count)];
void arm(Point point, Hook hook);
void disarm(Point point);
void fire(Point point, uint64_t vm_id, uint64_t page);
inline void at(Point point, uint64_t vm_id, uint64_t page) {
    if (g_armed[static_cast<unsigned>(point)].load(std::memory_order_relaxed)) fire(point, vm_id, page);
}
extern std::atomic<bool> g_io_armed;
void arm_io(IoHook hook);
void disarm_io();
void fire_io(unsigned reactor, io::IoFaults& faults);
inline void at_turn(unsigned reactor, io::IoFaults& faults) {
    if (g_io_armed.load(std::memory_order_relaxed)) fire_io(reactor, faults);
}
#else
inline void at(Point, uint64_t, uint64_t) {}
inline void at_turn(unsigned, io::IoFaults&) {}
#endif

}  // namespace ringpager::test_hooks
