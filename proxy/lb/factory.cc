// make_policy: the one place that knows every policy by name.
#include "proxy/lb/ewma.h"
#include "proxy/lb/least_request.h"
#include "proxy/lb/maglev.h"
#include "proxy/lb/random.h"
#include "proxy/lb/ring_hash.h"
#include "proxy/lb/round_robin.h"

namespace sy::lb {

std::unique_ptr<Policy> make_policy(conf::Lb lb, const std::vector<EndpointInfo>& endpoints) {
  std::vector<uint32_t> weights;
  weights.reserve(endpoints.size());
  for (const auto& e : endpoints) weights.push_back(e.weight);
  switch (lb) {
    case conf::Lb::kLeastRequest: return std::make_unique<LeastRequest>(endpoints);
    case conf::Lb::kRandom: return std::make_unique<Random>(weights);
    case conf::Lb::kRingHash: return std::make_unique<RingHash>(endpoints);
    case conf::Lb::kMaglev: return std::make_unique<Maglev>(endpoints);
    case conf::Lb::kEwma: return std::make_unique<Ewma>(endpoints);
    case conf::Lb::kRoundRobin: break;
  }
  return std::make_unique<RoundRobin>(weights);
}

std::unique_ptr<Policy> make_policy(const std::string& name, const std::vector<EndpointInfo>& endpoints) {
  conf::Lb lb = conf::Lb::kRoundRobin;
  conf::parse_lb(name, lb);
  return make_policy(lb, endpoints);
}

std::unique_ptr<Policy> make_policy(const std::string& name, const std::vector<uint32_t>& weights) {
  std::vector<EndpointInfo> eps;
  for (size_t i = 0; i < weights.size(); ++i) eps.push_back({weights[i], std::to_string(i), nullptr});
  return make_policy(name, eps);
}

}  // namespace sy::lb
