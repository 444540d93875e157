// least_request: power of two choices over requests in flight, weighted — two random endpoints,
// the one with fewer active requests per unit of weight wins (Envoy's and Finagle's P2C).
#pragma once

#include "proxy/lb/policy.h"

namespace sy::lb {

class LeastRequest final : public Policy {
 public:
  explicit LeastRequest(const std::vector<EndpointInfo>& endpoints);
  int pick(const PickContext& ctx) const override;

 private:
  std::vector<uint32_t> weight_;
  std::vector<const LoadStats*> load_;
};

}  // namespace sy::lb
