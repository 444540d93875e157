// Passive health (outlier detection) for one instance: `consecutive_failures` failures in a row
// eject it for base_ejection_time × (number of ejections so far), capped at 10 × base; it comes
// back by itself when the time is up. The cap on how much of a service may be ejected at once
// (max_ejection_percent) is the caller's (health/runtime.cc), which sees the whole service.
// A pure state machine; time is passed in.
#pragma once

#include <cstdint>

#include "conf/config.h"

namespace sy::health {

class OutlierDetector {
 public:
  // Records a request outcome. Returns true when this failure crosses the threshold (the caller
  // then decides whether the ejection is allowed and calls eject()).
  bool on_failure();
  void on_success() { failures_ = 0; }
  void eject(int64_t now_ms, const conf::OutlierDetection& cfg);
  // True once when the ejection time has passed (the instance returns).
  bool maybe_return(int64_t now_ms);
  void end_ejection() { ejected_ = false; failures_ = 0; }

  bool ejected() const { return ejected_; }
  int64_t ejected_until_ms() const { return until_ms_; }
  uint32_t ejections() const { return ejections_; }
  uint32_t consecutive_failures() const { return failures_; }
  void set_threshold(uint32_t n) { threshold_ = n; }

 private:
  uint32_t threshold_ = 5;
  uint32_t failures_ = 0;
  uint32_t ejections_ = 0;
  bool ejected_ = false;
  int64_t until_ms_ = 0;
};

}  // namespace sy::health
