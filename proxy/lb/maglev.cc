// Maglev table population (weighted by turns).
#include "proxy/lb/maglev.h"

#include <algorithm>

namespace sy::lb {

Maglev::Maglev(const std::vector<EndpointInfo>& endpoints) : endpoints_(endpoints.size()) {
  const size_t n = endpoints.size();
  if (n == 0) return;
  const uint64_t M = kTableSize;
  std::vector<uint64_t> offset(n), skip(n), next(n, 0);
  uint32_t max_w = 1;
  for (size_t i = 0; i < n; ++i) {
    const auto& k = endpoints[i].key;
    offset[i] = hash_bytes(k.data(), k.size(), 0x5bd1e995) % M;
    skip[i] = hash_bytes(k.data(), k.size(), 0x1b873593) % (M - 1) + 1;
    max_w = std::max(max_w, endpoints[i].weight);
  }
  table_.assign(M, UINT32_MAX);
  uint64_t filled = 0;
  // Weighted population: in each round an endpoint of weight w takes a slot in w of max_w turns
  // (credit accumulates), so the table shares follow the weights.
  std::vector<uint64_t> credit(n, 0);
  while (filled < M) {
    for (size_t i = 0; i < n && filled < M; ++i) {
      credit[i] += endpoints[i].weight;
      if (credit[i] < max_w) continue;
      credit[i] -= max_w;
      uint64_t c = (offset[i] + next[i] * skip[i]) % M;
      while (table_[c] != UINT32_MAX) {
        ++next[i];
        c = (offset[i] + next[i] * skip[i]) % M;
      }
      table_[c] = static_cast<uint32_t>(i);
      ++next[i];
      ++filled;
    }
  }
}

int Maglev::pick(const PickContext& ctx) const {
  if (table_.empty()) return -1;
  const uint64_t h = ctx.has_hash ? ctx.hash : ctx.random;
  const size_t pos = h % kTableSize;
  if (!ctx.excluded(table_[pos])) return static_cast<int>(table_[pos]);
  // A retry: the next slots of the table (the same for the same key) until an untried endpoint.
  for (size_t k = 1; k < kTableSize && k < 64 * endpoints_ + 64; ++k) {
    uint32_t e = table_[(pos + k) % kTableSize];
    if (!ctx.excluded(e)) return static_cast<int>(e);
  }
  return static_cast<int>(table_[pos]);
}

}  // namespace sy::lb
