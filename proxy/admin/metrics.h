// Prometheus metrics (README.md, "Metrics", lists them) on prometheus-cpp's core library; /metrics is served
// by the admin listener on our own loop. Per-service handles are resolved once per service and
// per status code, not looked up by label on every request.
//
// Threading: every worker reports exchanges here. Counters, gauges and histograms are
// prometheus-cpp atomics; handles are created at most once per label set under `mu_` (a slow
// path: a service's or status code's first request) and published through atomic slots, so the
// request path takes no lock. Registry gauges and rendering run on the main loop.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <array>
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "health/health_checker.h"
#include "proxy/admin/process_metrics.h"
#include "health/runtime.h"
#include "proxy/http/exchange_record.h"
#include "proxy/net/resource.h"
#include "proxy/ratelimit/limiter.h"
#include "registry/registry.h"

namespace sy::admin {

// Not an exchange observer itself: the wiring (App's per-worker reporter) is the one observer and
// hands each record here and to the access log.
class Metrics final {
 public:
  Metrics();
  void on_exchange(const http::ExchangeRecord& r);
  void on_connections(int64_t delta);
  void on_h2_streams(int64_t delta) { h2_streams_.Increment(static_cast<double>(delta)); }
  // switchyard_resource_exhaustion_total{resource} (the logging is the caller's).
  void on_exhaustion(net::Resource r, std::string_view) { exhaustion_[static_cast<int>(r)]->Increment(); }
  void on_upstream_response(health::InstanceRuntime* rt, std::string_view service, std::string_view instance,
                            int status);
  // Per-service handles for ServiceRuntime::stats (stable address; never freed while we live).
  void* service_stats(const std::string& service) { return &this->service(service); }
  // Per-instance handles, resolved once when the instance appears; dropped when it leaves (its
  // series disappear).
  void instance_metrics(health::InstanceMetrics& m, const std::string& service, const std::string& id);
  void on_probe(const std::string& service, health::ProbeResult r);
  // The process is exiting: series are no longer removed one by one as instances go (prometheus-cpp's
  // Family::Remove is a linear search, so removing 100,000 series took minutes at shutdown).
  void stop_removing() { exiting_.store(true, std::memory_order_release); }
  // switchyard_worker_connections_total{worker}: how the kernel spread connections over workers.
  prometheus::Counter* worker_connections(int worker);
  // Registry-derived gauges (instances by state, healthy per instance); called after changes.
  void sync_registry(const registry::Registry& reg);
  std::string render();

  // The registry's store (main loop): 1/0, errors talking to it, and how long a change written
  // through any proxy took to be applied here (write to watch event, wall clock).
  void set_backend_up(bool up) { backend_up_.Set(up ? 1 : 0); }
  // Long polls and Consul blocking queries parked on the admin listener (set per scrape).
  void set_long_polls(size_t n) { long_polls_.Set(static_cast<double>(n)); }
  // GET /v1/events readers, and events encoded since start (set per scrape).
  void set_events(size_t watchers, uint64_t encoded) {
    event_watchers_.Set(static_cast<double>(watchers));
    events_encoded_.Increment(static_cast<double>(encoded) - events_encoded_.Value());
  }
  void on_backend_error() { backend_errors_.Increment(); }
  // Per scrape: the rate-limit policies' counters, read from the limiters (the request path
  // counts in the limiter's own atomics, never through a label look-up).
  void sync_rate_limits(const ratelimit::Limiters* limiters);

  // TLS (README.md, "TLS"). Handshake counters of one listener, made once (TlsServerConfig::stats
  // points here; workers count through it without a look-up).
  struct TlsCounters {
    // [0] TLSv1.2, [1] TLSv1.3, by result ok / resumed; a failed handshake has agreed on no
    // version (version="none").
    prometheus::Counter* ok[2] = {};
    prometheus::Counter* resumed[2] = {};
    prometheus::Counter* failed = nullptr;
  };
  const TlsCounters* tls_listener(const std::string& label);
  static void on_tls_handshake(const void* counters, const char* version, bool resumed, bool ok);
  void set_certificate_expiry(const std::string& listener, const std::string& name, int64_t not_after) {
    tls_expiry_.Add({{"listener", listener}, {"name", name}}).Set(static_cast<double>(not_after));
  }
  void on_tls_reload_failure() { tls_reload_failures_.Increment(); }
  // (A connection ended for misbehaving: rare, never per request.)
  void on_h2_goaway(std::string_view reason) {
    std::lock_guard<std::mutex> lock(mu_);
    h2_goaway_.Add({{"reason", std::string(reason)}}).Increment();
  }
  void on_upstream_tls_failure(std::string_view service, std::string_view instance, std::string_view reason);
  void on_sync_lag(double seconds) { sync_lag_.Observe(seconds); }

  // Cumulative traffic of a service or an instance, read from the same counters /metrics shows
  // (the dashboard turns two readings into rates and quantiles: dashboard.h).
  struct Totals {
    double requests = 0;
    double errors = 0;               // 5xx answers
    std::vector<double> cumulative;  // per duration bucket (duration_bounds()), +Inf last; services only
  };
  Totals service_totals(const std::string& service);
  Totals instance_totals(const health::InstanceMetrics& m);
  static const std::vector<double>& duration_bounds();

 private:
  struct ServiceStats {
    std::string name;
    prometheus::Histogram* duration = nullptr;
    prometheus::Counter* retries = nullptr;
    // switchyard_requests_total{protocol, code}: [0] http1, [1] h2.
    std::array<std::array<std::atomic<prometheus::Counter*>, 600>, 2> by_code{};
    // switchyard_grpc_responses_total{grpc_status}: 0..16.
    std::array<std::atomic<prometheus::Counter*>, 17> by_grpc_status{};
  };
  ServiceStats& service(std::string_view name);
  void drop_instance_metrics(health::InstanceMetrics& m);
  // Per-instance series are shared when an instance id leaves and comes back while the old
  // runtime is still held (same labels → prometheus-cpp returns the same metric): counted, and
  // removed with the last holder. Under mu_.
  template <typename T>
  T* hold(prometheus::Family<T>& f, const prometheus::Labels& l) {
    T* m = &f.Add(l);
    ++refs_[m];
    return m;
  }
  template <typename T>
  void release(prometheus::Family<T>& f, T* m) {
    if (!m) return;
    auto it = refs_.find(m);
    if (it == refs_.end() || --it->second > 0) return;
    refs_.erase(it);
    f.Remove(m);
  }

  std::mutex mu_;  // creation of handles and the maps below; never held while counting
  std::shared_ptr<prometheus::Registry> reg_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Counter>& grpc_responses_;
  prometheus::Family<prometheus::Histogram>& duration_;
  prometheus::Family<prometheus::Counter>& upstream_requests_;
  prometheus::Family<prometheus::Counter>& connect_failures_;
  prometheus::Family<prometheus::Gauge>& upstream_healthy_;
  prometheus::Family<prometheus::Gauge>& upstream_active_;
  prometheus::Family<prometheus::Counter>& retries_;
  prometheus::Family<prometheus::Gauge>& breaker_open_;
  prometheus::Family<prometheus::Counter>& ejections_;
  prometheus::Family<prometheus::Counter>& health_checks_;
  prometheus::Family<prometheus::Gauge>& registry_instances_;
  prometheus::Gauge& downstream_connections_;
  prometheus::Gauge& h2_streams_;
  prometheus::Family<prometheus::Counter>& worker_connections_;
  prometheus::Gauge& backend_up_;
  prometheus::Gauge& long_polls_;
  prometheus::Gauge& event_watchers_;
  prometheus::Counter& events_encoded_;
  prometheus::Counter& backend_errors_;
  prometheus::Histogram& sync_lag_;
  prometheus::Counter* exhaustion_[net::kResourceKinds] = {};
  prometheus::Family<prometheus::Counter>& tls_handshakes_;
  prometheus::Family<prometheus::Gauge>& tls_expiry_;
  prometheus::Counter& tls_reload_failures_;
  prometheus::Family<prometheus::Counter>& upstream_tls_failures_;
  prometheus::Family<prometheus::Counter>& h2_goaway_;
  std::unordered_map<std::string, TlsCounters> tls_listeners_;  // under mu_
  prometheus::Family<prometheus::Counter>& rate_limited_;
  prometheus::Family<prometheus::Gauge>& rate_limit_keys_;
  prometheus::Family<prometheus::Counter>& rate_limit_evictions_;
  struct RateSeen {
    const ratelimit::Limiter* limiter = nullptr;  // counts restart when a reload makes a new one
    uint64_t refused = 0, evictions = 0;
  };
  std::unordered_map<std::string, RateSeen> rate_seen_;  // under mu_
  std::unordered_map<std::string, ServiceStats> services_;
  std::unordered_map<const void*, int> refs_;
  std::atomic<ServiceStats*> none_{nullptr};
  std::atomic<bool> exiting_{false};
  std::vector<prometheus::Gauge*> registry_gauges_;
  std::vector<prometheus::Gauge*> healthy_gauges_;
  ProcessMetrics process_;
};

}  // namespace sy::admin
