#include "engine/placement.hpp"

#include <algorithm>

namespace ringpager {

Reactor& Placement::choose() {
    size_t best = 0;
    for (size_t i = 1; i < reactors_.size(); i++)
        if (reactors_[i]->active_vms() + pending_[i] < reactors_[best]->active_vms() + pending_[best]) best = i;
    pending_[best]++;
    // The estimate only needs to break ties between simultaneous accepts.
    if (++placed_ % 64 == 0) std::fill(pending_.begin(), pending_.end(), 0);
    return *reactors_[best];
}

}  // namespace ringpager
