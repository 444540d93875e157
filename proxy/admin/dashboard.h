// The dashboard's reads (docs/admin-api.md, "Dashboard"): GET /v1/dashboard (services with their
// traffic over the last minute, routes, banners) and GET /v1/dashboard/services/{service} (one
// page of a service's instances, filtered and sorted here so the page's requests stay small with
// 10,000 instances). The page itself (proxy/admin/ui/) is served by ui_files.cc.
//
// Rates and quantiles come from the proxy's own counters and histograms (Metrics::Totals), read
// every kSampleMs into a window of about a minute — only for what the dashboard has looked at in
// the last kWatchedMs, so an unwatched proxy does no work for it and a watched one does work in
// proportion to what is on screen, never to the registry.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_map>
#include <vector>

#include "proxy/admin/admin_conn.h"
#include "proxy/admin/endpoints.h"
#include "proxy/admin/metrics.h"
#include "registry/registry.h"

namespace sy::admin {

// Two readings of cumulative totals → rates and quantiles between them.
class TrafficWindow {
 public:
  static constexpr int64_t kSampleMs = 5000;
  static constexpr int64_t kSpanMs = 60000;
  struct Sample {
    int64_t t_ms = 0;
    Metrics::Totals totals;
  };
  // Keeps one sample per kSampleMs, none older than kSpanMs (+ one sample's spacing).
  void add(int64_t now_ms, Metrics::Totals totals);
  // null when there is no earlier reading yet: {req_s, err5xx_s, p50_ms, p99_ms, window_s}.
  nlohmann::json rates(int64_t now_ms, const Metrics::Totals& now) const;
  int64_t last_ms() const { return samples_.empty() ? 0 : samples_.back().t_ms; }

  // Prometheus's histogram_quantile over bucket deltas (linear within a bucket); -1: no requests.
  static double quantile(double q, const std::vector<double>& bounds, const std::vector<double>& delta);

 private:
  std::deque<Sample> samples_;
};

// The "why" of an instance: the sentence GET /v1/services/{s}/instances/{id} and the dashboard show.
std::string instance_why(const registry::Instance& inst, int64_t now_ms);

class Dashboard {
 public:
  struct Hooks {
    std::function<int64_t()> now_ms;
    std::function<nlohmann::json(const registry::Instance&)> instance_json;  // the instance view
    std::function<const health::InstanceMetrics*(uint64_t uid, uint32_t& active)> instance_runtime;
    std::function<nlohmann::json()> status;  // banners and registry status (App)
    std::function<const conf::Config&()> config;
    std::function<uint64_t()> events_last_id;
    std::function<bool()> token_required;
  };
  Dashboard(registry::Registry& reg, Metrics& metrics, Hooks hooks) : reg_(reg), metrics_(metrics), hooks_(std::move(hooks)) {}
  void add_endpoints(EndpointTable& table, size_t family,
                     const std::function<AdminResponse(int, const std::string&, const std::string&)>& error);
  // Periodic: readings of what was looked at recently.
  void tick(int64_t now_ms);

 private:
  AdminResponse overview();
  AdminResponse instances(const std::string& service, const AdminRequest& req,
                          const std::function<AdminResponse(int, const std::string&, const std::string&)>& error);
  Metrics::Totals instance_totals(uint64_t uid, uint32_t& active);

  registry::Registry& reg_;
  Metrics& metrics_;
  Hooks hooks_;
  int64_t overview_read_ms_ = -1;  // when GET /v1/dashboard was last read (-1: never)
  std::unordered_map<std::string, TrafficWindow> services_;
  struct Watched {
    int64_t read_ms = 0;
    std::unordered_map<uint64_t, TrafficWindow> instances;  // by uid
  };
  std::unordered_map<std::string, Watched> watched_;  // services whose instances were read
};

}  // namespace sy::admin
