// The power-of-two-choices step shared by least_request and ewma: two distinct random candidates
// (skipping ones a retry already tried), the cheaper wins. O(1).
#pragma once

#include <cstddef>

#include "proxy/lb/policy.h"

namespace sy::lb {

template <typename Cost>
int two_choices(size_t n, const PickContext& ctx, Cost cost) {
  if (n == 0) return -1;
  if (n == 1) return 0;
  uint64_t r = ctx.random;
  size_t a = static_cast<size_t>(r % n);
  size_t b = static_cast<size_t>((r >> 32) % (n - 1));
  if (b >= a) ++b;  // distinct from a
  // A retry avoids tried endpoints when it can: walk on to untried ones.
  for (size_t k = 0; k < n && ctx.excluded(a); ++k) a = (a + 1) % n;
  for (size_t k = 0; k < n && (ctx.excluded(b) || b == a); ++k) b = (b + 1) % n;
  if (ctx.excluded(a) && !ctx.excluded(b)) return static_cast<int>(b);
  if (b == a || ctx.excluded(b)) return static_cast<int>(a);
  return static_cast<int>(cost(b) < cost(a) ? b : a);
}

}  // namespace sy::lb
