// Peak-EWMA with power of two choices.
#include "proxy/lb/ewma.h"

#include "proxy/lb/two_choices.h"

namespace sy::lb {

int Ewma::pick(const PickContext& ctx) const {
  return two_choices(src_->size(), ctx, [&](size_t i) {
    const LoadStats* load = src_->load(i);
    if (!load) return 0.0;
    // An endpoint with no sample yet costs nothing, so it gets tried (and measured) at once.
    const double lat = load->measured() ? load->cost(ctx.now_ns) : 0.0;
    return (lat + 1) * (load->in_flight() + 1) / static_cast<double>(src_->weight(i));
  });
}

}  // namespace sy::lb
