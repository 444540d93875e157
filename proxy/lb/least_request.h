// least_request: power of two choices over requests in flight, weighted — two random endpoints,
// the one with fewer active requests per unit of weight wins (Envoy's and Finagle's P2C).
#pragma once

#include "proxy/lb/policy.h"

namespace sy::lb {

class LeastRequest final : public Policy {
 public:
  explicit LeastRequest(const std::vector<EndpointInfo>& endpoints)
      : own_(std::make_unique<VectorSource>(endpoints)), src_(own_.get()) {}
  explicit LeastRequest(const EndpointSource& src) : src_(&src) {}
  int pick(const PickContext& ctx) const override;

 private:
  std::unique_ptr<VectorSource> own_;  // built from EndpointInfo
  const EndpointSource* src_;
};

}  // namespace sy::lb
