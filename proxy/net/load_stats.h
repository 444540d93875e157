// Live load of one endpoint: requests in flight and a peak-EWMA latency estimate. Written by the
// request path (every worker thread, for the same instance), read by the load-aware policies
// (proxy/lb: least_request, ewma) and held in the instance's runtime (health/runtime.h); it lives
// here, below both, so neither layer includes the other for it. Relaxed atomics: `active` is
// exact; the latency estimate may lose an update when two workers observe at the same instant,
// which a decaying average shrugs off.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>

namespace sy::net {

struct LoadStats {
  std::atomic<uint32_t> active{0};    // requests in flight
  std::atomic<double> ewma_ns{0};     // peak-EWMA of response latency
  std::atomic<int64_t> stamp_ns{0};   // when ewma_ns was last updated

  static constexpr double kDecayNs = 10e9;  // Finagle's and Linkerd's default decay time (10 s)

  // Records a response latency: peaks are taken at once, recovery decays over kDecayNs.
  void observe(int64_t now_ns, double rtt_ns) {
    const double td = static_cast<double>(std::max<int64_t>(0, now_ns - stamp_ns.load(std::memory_order_relaxed)));
    const double w = std::exp(-td / kDecayNs);
    const double prev = ewma_ns.load(std::memory_order_relaxed);
    stamp_ns.store(now_ns, std::memory_order_relaxed);
    ewma_ns.store(rtt_ns > prev ? rtt_ns : prev * w + rtt_ns * (1 - w), std::memory_order_relaxed);
  }
  uint32_t in_flight() const { return active.load(std::memory_order_relaxed); }
  bool measured() const { return stamp_ns.load(std::memory_order_relaxed) != 0; }
  // The latency estimate now: an idle endpoint's cost decays, so a recovered one wins traffic back.
  double cost(int64_t now_ns) const {
    const double td = static_cast<double>(std::max<int64_t>(0, now_ns - stamp_ns.load(std::memory_order_relaxed)));
    return ewma_ns.load(std::memory_order_relaxed) * std::exp(-td / kDecayNs);
  }
};

}  // namespace sy::net
