// Live per-instance and per-service state that the request path consults and feeds: requests in
// flight, the circuit breaker, outlier detection, per-service limits and the retry budget.
// Decisions that change routing (eject, breaker open, return) are written to the registry, which
// then publishes a new routing snapshot.
//
// Threading: main loop (workers: 1, where the main loop is the worker). Objects are shared_ptr so a
// routing snapshot still held by an in-flight exchange keeps its runtimes alive after the instance
// leaves; a departed instance's metric handles are cleared first, so its series disappear.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/gauge.h>

#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "health/circuit_breaker.h"
#include "health/outlier.h"
#include "proxy/lb/load.h"
#include "registry/registry.h"

namespace sy::health {

// How one upstream attempt ended.
enum class Outcome { kSuccess, kConnectFailure, kReset, kTimeout, kServerError };
const char* outcome_name(Outcome o);

struct InstanceMetrics {
  prometheus::Gauge* active = nullptr;
  prometheus::Gauge* breaker_open = nullptr;
  prometheus::Counter* ejections = nullptr;
  prometheus::Counter* connect_failures = nullptr;
  // switchyard_upstream_requests_total by status code, resolved the first time a code is seen
  // (a handful per instance; a linear scan beats any map here).
  std::vector<std::pair<int, prometheus::Counter*>> by_code;
};

struct InstanceRuntime {
  uint64_t uid = 0;
  std::string service;
  std::string id;
  lb::LoadStats load;  // requests in flight, latency estimate (read by least_request, ewma)
  CircuitBreaker breaker;
  OutlierDetector outlier;
  InstanceMetrics metrics;
};

struct ServiceRuntime {
  std::string name;
  conf::Service cfg;
  uint32_t active_requests = 0;  // client requests being served (any attempt)
  uint32_t pending = 0;          // requests waiting for an upstream connection
  std::shared_ptr<uint32_t> connections = std::make_shared<uint32_t>(0);  // upstream connections open
  uint32_t active_retries = 0;
  bool panic = false;            // every instance is out; the least-bad ones are used
  void* stats = nullptr;         // the metrics module's per-service handles (resolved once)
};

class Runtime {
 public:
  struct Hooks {
    std::function<int64_t()> now_ms;
    std::function<void(const std::string&)> log;
    // Metric handles for a new instance / forgetting them (the app owns the metric families).
    std::function<InstanceMetrics(const std::string& service, const std::string& id)> make_metrics;
    std::function<void(const InstanceMetrics&)> drop_metrics;
    std::function<void*(const std::string& service)> service_stats;
  };

  Runtime(registry::Registry& reg, Hooks hooks) : reg_(reg), hooks_(std::move(hooks)) {}

  // Matches runtimes to the registry's instances (after membership changes).
  void sync();
  std::shared_ptr<InstanceRuntime> instance(uint64_t uid) const;
  std::shared_ptr<ServiceRuntime> service(const std::string& name) const;

  // An attempt ended. Feeds the breaker and outlier detection; may eject the instance or open its
  // breaker (both written to the registry).
  void record(InstanceRuntime& rt, Outcome o);
  // Periodic: ejections and open breakers whose time is up return to routing.
  void tick();
  // An active health check found the instance healthy again: passive ejection ends too (as in
  // Envoy's successful_active_health_check_uneject_host).
  void on_probed_healthy(uint64_t uid);

  // The retry budget: may one more retry start now? (budget_percent of active requests, with a
  // floor of 3, and circuit_breaker.max_retries concurrent retries.)
  static bool retry_allowed(const ServiceRuntime& s);

 private:
  registry::Registry& reg_;
  Hooks hooks_;
  std::unordered_map<uint64_t, std::shared_ptr<InstanceRuntime>> instances_;
  std::unordered_map<std::string, std::shared_ptr<ServiceRuntime>> services_;
};

}  // namespace sy::health
