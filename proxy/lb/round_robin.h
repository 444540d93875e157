// Smooth weighted round robin (nginx's algorithm): weights 5:1:1 give a a b a c a a.
#pragma once

#include <atomic>

#include "proxy/lb/policy.h"

namespace sy::lb {

// The whole cycle of the smooth sequence (sum of weights picks) is computed once at build, so a
// pick is one atomic increment and an array read: O(1), lock-free, the same sequence nginx gives.
// Past kMaxCycle total weight the cycle is scaled down proportionally.
class RoundRobin final : public Policy {
 public:
  static constexpr size_t kMaxCycle = 1 << 16;
  explicit RoundRobin(const std::vector<uint32_t>& weights);
  // n endpoints of equal weight: the cycle is 0..n-1, kept as n (nothing to build).
  static std::unique_ptr<RoundRobin> uniform(size_t n) {
    auto rr = std::make_unique<RoundRobin>(std::vector<uint32_t>{});
    rr->endpoints_ = n;
    rr->uniform_ = true;
    return rr;
  }
  int pick(const PickContext& ctx) const override;
  const std::vector<uint32_t>& cycle() const { return cycle_; }

 private:
  std::vector<uint32_t> cycle_;
  size_t endpoints_;
  bool uniform_ = false;  // the cycle is 0..endpoints_-1 (cycle_ empty)
  mutable std::atomic<uint64_t> cursor_{0};
};

}  // namespace sy::lb
