// Small, fast, seeded pseudo-random generators. Image generation and touch
// plans must be reproducible from a seed alone, and fast enough to fill
// hundreds of MiB per second, so we use splitmix64 (seeding, hashing of
// indices) and xoshiro256** (bulk bytes) instead of <random>'s engines.
#pragma once

#include <cstdint>

namespace ringpager::sim {

// One step of splitmix64: a good 64-bit mixer of any input.
inline uint64_t splitmix64(uint64_t& state) {
    uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

// A stateless hash of (seed, index, stream): the same inputs always give the
// same value, so per-page decisions need no stored state.
inline uint64_t mix3(uint64_t seed, uint64_t index, uint64_t stream) {
    uint64_t s = seed ^ (stream * 0xd1b54a32d192ed03ULL);
    splitmix64(s);
    s ^= index * 0x9e3779b97f4a7c15ULL;
    return splitmix64(s);
}

// Maps a 64-bit value to [0, 1).
inline double unit_interval(uint64_t x) { return static_cast<double>(x >> 11) * 0x1.0p-53; }

class Xoshiro256 {
public:
    explicit Xoshiro256(uint64_t seed) {
        for (auto& word : s_) word = splitmix64(seed);
    }

    uint64_t next() {
        const uint64_t result = rotl(s_[1] * 5, 7) * 9;
        const uint64_t t = s_[1] << 17;
        s_[2] ^= s_[0];
        s_[3] ^= s_[1];
        s_[1] ^= s_[2];
        s_[0] ^= s_[3];
        s_[2] ^= t;
        s_[3] = rotl(s_[3], 45);
        return result;
    }

    // Uniform in [0, bound); bound > 0. The tiny modulo bias is irrelevant here.
    uint64_t below(uint64_t bound) { return next() % bound; }

private:
    static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
    uint64_t s_[4];
};

}  // namespace ringpager::sim
