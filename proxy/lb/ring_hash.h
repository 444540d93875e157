// ring_hash: consistent hashing with virtual nodes (Karger et al.; Envoy's ring_hash). Each
// endpoint gets virtual nodes in proportion to its weight, placed by hashing "key#n"; a request's
// hash goes to the next node clockwise. Adding or removing one of N endpoints moves about 1/N of
// the keys. Build O(V log V), pick O(log V) with V virtual nodes.
#pragma once

#include "proxy/lb/policy.h"

namespace sy::lb {

class RingHash final : public Policy {
 public:
  // Virtual nodes per unit of weight. Fixed — not derived from the endpoint count — so that an
  // endpoint joining or leaving does not re-place everybody else's nodes.
  static constexpr size_t kNodesPerWeight = 160;
  static constexpr size_t kMaxRing = 1 << 21;
  explicit RingHash(const std::vector<EndpointInfo>& endpoints);
  int pick(const PickContext& ctx) const override;
  size_t ring_size() const { return ring_.size(); }

 private:
  struct Node {
    uint64_t hash;
    uint32_t endpoint;
  };
  std::vector<Node> ring_;
  size_t endpoints_;
};

}  // namespace sy::lb
