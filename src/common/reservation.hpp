// Reservation: a share of a bounded engine-wide budget (VM state memory,
// file descriptors held for peers), taken before anything is allocated or
// accepted and given back when its owner is destroyed, on every path.
#pragma once

#include <atomic>
#include <cstdint>
#include <utility>

namespace ringpager {

class Reservation {
public:
    Reservation() = default;
    // Takes `amount` from `used` if that keeps it at or below `limit`;
    // otherwise returns an empty reservation (check with held()).
    static Reservation take(std::atomic<uint64_t>& used, uint64_t amount, uint64_t limit) {
        uint64_t now = used.load(std::memory_order_relaxed);
        do {
            if (amount > limit || now > limit - amount) return Reservation();
        } while (!used.compare_exchange_weak(now, now + amount, std::memory_order_relaxed));
        return Reservation(&used, amount);
    }
    Reservation(const Reservation&) = delete;
    Reservation& operator=(const Reservation&) = delete;
    Reservation(Reservation&& other) noexcept
        : used_(std::exchange(other.used_, nullptr)), amount_(std::exchange(other.amount_, 0)) {}
    Reservation& operator=(Reservation&& other) noexcept {
        if (this != &other) {
            reset();
            used_ = std::exchange(other.used_, nullptr);
            amount_ = std::exchange(other.amount_, 0);
        }
        return *this;
    }
    ~Reservation() { reset(); }

    bool held() const { return used_ != nullptr; }
    uint64_t amount() const { return amount_; }
    void reset() {
        if (used_ != nullptr) used_->fetch_sub(amount_, std::memory_order_relaxed);
        used_ = nullptr;
        amount_ = 0;
    }

private:
    Reservation(std::atomic<uint64_t>* used, uint64_t amount) : used_(used), amount_(amount) {}
    std::atomic<uint64_t>* used_ = nullptr;
    uint64_t amount_ = 0;
};

}  // namespace ringpager
