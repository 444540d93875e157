// make_policy: the one place that knows every policy by name.
#include "proxy/lb/ewma.h"
#include "proxy/lb/least_request.h"
#include "proxy/lb/maglev.h"
#include "proxy/lb/random.h"
#include "proxy/lb/ring_hash.h"
#include "proxy/lb/round_robin.h"

namespace sy::lb {

std::unique_ptr<Policy> make_policy(const std::string& name, const std::vector<EndpointInfo>& endpoints) {
  std::vector<uint32_t> weights;
  weights.reserve(endpoints.size());
  for (const auto& e : endpoints) weights.push_back(e.weight);
  if (name == "least_request") return std::make_unique<LeastRequest>(endpoints);
  if (name == "random") return std::make_unique<Random>(weights);
  if (name == "ring_hash") return std::make_unique<RingHash>(endpoints);
  if (name == "maglev") return std::make_unique<Maglev>(endpoints);
  if (name == "ewma") return std::make_unique<Ewma>(endpoints);
  return std::make_unique<RoundRobin>(weights);
}

std::unique_ptr<Policy> make_policy(const std::string& name, const std::vector<uint32_t>& weights) {
  std::vector<EndpointInfo> eps;
  for (size_t i = 0; i < weights.size(); ++i) eps.push_back({weights[i], std::to_string(i), nullptr});
  return make_policy(name, eps);
}

}  // namespace sy::lb
