// Live per-instance and per-service state that the request path consults and feeds: requests in
// flight, the circuit breaker, outlier detection, per-service limits and the retry budget.
// Decisions that change routing (eject, breaker open, return) are written to the registry, which
// then publishes a new routing snapshot.
//
// Threading: the Runtime object itself (sync, record, tick) lives on the main loop. Workers reach
// InstanceRuntime/ServiceRuntime through routing snapshots and touch only their atomics (load
// stats, breaker trials, limit counters, metric handles); outcomes travel to the main loop in
// batches (server::Worker) and are applied there by record(). Objects are shared_ptr so a snapshot
// still held by an in-flight exchange keeps its runtimes alive after the instance leaves; the
// instance's metric series are removed when the last holder lets go (InstanceMetrics::drop).
#pragma once

#include <prometheus/counter.h>
#include <prometheus/gauge.h>

#include <array>
#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "health/circuit_breaker.h"
#include "health/outlier.h"
#include "proxy/net/load_stats.h"
#include "registry/registry.h"

namespace sy::health {

// How one upstream attempt ended. Whether it counts as the instance failing is decided by the
// service's circuit_breaker.on and outlier_detection.on (conf::Conditions), on the main loop.
struct Outcome {
  enum Kind : uint8_t {
    kSuccess,         // a response that neither `on` list names
    kConnectFailure,
    kReset,
    kTimeout,
    kStatus,          // a response whose status some `on` list names (e.g. 503)
    kGrpcStatus,      // a gRPC response whose grpc-status some `on` list names (e.g. 14 unavailable)
    kNeutral,         // not judged (the proxy's own limits or shortage): frees a half-open trial only
  };
  Kind kind = kSuccess;
  uint16_t status = 0;  // kStatus: the response's status; kGrpcStatus: its grpc-status
  constexpr Outcome(Kind k, int st = 0) : kind(k), status(static_cast<uint16_t>(st)) {}  // NOLINT: implicit on purpose
  constexpr bool operator==(Kind k) const { return kind == k; }
  // Is this a failure by the conditions `on`?
  bool fails(const conf::Conditions& on) const;
};
std::string outcome_name(Outcome o);

struct InstanceMetrics {
  InstanceMetrics() = default;
  InstanceMetrics(const InstanceMetrics&) = delete;
  InstanceMetrics& operator=(const InstanceMetrics&) = delete;
  ~InstanceMetrics() {
    if (drop) drop(*this);
  }
  prometheus::Gauge* active = nullptr;
  prometheus::Gauge* breaker_open = nullptr;
  prometheus::Counter* ejections = nullptr;
  prometheus::Counter* connect_failures = nullptr;
  // switchyard_upstream_requests_total by status code, resolved the first time a code is seen by
  // any worker (a handful per instance; a linear scan beats any map here). A slot is published by
  // storing `counter` after `code`; codes beyond the slots are looked up by label (rare).
  struct CodeSlot {
    std::atomic<int> code{0};
    std::atomic<prometheus::Counter*> counter{nullptr};
  };
  std::array<CodeSlot, 8> by_code;
  std::vector<prometheus::Counter*> overflow;  // further codes; only under the metrics module's lock
  // Removes the series from the exposition; runs when the instance's runtime is destroyed, that is
  // after the last snapshot and exchange using it let go (so no worker can touch a freed metric).
  std::function<void(InstanceMetrics&)> drop;
};

struct InstanceRuntime {
  uint64_t uid = 0;
  std::string service;
  std::string id;
  net::LoadStats load;  // requests in flight, latency estimate (read by least_request, ewma)
  CircuitBreaker breaker;
  OutlierDetector outlier;  // main loop only
  // Set by the main loop while a success would change something (a failure streak, a breaker
  // not closed): workers report successes only then, so a healthy instance costs no messages.
  std::atomic<bool> wants_successes{false};
  InstanceMetrics metrics;
};

// Limits and the retry budget of one service, counted across all workers (relaxed atomics: a
// limit may be overshot by the number of workers racing for its last slot, as in Envoy).
struct ServiceRuntime {
  std::string name;
  conf::Service cfg;  // main loop only: workers read the snapshot's copy (Upstreams::cfg)
  std::atomic<uint32_t> active_requests{0};  // client requests being served (any attempt)
  std::atomic<uint32_t> pending{0};          // requests waiting for an upstream connection
  std::shared_ptr<std::atomic<uint32_t>> connections = std::make_shared<std::atomic<uint32_t>>(0);  // upstream connections open
  std::atomic<uint32_t> active_retries{0};
  bool panic = false;            // main loop only: every instance is out; the least-bad ones are used
  void* stats = nullptr;         // the metrics module's per-service handles (resolved once)
};

class Runtime {
 public:
  struct Hooks {
    std::function<int64_t()> now_ms;
    std::function<void(const std::string&)> log;
    // Metric handles for a new instance / forgetting them (the app owns the metric families).
    std::function<void(InstanceMetrics&, const std::string& service, const std::string& id)> make_metrics;
    std::function<void*(const std::string& service)> service_stats;
  };

  Runtime(registry::Registry& reg, Hooks hooks) : reg_(reg), hooks_(std::move(hooks)) {}

  // Matches runtimes to the registry's instances (after membership changes): of the instances in
  // `dirty` only (their services' settings when those changed too), or of all with nullptr /
  // dirty->all.
  void sync(const registry::Registry::Dirty* dirty = nullptr);
  std::shared_ptr<InstanceRuntime> instance(uint64_t uid) const;
  std::shared_ptr<ServiceRuntime> service(const std::string& name) const;
  // The endpoints (uids) that left the registry, or got a new uid, since the last call: what
  // workers close idle pooled connections to, without walking the snapshot.
  std::vector<uint64_t> take_gone_uids() { return std::exchange(gone_uids_, {}); }

  // An attempt ended. Feeds the breaker and outlier detection; may eject the instance or open its
  // breaker (both written to the registry).
  void record(InstanceRuntime& rt, Outcome o);
  // A worker's batch of outcomes, in the order they happened.
  using Report = std::pair<std::shared_ptr<InstanceRuntime>, Outcome>;
  void record_all(const std::vector<Report>& batch) {
    for (const auto& [rt, o] : batch) record(*rt, o);
  }
  // Before a scrape: gauges that mirror live counters (requests in flight per instance) are set
  // from them, so the request path updates one counter, not two.
  void export_gauges();
  // Periodic: ejections and open breakers whose time is up return to routing.
  void tick();
  // An active health check found the instance healthy again: passive ejection ends too (as in
  // Envoy's successful_active_health_check_uneject_host).
  void on_probed_healthy(uint64_t uid);

  // The retry budget: may one more retry start now? (budget_percent of active requests, with a
  // floor of 3, and circuit_breaker.max_retries concurrent retries.) `cfg` is the snapshot's.
  static bool retry_allowed(const ServiceRuntime& s, const conf::Service& cfg);

 private:
  void record_one(InstanceRuntime& rt, Outcome o);
  void sync_service(const std::string& name, const registry::Service* svc);
  // One instance of a service whose runtime exists: created, replaced (new uid) or dropped.
  void sync_instance(const std::string& name, const registry::Service& svc, const std::string& id);
  InstanceRuntime& ensure_instance(const ServiceRuntime& srt, const registry::Instance& inst);
  // How many of the service's instances are out of routing (ejected or breaker open).
  size_t out_of_routing(const std::string& service, size_t& total) const;
  // May one more instance of `service` go out of routing (max_ejection_percent)?
  bool may_take_out(const std::string& service, const ServiceRuntime& srt) const;
  registry::Registry& reg_;
  Hooks hooks_;
  std::unordered_map<uint64_t, std::shared_ptr<InstanceRuntime>> instances_;
  std::unordered_map<std::string, std::shared_ptr<ServiceRuntime>> services_;
  // Instance runtimes per service: id → uid (an id's uid changes with its address).
  std::unordered_map<std::string, std::unordered_map<std::string, uint64_t>> ids_;
  std::vector<std::string> departed_;
  std::vector<uint64_t> gone_uids_;
  // Instances with a clock running (ejected, or breaker open): all tick() has to look at.
  std::unordered_set<uint64_t> timed_;  // services gone from the registry whose runtime a snapshot still held
};

}  // namespace sy::health
