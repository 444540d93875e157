// Metrics: families, per-service handles and the text exposition (process_* from process_metrics.cc).
#include "proxy/admin/metrics.h"

#include <prometheus/text_serializer.h>

#include <algorithm>
#include <chrono>
#include <sstream>

#include "version.h"

namespace sy::admin {

namespace {

// 100 µs .. 10 s: the range in which a proxy's latency lives.
const prometheus::Histogram::BucketBoundaries& buckets() {
  static const prometheus::Histogram::BucketBoundaries b{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                                         0.025,  0.05,    0.1,    0.25,  0.5,    1,     2.5,
                                                         5,      10};
  return b;
}

}  // namespace

Metrics::Metrics()
    : reg_(std::make_shared<prometheus::Registry>()),
      requests_(prometheus::BuildCounter().Name("switchyard_requests_total").Help("Requests answered to clients, by service, status code and client protocol (http1, h2)").Register(*reg_)),
      grpc_responses_(prometheus::BuildCounter().Name("switchyard_grpc_responses_total").Help("gRPC calls answered to clients, by service and the grpc-status they got (the instance's, or the proxy's own error's)").Register(*reg_)),
      duration_(prometheus::BuildHistogram().Name("switchyard_request_duration_seconds").Help("Time from the first byte of a request to the end of its response").Register(*reg_)),
      upstream_requests_(prometheus::BuildCounter().Name("switchyard_upstream_requests_total").Help("Requests sent to upstream instances, by status code").Register(*reg_)),
      connect_failures_(prometheus::BuildCounter().Name("switchyard_upstream_connect_failures_total").Help("Failed connection attempts to upstream instances").Register(*reg_)),
      upstream_healthy_(prometheus::BuildGauge().Name("switchyard_upstream_healthy").Help("1 when the instance is routable, else 0").Register(*reg_)),
      upstream_active_(prometheus::BuildGauge().Name("switchyard_upstream_active_requests").Help("Requests in flight to the instance").Register(*reg_)),
      retries_(prometheus::BuildCounter().Name("switchyard_retries_total").Help("Retried upstream attempts").Register(*reg_)),
      breaker_open_(prometheus::BuildGauge().Name("switchyard_circuit_breaker_open").Help("1 when the instance's circuit breaker is open").Register(*reg_)),
      ejections_(prometheus::BuildCounter().Name("switchyard_outlier_ejections_total").Help("Outlier ejections of the instance").Register(*reg_)),
      health_checks_(prometheus::BuildCounter().Name("switchyard_health_checks_total").Help("Active health probes by result").Register(*reg_)),
      registry_instances_(prometheus::BuildGauge().Name("switchyard_registry_instances").Help("Registered instances by service and state").Register(*reg_)),
      downstream_connections_(prometheus::BuildGauge().Name("switchyard_downstream_connections").Help("Open client connections").Register(*reg_).Add({})),
      h2_streams_(prometheus::BuildGauge().Name("switchyard_http2_streams_active").Help("Open HTTP/2 streams from clients").Register(*reg_).Add({})),
      worker_connections_(prometheus::BuildCounter().Name("switchyard_worker_connections_total").Help("Client connections accepted, by worker (event-loop thread)").Register(*reg_)),
      backend_up_(prometheus::BuildGauge().Name("switchyard_registry_backend_up").Help("1 when the registry's store answers (always 1 for the embedded registry; etcd: reachable with a quorum)").Register(*reg_).Add({})),
      long_polls_(prometheus::BuildGauge().Name("switchyard_admin_long_polls").Help("Long polls (?index=&wait=) and Consul blocking queries waiting for a change").Register(*reg_).Add({})),
      event_watchers_(prometheus::BuildGauge().Name("switchyard_event_watchers").Help("Readers of the admin event stream (GET /v1/events)").Register(*reg_).Add({})),
      events_encoded_(prometheus::BuildCounter().Name("switchyard_events_encoded_total").Help("Admin events encoded (once each, whatever the number of readers)").Register(*reg_).Add({})),
      backend_errors_(prometheus::BuildCounter().Name("switchyard_registry_backend_errors_total").Help("Failed calls to the registry's store (etcd), and watch streams that broke").Register(*reg_).Add({})),
      sync_lag_(prometheus::BuildHistogram().Name("switchyard_registry_sync_lag_seconds").Help("Shared registry: from a change's write to etcd (by any proxy) to its application here").Register(*reg_).Add(
          {}, prometheus::Histogram::BucketBoundaries{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10})),
      tls_handshakes_(prometheus::BuildCounter().Name("switchyard_tls_handshakes_total").Help("TLS handshakes on a listener, by version and result (ok, resumed, failed)").Register(*reg_)),
      tls_expiry_(prometheus::BuildGauge().Name("switchyard_tls_certificate_expiry_timestamp_seconds").Help("notAfter of each certificate a listener serves (unix seconds)").Register(*reg_)),
      tls_reload_failures_(prometheus::BuildCounter().Name("switchyard_tls_reload_failures_total").Help("Certificate reloads that failed (the old certificates stayed)").Register(*reg_).Add({})),
      upstream_tls_failures_(prometheus::BuildCounter().Name("switchyard_upstream_tls_failures_total").Help("TLS handshakes with instances that failed, by reason").Register(*reg_)),
      h2_goaway_(prometheus::BuildCounter().Name("switchyard_http2_goaway_total").Help("HTTP/2 client connections ended by the proxy's GOAWAY, by reason (flood, protocol_error, header_timeout; shutdown and reload: graceful, streams finish)").Register(*reg_)),
      rate_limited_(prometheus::BuildCounter().Name("switchyard_rate_limited_total").Help("Requests a rate-limit policy refused (mode enforce) or would have refused (dry_run)").Register(*reg_)),
      rate_limit_keys_(prometheus::BuildGauge().Name("switchyard_rate_limit_keys").Help("Distinct keys a rate-limit policy holds buckets for").Register(*reg_)),
      rate_limit_evictions_(prometheus::BuildCounter().Name("switchyard_rate_limit_evictions_total").Help("Keys a rate-limit policy forgot to stay within max_keys (least recently used first)").Register(*reg_)) {
  backend_up_.Set(1);
  auto& exhaustion = prometheus::BuildCounter()
                         .Name("switchyard_resource_exhaustion_total")
                         .Help("Times the proxy ran short of its own resources (fd, connections, memory)")
                         .Register(*reg_);
  for (int i = 0; i < net::kResourceKinds; ++i)
    exhaustion_[i] = &exhaustion.Add({{"resource", net::resource_name(static_cast<net::Resource>(i))}});
  prometheus::BuildGauge().Name("switchyard_build_info").Help("Build information").Register(*reg_).Add({{"version", SWITCHYARD_VERSION}}).Set(1);
}

const Metrics::TlsCounters* Metrics::tls_listener(const std::string& label) {
  std::lock_guard<std::mutex> lock(mu_);
  auto [it, fresh] = tls_listeners_.try_emplace(label);
  TlsCounters& c = it->second;
  if (fresh) {
    const char* versions[2] = {"TLSv1.2", "TLSv1.3"};
    for (int v = 0; v < 2; ++v) {
      c.ok[v] = &tls_handshakes_.Add({{"listener", label}, {"version", versions[v]}, {"result", "ok"}});
      c.resumed[v] = &tls_handshakes_.Add({{"listener", label}, {"version", versions[v]}, {"result", "resumed"}});
    }
    c.failed = &tls_handshakes_.Add({{"listener", label}, {"version", "none"}, {"result", "failed"}});
  }
  return &c;
}

void Metrics::on_tls_handshake(const void* counters, const char* version, bool resumed, bool ok) {
  const auto* c = static_cast<const TlsCounters*>(counters);
  if (!c) return;
  const std::string_view v = version ? version : "";
  const int i = v == "TLSv1.3" ? 1 : v == "TLSv1.2" ? 0 : -1;
  if (!ok || i < 0) c->failed->Increment();
  else (resumed ? c->resumed[i] : c->ok[i])->Increment();
}

void Metrics::on_upstream_tls_failure(std::string_view service, std::string_view instance, std::string_view reason) {
  std::lock_guard<std::mutex> lock(mu_);  // (a failed handshake: rare, never per request)
  upstream_tls_failures_.Add({{"service", std::string(service)}, {"instance", std::string(instance)}, {"reason", std::string(reason)}}).Increment();
}

Metrics::ServiceStats& Metrics::service(std::string_view name) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = services_.find(std::string(name));
  if (it != services_.end()) return it->second;
  ServiceStats& s = services_[std::string(name)];
  s.name = std::string(name);
  s.duration = &duration_.Add({{"service", s.name}}, buckets());
  s.retries = &retries_.Add({{"service", s.name}});
  return s;
}

void Metrics::on_exchange(const http::ExchangeRecord& r) {
  // Handles resolved once per service (ServiceRuntime::stats); a label look-up only for requests
  // that reached no known service (404s), cached too.
  ServiceStats* s = static_cast<ServiceStats*>(r.service_stats);
  if (!s && r.service.empty()) {
    s = none_.load(std::memory_order_acquire);
    if (!s) {
      s = &service("none");
      none_.store(s, std::memory_order_release);
    }
  } else if (!s) {
    s = &service(r.service);
  }
  int code = r.status >= 100 && r.status < 600 ? r.status : 0;
  auto& slot = s->by_code[r.http2 ? 1 : 0][static_cast<size_t>(code)];
  prometheus::Counter* c = slot.load(std::memory_order_acquire);
  if (!c) {
    // Two workers may race here; Family::Add hands both the same counter.
    std::lock_guard<std::mutex> lock(mu_);
    c = &requests_.Add({{"service", s->name}, {"code", std::to_string(code)}, {"protocol", r.http2 ? "h2" : "http1"}});
    slot.store(c, std::memory_order_release);
  }
  c->Increment();
  if (r.grpc && r.grpc_status >= 0 && r.grpc_status < 17) {
    auto& gslot = s->by_grpc_status[static_cast<size_t>(r.grpc_status)];
    prometheus::Counter* g = gslot.load(std::memory_order_acquire);
    if (!g) {
      std::lock_guard<std::mutex> lock(mu_);
      g = &grpc_responses_.Add({{"service", s->name}, {"grpc_status", std::to_string(r.grpc_status)}});
      gslot.store(g, std::memory_order_release);
    }
    g->Increment();
  }
  s->duration->Observe(r.seconds);
  if (r.attempts > 1) s->retries->Increment(r.attempts - 1);
}

void Metrics::on_upstream_response(health::InstanceRuntime* rt, std::string_view service, std::string_view instance,
                                   int status) {
  if (!rt || !rt->metrics.active) return;  // an instance from a test without metrics
  for (auto& slot : rt->metrics.by_code) {
    prometheus::Counter* c = slot.counter.load(std::memory_order_acquire);
    if (!c) break;
    if (slot.code.load(std::memory_order_relaxed) == status) {
      c->Increment();
      return;
    }
  }
  // First time this code is seen for the instance (or the slots are full): create and publish.
  std::lock_guard<std::mutex> lock(mu_);
  auto& c = upstream_requests_.Add({{"service", std::string(service)}, {"instance", std::string(instance)}, {"code", std::to_string(status)}});
  bool held = false;  // this instance already holds a reference to the series
  for (auto& slot : rt->metrics.by_code) {
    prometheus::Counter* have = slot.counter.load(std::memory_order_acquire);
    if (have == &c) {
      held = true;
      break;
    }
    if (!have) {
      slot.code.store(status, std::memory_order_relaxed);
      slot.counter.store(&c, std::memory_order_release);
      ++refs_[&c];
      held = true;
      break;
    }
  }
  auto& ov = rt->metrics.overflow;
  if (!held && std::find(ov.begin(), ov.end(), &c) == ov.end()) {
    ov.push_back(&c);
    ++refs_[&c];
  }
  c.Increment();
}

void Metrics::instance_metrics(health::InstanceMetrics& m, const std::string& service, const std::string& id) {
  const prometheus::Labels l{{"service", service}, {"instance", id}};
  std::lock_guard<std::mutex> lock(mu_);
  m.active = hold(upstream_active_, l);
  m.breaker_open = hold(breaker_open_, l);
  m.ejections = hold(ejections_, l);
  m.connect_failures = hold(connect_failures_, l);
  m.drop = [this](health::InstanceMetrics& x) { drop_instance_metrics(x); };
}

void Metrics::drop_instance_metrics(health::InstanceMetrics& m) {
  // Runs on whichever thread let go of the instance last.
  if (exiting_.load(std::memory_order_acquire)) return;  // the whole registry goes with the process
  std::lock_guard<std::mutex> lock(mu_);
  release(upstream_active_, m.active);
  release(breaker_open_, m.breaker_open);
  release(ejections_, m.ejections);
  release(connect_failures_, m.connect_failures);
  for (auto& slot : m.by_code) release(upstream_requests_, slot.counter.load(std::memory_order_acquire));
  for (auto* c : m.overflow) release(upstream_requests_, c);
}

const std::vector<double>& Metrics::duration_bounds() { return buckets(); }

Metrics::Totals Metrics::service_totals(const std::string& service) {
  Totals t;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = services_.find(service);
  if (it == services_.end()) return t;
  const ServiceStats& s = it->second;
  for (const auto& codes : s.by_code) {
    for (size_t code = 0; code < codes.size(); ++code) {
      const prometheus::Counter* c = codes[code].load(std::memory_order_acquire);
      if (!c) continue;
      const double v = c->Value();
      t.requests += v;
      if (code >= 500) t.errors += v;
    }
  }
  const auto m = s.duration->Collect();
  for (const auto& b : m.histogram.bucket) t.cumulative.push_back(static_cast<double>(b.cumulative_count));
  return t;
}

Metrics::Totals Metrics::instance_totals(const health::InstanceMetrics& m) {
  Totals t;
  std::lock_guard<std::mutex> lock(mu_);  // (the overflow codes are kept under it)
  for (const auto& slot : m.by_code) {
    const int code = slot.code.load(std::memory_order_acquire);
    const prometheus::Counter* c = slot.counter.load(std::memory_order_acquire);
    if (!c) continue;
    const double v = c->Value();
    t.requests += v;
    if (code >= 500) t.errors += v;
  }
  // Codes past the eight slots (rare): requests, their class unknown here.
  for (const auto* c : m.overflow) t.requests += c->Value();
  return t;
}

void Metrics::on_probe(const std::string& service, health::ProbeResult r) {
  const char* result = r == health::ProbeResult::kSuccess ? "success" : r == health::ProbeResult::kTimeout ? "timeout" : "failure";
  health_checks_.Add({{"service", service}, {"result", result}}).Increment();
}

prometheus::Counter* Metrics::worker_connections(int worker) {
  std::lock_guard<std::mutex> lock(mu_);
  return &worker_connections_.Add({{"worker", std::to_string(worker)}});
}

void Metrics::on_connections(int64_t delta) { downstream_connections_.Increment(static_cast<double>(delta)); }

void Metrics::sync_registry(const registry::Registry& reg) {
  for (auto* g : registry_gauges_) registry_instances_.Remove(g);
  registry_gauges_.clear();
  for (auto* g : healthy_gauges_) upstream_healthy_.Remove(g);
  healthy_gauges_.clear();
  for (const auto& [name, svc] : reg.services()) {
    std::map<std::string, int> by_state;
    for (const auto& [id, inst] : svc.instances) {
      by_state[inst.state_name()]++;
      auto& g = upstream_healthy_.Add({{"service", name}, {"instance", id}});
      g.Set(inst.routable() && inst.health == registry::Health::kHealthy ? 1 : 0);
      healthy_gauges_.push_back(&g);
    }
    for (const auto& [state, n] : by_state) {
      auto& g = registry_instances_.Add({{"service", name}, {"state", state}});
      g.Set(n);
      registry_gauges_.push_back(&g);
    }
  }
}

std::string Metrics::render() {
  std::ostringstream out;
  prometheus::TextSerializer ser;
  auto families = reg_->Collect();
  auto process = process_.Collect();
  families.insert(families.end(), std::make_move_iterator(process.begin()), std::make_move_iterator(process.end()));
  ser.Serialize(out, families);
  return out.str();
}

void Metrics::sync_rate_limits(const ratelimit::Limiters* limiters) {
  if (!limiters) return;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [name, l] : limiters->by_name) {
    RateSeen& seen = rate_seen_[name];
    if (seen.limiter != l.get()) seen = RateSeen{l.get(), 0, 0};
    const uint64_t refused = l->refused(), evictions = l->evictions();
    auto& c = rate_limited_.Add({{"policy", name}, {"mode", l->dry_run() ? "dry_run" : "enforce"}});
    if (refused > seen.refused) c.Increment(static_cast<double>(refused - seen.refused));
    auto& e = rate_limit_evictions_.Add({{"policy", name}});
    if (evictions > seen.evictions) e.Increment(static_cast<double>(evictions - seen.evictions));
    rate_limit_keys_.Add({{"policy", name}}).Set(static_cast<double>(l->keys()));
    seen.refused = refused;
    seen.evictions = evictions;
  }
}

}  // namespace sy::admin

