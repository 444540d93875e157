// maglev: Google's Maglev lookup table (Eisenbud et al., NSDI 2016) — a table of prime size
// (65537) filled from each endpoint's own permutation of the slots, in turns proportional to
// weight. A pick is one table read: O(1). Balance is within a fraction of a percent and removing
// one endpoint moves about 1/N of the keys (a little more than the ring, by design of the paper).
#pragma once

#include "proxy/lb/policy.h"

namespace sy::lb {

class Maglev final : public Policy {
 public:
  static constexpr uint32_t kTableSize = 65537;  // prime, ≥ 100 × a typical endpoint count
  explicit Maglev(const std::vector<EndpointInfo>& endpoints);
  int pick(const PickContext& ctx) const override;
  const std::vector<uint32_t>& table() const { return table_; }

 private:
  std::vector<uint32_t> table_;
  size_t endpoints_;
};

}  // namespace sy::lb
