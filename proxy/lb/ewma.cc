// Peak-EWMA with power of two choices.
#include "proxy/lb/ewma.h"

#include "proxy/lb/two_choices.h"

namespace sy::lb {

Ewma::Ewma(const std::vector<EndpointInfo>& endpoints) {
  for (const auto& e : endpoints) {
    weight_.push_back(e.weight);
    load_.push_back(e.load);
  }
}

int Ewma::pick(const PickContext& ctx) const {
  return two_choices(weight_.size(), ctx, [&](size_t i) {
    if (!load_[i]) return 0.0;
    // An endpoint with no sample yet costs nothing, so it gets tried (and measured) at once.
    const double lat = load_[i]->measured() ? load_[i]->cost(ctx.now_ns) : 0.0;
    return (lat + 1) * (load_[i]->in_flight() + 1) / static_cast<double>(weight_[i]);
  });
}

}  // namespace sy::lb
