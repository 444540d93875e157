// process_* metrics as the Prometheus client libraries define them (CPU, resident memory, open and
// maximum fds, start time), read from /proc when scraped, as a prometheus-cpp Collectable.
#pragma once

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include <vector>

namespace sy::admin {

class ProcessMetrics final : public prometheus::Collectable {
 public:
  ProcessMetrics();
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  double start_time_;  // seconds since the epoch
};

}  // namespace sy::admin
