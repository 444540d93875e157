// Weighted random.
#include "proxy/lb/random.h"

#include <algorithm>

namespace sy::lb {

Random::Random(const std::vector<uint32_t>& weights) {
  uint64_t sum = 0;
  for (auto w : weights) prefix_.push_back(sum += w);
}

int Random::pick(const PickContext& ctx) const {
  if (uniform_n_ > 0) {
    uint64_t r = ctx.random;
    for (int tries = 0; tries < 4; ++tries) {
      const size_t i = static_cast<size_t>(r % uniform_n_);
      if (!ctx.excluded(i)) return static_cast<int>(i);
      r = mix64(r + 0x9e3779b97f4a7c15ull);  // a retry: draw again
    }
    for (size_t i = 0; i < uniform_n_; ++i)
      if (!ctx.excluded(i)) return static_cast<int>(i);
    return static_cast<int>(r % uniform_n_);
  }
  if (prefix_.empty()) return -1;
  uint64_t r = ctx.random;
  for (int tries = 0; tries < 4; ++tries) {
    uint64_t target = r % prefix_.back();
    size_t i = static_cast<size_t>(std::upper_bound(prefix_.begin(), prefix_.end(), target) - prefix_.begin());
    if (!ctx.excluded(i)) return static_cast<int>(i);
    r = mix64(r + 0x9e3779b97f4a7c15ull);  // a retry: draw again
  }
  for (size_t i = 0; i < prefix_.size(); ++i)
    if (!ctx.excluded(i)) return static_cast<int>(i);
  return static_cast<int>(r % prefix_.size());
}

}  // namespace sy::lb
