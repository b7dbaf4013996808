// Placement: which reactor serves a VM that passed its handshake: the one
// with the fewest VMs, counting VMs handed over but not adopted yet (so
// simultaneous accepts spread). Sized from the reactors it places on: no
// fixed table. Used by the acceptor, on its reactor's thread.
#pragma once

#include <cstdint>
#include <vector>

#include "reactor/reactor.hpp"

namespace ringpager {

class Placement {
public:
    explicit Placement(std::vector<Reactor*> reactors) : reactors_(std::move(reactors)), pending_(reactors_.size(), 0) {}

    Reactor& choose();

private:
    std::vector<Reactor*> reactors_;
    std::vector<uint64_t> pending_;  // handed over since the last reset
    uint64_t placed_ = 0;
};

}  // namespace ringpager
