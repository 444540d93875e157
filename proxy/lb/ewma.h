// ewma: latency-aware choice — each endpoint's cost is its peak-EWMA response latency times
// (requests in flight + 1), picked with two random choices (Finagle's and Linkerd's "p2c+peakEWMA").
// A slow endpoint's cost jumps at its first slow answer, so it sheds load at once; when idle its
// estimate decays (LoadStats::kDecayNs), so it wins traffic back when it speeds up.
#pragma once

#include "proxy/lb/policy.h"

namespace sy::lb {

class Ewma final : public Policy {
 public:
  explicit Ewma(const std::vector<EndpointInfo>& endpoints);
  int pick(const PickContext& ctx) const override;

 private:
  std::vector<uint32_t> weight_;
  std::vector<const LoadStats*> load_;
};

}  // namespace sy::lb
