// The barrier hooks' registry (test_hooks.hpp), compiled with -Dtest_hooks=true.
#include "reactor/test_hooks.hpp"

#include <mutex>

namespace ringpager {

#ifdef RINGPAGER_TEST_HOOKS
namespace test_hooks {
std::atomic<bool> g_armed[static_cast<unsigned>(Point::count)];
namespace {
std::mutex g_hooks_mu;
Hook g_hooks[static_cast<unsigned>(Point::count)];
}  // namespace
void arm(Point point, Hook hook) {
    std::lock_guard lock(g_hooks_mu);
    g_hooks[static_cast<unsigned>(point)] = std::move(hook);
    g_armed[static_cast<unsigned>(point)].store(true);
}
void disarm(Point point) {
    std::lock_guard lock(g_hooks_mu);
    g_armed[static_cast<unsigned>(point)].store(false);
    g_hooks[static_cast<unsigned>(point)] = nullptr;
}
void fire(Point point, uint64_t vm_id, uint64_t page) {
    Hook hook;
    {
        std::lock_guard lock(g_hooks_mu);
        hook = g_hooks[static_cast<unsigned>(point)];
    }
    if (hook) hook(vm_id, page);
}
namespace {
std::mutex g_io_mu;
IoHook g_io_hook;
}  // namespace
std::atomic<bool> g_io_armed{false};
void arm_io(IoHook hook) {
    std::lock_guard lock(g_io_mu);
    g_io_hook = std::move(hook);
    g_io_armed.store(true);
}
void disarm_io() {
    std::lock_guard lock(g_io_mu);
    g_io_armed.store(false);
    g_io_hook = nullptr;
}
void fire_io(unsigned reactor, io::IoFaults& faults) {
    IoHook hook;
    {
        std::lock_guard lock(g_io_mu);
        hook = g_io_hook;
    }
    if (hook) hook(reactor, faults);
}
}  // namespace test_hooks
#endif

}  // namespace ringpager
