// Weighted power of two choices.
#include "proxy/lb/least_request.h"

#include "proxy/lb/two_choices.h"

namespace sy::lb {

LeastRequest::LeastRequest(const std::vector<EndpointInfo>& endpoints) {
  for (const auto& e : endpoints) {
    weight_.push_back(e.weight);
    load_.push_back(e.load);
  }
}

int LeastRequest::pick(const PickContext& ctx) const {
  return two_choices(weight_.size(), ctx, [&](size_t i) {
    const double active = load_[i] ? static_cast<double>(load_[i]->in_flight()) : 0.0;
    return (active + 1) / static_cast<double>(weight_[i]);
  });
}

}  // namespace sy::lb
