// Passive outlier detection: ejection and its growing, capped duration.
#include <doctest.h>

#include "health/outlier.h"

using namespace sy;

TEST_CASE("ejection time grows with each ejection, capped at 10x base, and ends by itself") {
  conf::OutlierDetection cfg;
  cfg.consecutive_failures = 2;
  cfg.base_ejection_time = conf::Millis(100);
  health::OutlierDetector d;
  d.set_threshold(2);
  CHECK_FALSE(d.on_failure());
  d.on_success();
  CHECK_FALSE(d.on_failure());
  CHECK(d.on_failure());
  d.eject(0, cfg);
  CHECK(d.ejected());
  CHECK(d.ejected_until_ms() == 100);
  CHECK_FALSE(d.maybe_return(99));
  CHECK(d.maybe_return(100));
  CHECK_FALSE(d.ejected());
  d.on_failure();
  d.on_failure();
  d.eject(1000, cfg);
  CHECK(d.ejected_until_ms() == 1200);  // second ejection: 2 × base
  for (int i = 0; i < 20; ++i) d.eject(0, cfg);
  CHECK(d.ejected_until_ms() == 1000);  // capped at 10 × base
}
