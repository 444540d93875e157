// random: weighted random choice — prefix sums of the weights, binary search. O(log n).
#pragma once

#include "proxy/lb/policy.h"

namespace sy::lb {

class Random final : public Policy {
 public:
  explicit Random(const std::vector<uint32_t>& weights);
  int pick(const PickContext& ctx) const override;

 private:
  std::vector<uint64_t> prefix_;  // prefix_[i] = sum of weights[0..i]
};

}  // namespace sy::lb
