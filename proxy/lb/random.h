// random: weighted random choice — prefix sums of the weights, binary search. O(log n).
#pragma once

#include "proxy/lb/policy.h"

namespace sy::lb {

class Random final : public Policy {
 public:
  explicit Random(const std::vector<uint32_t>& weights);
  explicit Random(size_t uniform_n) : uniform_n_(uniform_n) {}  // n endpoints of equal weight
  int pick(const PickContext& ctx) const override;

 private:
  std::vector<uint64_t> prefix_;  // prefix_[i] = sum of weights[0..i]
  size_t uniform_n_ = 0;          // equal weights: prefix_ empty, a draw is random % n
};

}  // namespace sy::lb
