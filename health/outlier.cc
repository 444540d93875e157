// OutlierDetector.
#include "health/outlier.h"

#include <algorithm>

namespace sy::health {

bool OutlierDetector::on_failure() {
  ++failures_;
  return !ejected_ && failures_ >= threshold_;
}

void OutlierDetector::eject(int64_t now_ms, const conf::OutlierDetection& cfg) {
  ++ejections_;
  const int64_t base = cfg.base_ejection_time.count();
  until_ms_ = now_ms + std::min<int64_t>(base * ejections_, base * 10);
  ejected_ = true;
  failures_ = 0;
}

bool OutlierDetector::maybe_return(int64_t now_ms) {
  if (!ejected_ || now_ms < until_ms_) return false;
  ejected_ = false;
  return true;
}

}  // namespace sy::health
