// Weighted power of two choices.
#include "proxy/lb/least_request.h"

#include "proxy/lb/two_choices.h"

namespace sy::lb {

int LeastRequest::pick(const PickContext& ctx) const {
  return two_choices(src_->size(), ctx, [&](size_t i) {
    const LoadStats* load = src_->load(i);
    const double active = load ? static_cast<double>(load->in_flight()) : 0.0;
    return (active + 1) / static_cast<double>(src_->weight(i));
  });
}

}  // namespace sy::lb
