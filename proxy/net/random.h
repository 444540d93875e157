// The one source of non-cryptographic randomness (xorshift64*), for load-balancing picks, request
// ids, jitter of probes, retries and reconnects; and the one exponential backoff with jitter.
// Each owner keeps its own Random (a worker, the prober, the etcd backend): no shared state, no
// lock. Not for secrets.
#pragma once

#include <algorithm>
#include <cstdint>

namespace sy::net {

class Random {
 public:
  // `seed` mixes in whatever makes owners differ (a clock, a worker's index); 0 is fine.
  explicit Random(uint64_t seed = 0) : state_(0x9E3779B97F4A7C15ull ^ (seed * 0xBF58476D1CE4E5B9ull)) {
    if (state_ == 0) state_ = 0x9E3779B97F4A7C15ull;
  }
  void mix(uint64_t seed) {
    state_ ^= seed * 0x94D049BB133111EBull;
    if (state_ == 0) state_ = 0x9E3779B97F4A7C15ull;
  }
  uint64_t next() {
    state_ ^= state_ >> 12;
    state_ ^= state_ << 25;
    state_ ^= state_ >> 27;
    return state_ * 2685821657736338717ull;
  }
  // Uniform in [0, n] (n + 1 values).
  uint64_t upto(uint64_t n) { return n == UINT64_MAX ? next() : next() % (n + 1); }
  // Uniform in [0, 1).
  double unit() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

 private:
  uint64_t state_;
};

// Exponential backoff: the ceiling before try n + 1 after n tries, min(max, base · 2^(n-1)).
inline uint64_t backoff_ceiling(uint64_t base, uint64_t max, uint32_t tries) {
  const uint32_t shift = std::min<uint32_t>(tries > 0 ? tries - 1 : 0, 20);
  return std::min<uint64_t>(max, base << shift);
}
// Full jitter (uniform in [0, ceiling]): what spreads retries of one request best (AWS's analysis).
inline uint64_t full_jitter(uint64_t ceiling, uint64_t random) { return random % (ceiling + 1); }
// Equal jitter (uniform in [ceiling/2, ceiling]): at least half the wait, for reconnects that must
// not spin, still spread so a fleet does not return in step.
inline uint64_t equal_jitter(uint64_t ceiling, uint64_t random) { return ceiling / 2 + random % (ceiling / 2 + 1); }

}  // namespace sy::net
