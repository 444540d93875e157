// ewma: latency-aware choice — each endpoint's cost is its peak-EWMA response latency times
// (requests in flight + 1), picked with two random choices (Finagle's and Linkerd's "p2c+peakEWMA").
// A slow endpoint's cost jumps at its first slow answer, so it sheds load at once; when idle its
// estimate decays (LoadStats::kDecayNs), so it wins traffic back when it speeds up.
#pragma once

#include "proxy/lb/policy.h"

namespace sy::lb {

class Ewma final : public Policy {
 public:
  explicit Ewma(const std::vector<EndpointInfo>& endpoints)
      : own_(std::make_unique<VectorSource>(endpoints)), src_(own_.get()) {}
  explicit Ewma(const EndpointSource& src) : src_(&src) {}
  int pick(const PickContext& ctx) const override;

 private:
  std::unique_ptr<VectorSource> own_;  // built from EndpointInfo
  const EndpointSource* src_;
};

}  // namespace sy::lb
