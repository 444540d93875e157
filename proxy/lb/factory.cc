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

std::unique_ptr<Policy> make_policy_over(conf::Lb lb, const EndpointSource& src, bool uniform) {
  switch (lb) {
    case conf::Lb::kLeastRequest: return std::make_unique<LeastRequest>(src);
    case conf::Lb::kEwma: return std::make_unique<Ewma>(src);
    case conf::Lb::kRoundRobin:
      if (uniform) return RoundRobin::uniform(src.size());
      break;
    case conf::Lb::kRandom:
      if (uniform && src.size() > 0) return std::make_unique<Random>(src.size());
      break;
    case conf::Lb::kRingHash:
    case conf::Lb::kMaglev: break;
  }
  return nullptr;
}

std::unique_ptr<Policy> make_policy(const std::string& name, const std::vector<EndpointInfo>& endpoints) {
  conf::Lb lb = conf::Lb::kRoundRobin;
  conf::parse_lb(name, lb);
  return make_policy(lb, endpoints);
}

std::unique_ptr<Policy> make_policy(const std::string& name, const std::vector<uint32_t>& weights) {
  std::vector<std::string> keys;  // outlive the build: EndpointInfo holds views
  keys.reserve(weights.size());
  std::vector<EndpointInfo> eps;
  for (size_t i = 0; i < weights.size(); ++i) {
    keys.push_back(std::to_string(i));
    eps.push_back({weights[i], keys.back(), nullptr});
  }
  return make_policy(name, eps);
}

}  // namespace sy::lb
