// Zone-aware routing decisions (see zone_aware.h).
#include "proxy/lb/zone_aware.h"

#include <algorithm>

#include "proxy/lb/load.h"

namespace sy::lb {

double zone_local_share(size_t local_count, size_t chosen_count, double local_up, double local_total) {
  constexpr double kEnough = 0.7;
  if (local_count == 0) return 0.0;
  if (local_count == chosen_count) return 1.0;
  const double h = local_total > 0 ? local_up / local_total : 0;
  return std::min(1.0, h / kEnough);
}

bool zone_spills(double local_share, uint64_t random) {
  if (local_share >= 1.0) return false;
  return static_cast<double>(mix64(random) >> 11) * 0x1.0p-53 >= local_share;
}

}  // namespace sy::lb
