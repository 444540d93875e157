// Consistent hash ring.
#include "proxy/lb/ring_hash.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace sy::lb {

RingHash::RingHash(const std::vector<EndpointInfo>& endpoints) : endpoints_(endpoints.size()) {
  if (endpoints.empty()) return;
  uint64_t total = 0;
  for (const auto& e : endpoints) total += e.weight;
  // Very large sets are scaled down to bound memory (then shares shift a little more on change).
  const double per_unit = std::min<double>(kNodesPerWeight, static_cast<double>(kMaxRing) / static_cast<double>(total));
  for (size_t i = 0; i < endpoints.size(); ++i) {
    const size_t vnodes = std::max<size_t>(1, static_cast<size_t>(std::llround(endpoints[i].weight * per_unit)));
    const uint64_t base = hash_bytes(endpoints[i].key.data(), endpoints[i].key.size());
    for (size_t n = 0; n < vnodes; ++n) ring_.push_back({mix64(base + n * 0x9e3779b97f4a7c15ull), static_cast<uint32_t>(i)});
  }
  std::sort(ring_.begin(), ring_.end(), [](const Node& a, const Node& b) { return a.hash < b.hash; });
}

int RingHash::pick(const PickContext& ctx) const {
  if (ring_.empty()) return -1;
  const uint64_t h = ctx.has_hash ? ctx.hash : ctx.random;  // no key: spread at random
  auto it = std::lower_bound(ring_.begin(), ring_.end(), h, [](const Node& n, uint64_t v) { return n.hash < v; });
  size_t pos = it == ring_.end() ? 0 : static_cast<size_t>(it - ring_.begin());
  // A retry walks on clockwise to the next endpoint not tried yet.
  for (size_t k = 0; k < ring_.size(); ++k) {
    const Node& n = ring_[(pos + k) % ring_.size()];
    if (!ctx.excluded(n.endpoint)) return static_cast<int>(n.endpoint);
    if (k > 4 * endpoints_ + 64) break;
  }
  return static_cast<int>(ring_[pos].endpoint);
}

}  // namespace sy::lb
