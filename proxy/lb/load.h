// Live load of one endpoint, shared by the request path (which updates it) and the policies that
// read it (least_request, ewma). Every worker thread updates the same instance's stats, so the
// fields are relaxed atomics: `active` is exact; the latency estimate may lose an update when two
// workers observe at the same instant, which a decaying average shrugs off.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>

namespace sy::lb {

struct LoadStats {
  std::atomic<uint32_t> active{0};    // requests in flight
  std::atomic<double> ewma_ns{0};     // peak-EWMA of response latency
  std::atomic<int64_t> stamp_ns{0};   // when ewma_ns was last updated

  static constexpr double kDecayNs = 10e9;  // Finagle's and Linkerd's default decay time (10 s)

  // Records a response latency: peaks are taken at once, recovery decays over kDecayNs.
  void observe(int64_t now_ns, double rtt_ns) {
    const double td = static_cast<double>(std::max<int64_t>(0, now_ns - stamp_ns.load(std::memory_order_relaxed)));
    const double w = std::exp(-td / kDecayNs);
    const double prev = ewma_ns.load(std::memory_order_relaxed);
    stamp_ns.store(now_ns, std::memory_order_relaxed);
    ewma_ns.store(rtt_ns > prev ? rtt_ns : prev * w + rtt_ns * (1 - w), std::memory_order_relaxed);
  }
  uint32_t in_flight() const { return active.load(std::memory_order_relaxed); }
  bool measured() const { return stamp_ns.load(std::memory_order_relaxed) != 0; }
  // The latency estimate now: an idle endpoint's cost decays, so a recovered one wins traffic back.
  double cost(int64_t now_ns) const {
    const double td = static_cast<double>(std::max<int64_t>(0, now_ns - stamp_ns.load(std::memory_order_relaxed)));
    return ewma_ns.load(std::memory_order_relaxed) * std::exp(-td / kDecayNs);
  }
};

// 64-bit mixing (splitmix64's finalizer): spreads sequential or low-entropy input.
inline uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

// FNV-1a then mixed: the hash of keys (header values, cookie values, instance ids).
inline uint64_t hash_bytes(const char* p, size_t n, uint64_t seed = 0) {
  uint64_t h = 0xcbf29ce484222325ull ^ seed;
  for (size_t i = 0; i < n; ++i) {
    h ^= static_cast<unsigned char>(p[i]);
    h *= 0x100000001b3ull;
  }
  return mix64(h);
}

}  // namespace sy::lb
