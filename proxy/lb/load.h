// The load-balancing policies' shared helpers: the endpoint load they read (net::LoadStats) and
// the hashes of keys.
#pragma once

#include <cstddef>
#include <cstdint>

#include "proxy/net/load_stats.h"

namespace sy::lb {

using LoadStats = net::LoadStats;

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
