// Runtime: live counters, breaker and outlier decisions.
#include "health/runtime.h"

#include <algorithm>
#include <unordered_set>

namespace sy::health {

std::string outcome_name(Outcome o) {
  switch (o.kind) {
    case Outcome::kSuccess: return "success";
    case Outcome::kConnectFailure: return "connect-failure";
    case Outcome::kReset: return "reset";
    case Outcome::kTimeout: return "timeout";
    case Outcome::kStatus: return "HTTP " + std::to_string(o.status);
    case Outcome::kGrpcStatus: return "grpc-status " + std::to_string(o.status);
    case Outcome::kNeutral: return "not judged";
  }
  return "?";
}

bool Outcome::fails(const conf::Conditions& on) const {
  switch (kind) {
    case kConnectFailure: return on.connect_failure;
    case kReset: return on.reset;
    case kTimeout: return on.timeout;
    case kStatus: return on.has_status(status);
    case kGrpcStatus: return on.has_grpc(status);
    default: return false;
  }
}

void Runtime::sync(const registry::Registry::Dirty* dirty) {
  // Departed services' runtimes go once no snapshot holds them (the last one has been replaced).
  std::erase_if(departed_, [&](const std::string& name) {
    auto it = services_.find(name);
    if (it == services_.end() || reg_.services().count(name)) return true;
    if (it->second.use_count() > 1) return false;
    services_.erase(it);
    return true;
  });
  if (dirty && !dirty->all) {
    for (const auto& name : dirty->services) {
      auto it = reg_.services().find(name);
      const registry::Service* svc = it == reg_.services().end() ? nullptr : &it->second;
      // The changed instances only, unless the service's own settings may have changed (or it is
      // gone): the cost follows what changed, not the size of the service.
      if (svc && !dirty->whole_service(name) && services_.count(name)) {
        for (const auto& id : dirty->ids(name)) sync_instance(name, *svc, id);
      } else {
        sync_service(name, svc);
      }
    }
    return;
  }
  for (const auto& [name, svc] : reg_.services()) sync_service(name, &svc);
  std::vector<std::string> gone;
  for (const auto& [name, srt] : services_)
    if (!reg_.services().count(name)) gone.push_back(name);
  for (const auto& [name, ids] : ids_)
    if (!reg_.services().count(name) && !services_.count(name)) gone.push_back(name);
  for (const auto& name : gone) sync_service(name, nullptr);
}

InstanceRuntime& Runtime::ensure_instance(const ServiceRuntime& srt, const registry::Instance& inst) {
  auto& rt = instances_[inst.uid];
  if (!rt) {
    rt = std::make_shared<InstanceRuntime>();
    rt->uid = inst.uid;
    rt->service = srt.name;
    rt->id = inst.id;
    if (hooks_.make_metrics) hooks_.make_metrics(rt->metrics, srt.name, inst.id);
  }
  // The breaker and detector read the service's settings (owned by the ServiceRuntime).
  rt->breaker.set_config(&srt.cfg.circuit_breaker);
  rt->outlier.set_threshold(srt.cfg.outlier_detection.consecutive_failures);
  return *rt;
}

void Runtime::sync_instance(const std::string& name, const registry::Service& svc, const std::string& id) {
  auto& ids = ids_[name];
  auto iit = svc.instances.find(id);
  const registry::Instance* inst = iit == svc.instances.end() ? nullptr : &iit->second;
  auto old = ids.find(id);
  // Gone, or a new endpoint under the same id (a new address gets a new uid): the old runtime
  // goes; old snapshots may still point at it, and its metric series go when the last lets go.
  if (old != ids.end() && (!inst || inst->uid != old->second)) {
    instances_.erase(old->second);
    gone_uids_.push_back(old->second);
    ids.erase(old);
  }
  if (inst) {
    ensure_instance(*services_.at(name), *inst);
    ids[id] = inst->uid;
  }
}

void Runtime::sync_service(const std::string& name, const registry::Service* svc) {
  auto& ids = ids_[name];
  std::unordered_map<std::string, uint64_t> now;
  if (svc) {
    auto& srt = services_[name];
    if (!srt) {
      srt = std::make_shared<ServiceRuntime>();
      srt->name = name;
      if (hooks_.service_stats) srt->stats = hooks_.service_stats(name);
    }
    srt->cfg = svc->cfg;
    now.reserve(svc->instances.size());
    for (const auto& [id, inst] : svc->instances) {
      now.emplace(id, inst.uid);
      ensure_instance(*srt, inst);
    }
  } else {
    // The service left the registry. Old snapshots may still hold its runtime: it goes when the
    // last of them lets go; here only once nothing else does.
    auto it = services_.find(name);
    if (it != services_.end()) {
      if (it->second.use_count() == 1) services_.erase(it);
      else departed_.push_back(name);
    }
  }
  // Instances that left: old snapshots may still point at their runtimes; their metric series go
  // when the last of them lets go.
  for (const auto& [id, uid] : ids) {
    auto n = now.find(id);
    if (n == now.end() || n->second != uid) {
      instances_.erase(uid);
      gone_uids_.push_back(uid);
    }
  }
  ids = std::move(now);
  if (ids.empty() && !svc) ids_.erase(name);
}

std::shared_ptr<InstanceRuntime> Runtime::instance(uint64_t uid) const {
  auto it = instances_.find(uid);
  return it == instances_.end() ? nullptr : it->second;
}

std::shared_ptr<ServiceRuntime> Runtime::service(const std::string& name) const {
  auto it = services_.find(name);
  return it == services_.end() ? nullptr : it->second;
}

void Runtime::record(InstanceRuntime& rt, Outcome o) {
  if (!instances_.count(rt.uid)) return;  // left the registry while this attempt ran
  record_one(rt, o);
  // Successes matter while there is a streak to reset or a breaker to close.
  rt.wants_successes.store(rt.breaker.consecutive_failures() > 0 || rt.outlier.consecutive_failures() > 0 ||
                               rt.breaker.state(hooks_.now_ms()) != CircuitBreaker::State::kClosed,
                           std::memory_order_relaxed);
}

size_t Runtime::out_of_routing(const std::string& service, size_t& total) const {
  const auto sit = reg_.services().find(service);
  total = 0;
  if (sit == reg_.services().end()) return 0;
  size_t out = 0;
  for (const auto& [id, inst] : sit->second.instances) {
    if (inst.draining) continue;  // drained by an operator: neither in nor out of this budget
    ++total;
    out += inst.ejected || inst.breaker_open;
  }
  return out;
}

bool Runtime::may_take_out(const std::string& service, const ServiceRuntime& srt) const {
  size_t total = 0;
  const size_t out = out_of_routing(service, total);
  return (out + 1) * 100 <= total * srt.cfg.outlier_detection.max_ejection_percent;
}

void Runtime::record_one(InstanceRuntime& rt, Outcome o) {
  const int64_t now = hooks_.now_ms();
  if (o == Outcome::kConnectFailure && rt.metrics.connect_failures) rt.metrics.connect_failures->Increment();
  const auto sit = services_.find(rt.service);
  if (sit == services_.end()) return;
  const ServiceRuntime& srt = *sit->second;
  if (o == Outcome::kNeutral) {
    rt.breaker.release_trial();
    return;
  }
  const bool breaker_failure = o.fails(srt.cfg.circuit_breaker.on);
  const bool outlier_failure = o.fails(srt.cfg.outlier_detection.on);
  if (!outlier_failure) rt.outlier.on_success();
  if (!breaker_failure) {
    if (rt.breaker.on_success()) {
      if (rt.metrics.breaker_open) rt.metrics.breaker_open->Set(0);
      hooks_.log("circuit breaker closed: " + rt.service + "/" + rt.id + " (a request to it succeeded)");
      reg_.set_breaker_open(rt.service, rt.id, false, 0);
    }
  }
  if (!breaker_failure && !outlier_failure) return;
  // Open breakers and ejections together never take more than max_ejection_percent of a service
  // out of routing: past that, failing instances stay in (Envoy's cap, applied to both).
  if (breaker_failure && rt.breaker.on_failure(now, [&] { return may_take_out(rt.service, srt); })) {
    if (rt.metrics.breaker_open) rt.metrics.breaker_open->Set(1);
    hooks_.log("circuit breaker open: " + rt.service + "/" + rt.id + " after " +
               std::to_string(rt.breaker.consecutive_failures()) + " consecutive failures (last: " + outcome_name(o) +
               "); open until +" + std::to_string(rt.breaker.open_until_ms() - now) + " ms");
    reg_.set_breaker_open(rt.service, rt.id, true, rt.breaker.open_until_ms());
    timed_.insert(rt.uid);
  }
  if (outlier_failure && rt.outlier.on_failure()) {
    const auto& od = srt.cfg.outlier_detection;
    const registry::Instance* inst = reg_.find(rt.service, rt.id);
    // Already out by its breaker: ejecting it too takes nothing more out of routing.
    if ((inst && inst->breaker_open) || may_take_out(rt.service, srt)) {
      rt.outlier.eject(now, od);
      if (rt.metrics.ejections) rt.metrics.ejections->Increment();
      hooks_.log("outlier ejected: " + rt.service + "/" + rt.id + " after " + std::to_string(od.consecutive_failures) +
                 " consecutive failures (last: " + outcome_name(o) + "), ejection #" +
                 std::to_string(rt.outlier.ejections()) + " for " +
                 std::to_string(rt.outlier.ejected_until_ms() - now) + " ms");
      reg_.set_ejected(rt.service, rt.id, true, rt.outlier.ejected_until_ms(), rt.outlier.ejections());
      timed_.insert(rt.uid);
    } else {
      rt.outlier.on_success();  // the streak starts over: no log line per further failure
      hooks_.log("outlier not ejected: " + rt.service + "/" + rt.id + " would take more than max_ejection_percent " +
                 std::to_string(od.max_ejection_percent) + "% of the service out of routing");
    }
  }
}

void Runtime::export_gauges() {
  for (auto& [uid, rt] : instances_)
    if (rt->metrics.active) rt->metrics.active->Set(static_cast<double>(rt->load.in_flight()));
}

void Runtime::tick() {
  // Only instances with a clock running: the cost follows the ejections and open breakers, not
  // the size of the registry.
  const int64_t now = hooks_.now_ms();
  for (auto tit = timed_.begin(); tit != timed_.end();) {
    auto iit = instances_.find(*tit);
    if (iit == instances_.end()) {
      tit = timed_.erase(tit);
      continue;
    }
    auto& rt = iit->second;
    if (rt->outlier.maybe_return(now)) {
      hooks_.log("outlier ejection over: " + rt->service + "/" + rt->id + " returns to routing");
      reg_.set_ejected(rt->service, rt->id, false, 0, rt->outlier.ejections());
    }
    // An open breaker whose open_for has passed goes back into the snapshot, half-open: pick()
    // then lets only half_open_requests trials through (CircuitBreaker::allow).
    if (rt->breaker.state(now) == CircuitBreaker::State::kHalfOpen) {
      const registry::Instance* inst = reg_.find(rt->service, rt->id);
      if (inst && inst->breaker_open) {
        hooks_.log("circuit breaker half-open: " + rt->service + "/" + rt->id + " takes trial requests");
        reg_.set_breaker_open(rt->service, rt->id, false, 0);
      }
    }
    if (!rt->outlier.ejected() && rt->breaker.state(now) != CircuitBreaker::State::kOpen) tit = timed_.erase(tit);
    else ++tit;
  }
}

void Runtime::on_probed_healthy(uint64_t uid) {
  auto it = instances_.find(uid);
  if (it == instances_.end()) return;
  auto& rt = *it->second;
  const int64_t now = hooks_.now_ms();
  if (rt.outlier.ejected()) {
    rt.outlier.end_ejection();
    hooks_.log("outlier ejection ended early: " + rt.service + "/" + rt.id + " passes its health checks");
    reg_.set_ejected(rt.service, rt.id, false, 0, rt.outlier.ejections());
  }
  if (rt.breaker.state(now) == CircuitBreaker::State::kOpen) {
    rt.breaker.half_open_now(now);
    hooks_.log("circuit breaker half-open early: " + rt.service + "/" + rt.id + " passes its health checks");
    reg_.set_breaker_open(rt.service, rt.id, false, 0);
  }
}

bool Runtime::retry_allowed(const ServiceRuntime& s, const conf::Service& c) {
  if (s.active_retries >= c.circuit_breaker.max_retries) return false;
  uint64_t budget = std::max<uint64_t>(3, uint64_t{s.active_requests} * c.retry.budget_percent / 100);
  return s.active_retries < budget;
}

}  // namespace sy::health
