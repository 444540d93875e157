// Registry: membership, leases, drain and the index.
#include "registry/registry.h"

#include "registry/codec.h"

#include <algorithm>

namespace sy::registry {

namespace {

// Whether an active health check will probe this instance (its own check, else its service's).
bool probed(const Service& svc, const Instance& inst) {
  return inst.has_health_check ? inst.health_check.type != conf::HealthCheck::Type::kNone
                               : (svc.cfg.has_health_check && svc.cfg.health_check.type != conf::HealthCheck::Type::kNone);
}

// Self-preservation's verdict (Eureka's): more than one, and more than half, of a service's dynamic
// instances lost within one lease window looks like a partition between the services and us, not
// like the services dying, so they are kept (stale) rather than the service emptied.
bool mass_expiry(size_t expiring, size_t population) { return expiring >= 2 && expiring * 2 > population; }

}  // namespace

const char* Instance::state_name() const {
  if (draining) return "draining";
  if (ejected || breaker_open) return "ejected";
  if (stale) return "stale";
  switch (health) {
    case Health::kHealthy: return "healthy";
    case Health::kUnhealthy: return "unhealthy";
    case Health::kUnknown: return "unknown";
  }
  return "unknown";
}

void Registry::changed() {
  dirty_.all = true;
  all_index_ = ++index_;
  if (listener_) listener_(nullptr);
}

void Registry::changed(const std::string& service) {
  dirty_.services.insert(service);
  dirty_.whole.insert(service);
  ++index_;
  note_change(service);
  if (listener_) listener_(&service);
}

void Registry::changed(const std::string& service, const std::string& id) {
  dirty_.services.insert(service);
  if (!dirty_.whole.count(service)) dirty_.instances[service].insert(id);
  ++index_;
  note_change(service);
  if (listener_) listener_(&service);
}

void Registry::note_change(const std::string& service) {
  service_index_[service] = index_;
  // Entries of services that are gone are kept for blocking queries, but not without bound.
  if (service_index_.size() > 2 * services_.size() + 1024) {
    std::erase_if(service_index_, [&](const auto& e) { return !services_.count(e.first) && e.first != service; });
  }
}

uint64_t Registry::service_index(const std::string& service) const {
  auto it = service_index_.find(service);
  return std::max(all_index_, it == service_index_.end() ? uint64_t{1} : it->second);
}

Service& Registry::service_for(const std::string& name) {
  auto it = services_.find(name);
  if (it != services_.end()) return it->second;
  Service s;
  s.cfg = conf::default_service(name);
  return services_.emplace(name, std::move(s)).first->second;
}

void Registry::drop_service_if_empty(const std::string& name) {
  auto it = services_.find(name);
  if (it != services_.end() && !it->second.in_config && it->second.instances.empty()) services_.erase(it);
}

std::vector<std::string> Registry::apply_config(const conf::Config& c) {
  std::vector<std::string> changes;
  default_ttl_ = c.registry.default_ttl;
  // Services that left the config: drop their static instances, keep dynamic ones.
  for (auto& [name, svc] : services_) {
    if (!svc.in_config || c.services.count(name)) continue;
    svc.in_config = false;
    svc.cfg = conf::default_service(name);
    changes.push_back("service removed: " + name);
    for (auto it = svc.instances.begin(); it != svc.instances.end();) {
      if (it->second.source == Source::kStatic) {
        changes.push_back("instance removed: " + name + "/" + it->first);
        it = svc.instances.erase(it);
        --total_;
      } else {
        ++it;
      }
    }
  }
  for (const auto& [name, sc] : c.services) {
    bool existed = services_.count(name) && services_[name].in_config;
    Service& svc = service_for(name);
    if (!existed) changes.push_back("service added: " + name);
    svc.in_config = true;
    svc.cfg = sc;
    // Static instances: replace the set, keeping uid (and so pools) of unchanged ones.
    std::map<std::string, Instance> kept;
    for (const auto& si : sc.instances) {
      Instance inst;
      auto old = svc.instances.find(si.id);
      bool same = old != svc.instances.end() && old->second.source == Source::kStatic &&
                  old->second.address == si.address;
      if (old != svc.instances.end() && old->second.source == Source::kDynamic) {
        // Registrations cannot take a static id (put() refuses them), but a reload can add a
        // static instance under an id already registered: the registration keeps it, said at
        // the instance's place in the file.
        changes.push_back(c.path + ":" + std::to_string(si.pos.line) + ":" + std::to_string(si.pos.col) + ": instance " +
                          name + "/" + si.id +
                          ": a dynamic registration already uses this id; the static one is skipped until it is deregistered");
        continue;
      }
      if (same) {
        inst = old->second;
        if (inst.weight != si.weight || inst.tags != si.tags || inst.zone != si.zone)
          changes.push_back("instance modified: " + name + "/" + si.id);
      } else {
        inst.uid = next_uid_++;
        inst.routable_since_ms = now();
        inst.health = probing_ && sc.has_health_check && sc.health_check.type != conf::HealthCheck::Type::kNone
                          ? Health::kUnknown
                          : Health::kHealthy;
        changes.push_back("instance added: " + name + "/" + si.id);
      }
      inst.id = si.id;
      inst.service = name;
      inst.address = si.address;
      inst.weight = si.weight;
      inst.tags = si.tags;
      inst.zone = si.zone;
      inst.source = Source::kStatic;
      kept[si.id] = std::move(inst);
    }
    for (auto it = svc.instances.begin(); it != svc.instances.end();) {
      if (it->second.source == Source::kStatic) {
        if (!kept.count(it->first)) changes.push_back("instance removed: " + name + "/" + it->first);
        it = svc.instances.erase(it);
        --total_;
      } else {
        ++it;
      }
    }
    for (auto& [id, inst] : kept) {
      svc.instances.emplace(id, std::move(inst));
      ++total_;
    }
  }
  std::vector<std::string> empty;
  for (const auto& [name, svc] : services_)
    if (!svc.in_config && svc.instances.empty()) empty.push_back(name);
  for (const auto& n : empty) services_.erase(n);
  changed();
  return changes;
}

Registry::PutResult Registry::put(const Registration& r, int64_t now_ms) { return put_impl(r, now_ms, true, Origin::kLocal); }

Registry::PutResult Registry::put_impl(const Registration& r, int64_t now_ms, bool check_limits, Origin origin) {
  auto sit = services_.find(r.service);
  const Instance* cur = find(r.service, r.id);
  const bool exists = cur != nullptr;
  // Every way in (admin API, Consul, Eureka, catalog, the shared store) ends here: a config-file
  // instance is never turned into a leased one.
  if (cur && cur->source == Source::kStatic) return PutResult::kStatic;
  if (cur && check_limits && unchanged_by(*cur, r)) {
    // Nothing to publish, persist or wake watchers for: the index stays (as Consul's ModifyIndex
    // does), and the cost does not depend on the size of the service.
    heartbeat(r.service, r.id, now_ms);
    return PutResult::kUpdated;
  }
  if (!exists && check_limits) {
    if (total_ >= limits_.max_instances_total) return PutResult::kRegistryFull;
    if (sit != services_.end() && sit->second.instances.size() >= limits_.max_instances_per_service)
      return PutResult::kServiceFull;
  }
  Service& svc = service_for(r.service);
  Instance& inst = svc.instances[r.id];
  untrack_lease(inst);
  untrack_critical(inst);
  route_carriers_.erase(inst.uid);
  if (!exists) {
    inst.uid = next_uid_++;
    inst.routable_since_ms = now_ms;
    ++total_;
  } else if (!(inst.address == r.address) || inst.tls != r.tls || inst.protocol != r.protocol) {
    inst.uid = next_uid_++;  // a new address (or scheme, or protocol) is a new endpoint: fresh pools
  }
  assign(inst, r, now_ms);
  track_lease(inst);
  track_routes(inst);
  track_id(inst);
  mark_persist(r.service, r.id, origin);
  if (!exists) inst.health = probing_ && probed(svc, inst) ? Health::kUnknown : Health::kHealthy;
  track_critical(inst);
  log(std::string(exists ? "instance updated: " : "instance registered: ") + r.service + "/" + r.id + " at " +
      r.address.text);
  changed(r.service, r.id);
  return exists ? PutResult::kUpdated : PutResult::kCreated;
}

bool Registry::unchanged_by(const Instance& inst, const Registration& r) const {
  const conf::Millis ttl = !r.leased ? conf::Millis(0) : r.ttl.count() > 0 ? r.ttl : default_ttl_;
  return inst.source == Source::kDynamic && !inst.stale && inst.address == r.address && inst.tls == r.tls &&
         inst.protocol == r.protocol &&
         inst.weight == r.weight &&
         inst.tags == r.tags && inst.meta == r.meta && inst.zone == r.zone && inst.ttl == ttl &&
         inst.routes == r.routes && inst.has_health_check == r.has_health_check && inst.health_check == r.health_check &&
         inst.deregister_critical_after == r.deregister_critical_after;
}

bool Registry::remove(const std::string& service, const std::string& id) { return remove_impl(service, id, Origin::kLocal); }

bool Registry::remove_impl(const std::string& service, const std::string& id, Origin origin) {
  auto sit = services_.find(service);
  if (sit == services_.end()) return false;
  auto it = sit->second.instances.find(id);
  if (it == sit->second.instances.end()) return false;
  forget(it->second);
  if (it->second.source == Source::kDynamic) mark_persist(service, id, origin);
  sit->second.instances.erase(it);
  --total_;
  log("instance deregistered: " + service + "/" + id);
  drop_service_if_empty(service);
  changed(service, id);
  return true;
}

bool Registry::heartbeat(const std::string& service, const std::string& id, int64_t now_ms) {
  auto sit = services_.find(service);
  if (sit == services_.end()) return false;
  auto it = sit->second.instances.find(id);
  if (it == sit->second.instances.end() || it->second.source != Source::kDynamic) return false;
  if (it->second.ttl.count() == 0) return true;  // no lease to renew
  if (shared_) {
    // The lease lives in the store: renewed there (a stale instance's is gone: the renewal fails
    // and the client registers again).
    if (it->second.shared_lease != 0 || it->second.stale) renewals_.push_back(it->second.stale ? -1 : it->second.shared_lease);
    return true;
  }
  untrack_lease(it->second);
  it->second.lease_expires_ms = now_ms + it->second.ttl.count();
  const bool was_stale = it->second.stale;
  it->second.stale = false;
  track_lease(it->second);
  if (was_stale) {
    log("instance fresh again after heartbeat: " + service + "/" + id);
    changed(service, id);  // stale → fresh changes routing
  }
  return true;
}

bool Registry::set_drain(const std::string& service, const std::string& id, bool enabled) {
  return drain_impl(service, id, enabled, Origin::kLocal);
}

bool Registry::drain_impl(const std::string& service, const std::string& id, bool enabled, Origin origin) {
  auto sit = services_.find(service);
  if (sit == services_.end()) return false;
  auto it = sit->second.instances.find(id);
  if (it == sit->second.instances.end()) return false;
  if (it->second.draining != enabled) {
    it->second.draining = enabled;
    if (it->second.source == Source::kDynamic) mark_persist(service, id, origin);
    log(std::string(enabled ? "instance draining: " : "instance no longer draining: ") + service + "/" + id);
    changed(service, id);
  }
  return true;
}

bool Registry::set_health(const std::string& service, const std::string& id, Health h, const std::string& reason) {
  Instance* inst = find_mutable(service, id);
  if (!inst) return false;
  return set_reported_health(service, id, h, inst->warning, reason);
}

void Registry::note_probe(const std::string& service, const std::string& id, bool ok, uint32_t latency_ms, int64_t now_ms) {
  if (Instance* inst = find_mutable(service, id)) {
    inst->probed_ms = now_ms;
    inst->probe_latency_ms = latency_ms;
    inst->probe_ok = ok;
  }
}

bool Registry::set_reported_health(const std::string& service, const std::string& id, Health h, bool warning,
                                   const std::string& reason) {
  Instance* inst = find_mutable(service, id);
  if (!inst) return false;
  inst->health_reason = reason;
  if (inst->health != h || inst->warning != warning) {
    if (h == Health::kHealthy && inst->health != h) inst->routable_since_ms = now();
    untrack_critical(*inst);
    if (h == Health::kUnhealthy && inst->health != h) inst->critical_since_ms = now();
    inst->health = h;
    inst->warning = warning;
    track_critical(*inst);
    changed(service, id);
  }
  return true;
}

void Registry::track_critical(Instance& inst) {
  if (inst.health == Health::kUnhealthy && inst.deregister_critical_after.count() > 0 && inst.source == Source::kDynamic)
    critical_.emplace(inst.critical_since_ms + inst.deregister_critical_after.count(), &inst);
}

void Registry::untrack_critical(Instance& inst) {
  critical_.erase({inst.critical_since_ms + inst.deregister_critical_after.count(), &inst});
}

void Registry::forget(Instance& inst) {
  untrack_lease(inst);
  untrack_critical(inst);
  route_carriers_.erase(inst.uid);
  auto [b, e] = by_id_.equal_range(inst.id);
  for (auto it = b; it != e; ++it)
    if (it->second == &inst) {
      by_id_.erase(it);
      break;
    }
}

void Registry::track_id(const Instance& inst) {
  auto [b, e] = by_id_.equal_range(inst.id);
  for (auto it = b; it != e; ++it)
    if (it->second == &inst) return;
  by_id_.emplace(inst.id, &inst);
}

std::vector<const Instance*> Registry::find_by_id(const std::string& id) const {
  std::vector<const Instance*> out;
  auto [b, e] = by_id_.equal_range(id);
  for (auto it = b; it != e; ++it) out.push_back(it->second);
  return out;
}

void Registry::reap_critical(int64_t now_ms) {
  while (!critical_.empty() && critical_.begin()->first <= now_ms) {
    Instance* inst = critical_.begin()->second;
    const std::string service = inst->service, id = inst->id;
    log("instance deregistered after being unhealthy for its deregister_critical_after (" +
        std::to_string(inst->deregister_critical_after.count()) + " ms): " + service + "/" + id);
    remove(service, id);  // untracks it
  }
}

Instance* Registry::find_mutable(const std::string& service, const std::string& id) {
  auto sit = services_.find(service);
  if (sit == services_.end()) return nullptr;
  auto it = sit->second.instances.find(id);
  return it == sit->second.instances.end() ? nullptr : &it->second;
}

bool Registry::set_ejected(const std::string& service, const std::string& id, bool ejected, int64_t until_ms,
                           uint32_t ejections) {
  Instance* inst = find_mutable(service, id);
  if (!inst) return false;
  inst->ejected_until_ms = until_ms;
  inst->ejections = ejections;
  if (inst->ejected != ejected) {
    if (!ejected) inst->routable_since_ms = now();
    inst->ejected = ejected;
    changed(service, id);
  }
  return true;
}

bool Registry::set_breaker_open(const std::string& service, const std::string& id, bool open, int64_t until_ms) {
  Instance* inst = find_mutable(service, id);
  if (!inst) return false;
  inst->breaker_open_until_ms = until_ms;
  if (inst->breaker_open != open) {
    if (!open) inst->routable_since_ms = now();
    inst->breaker_open = open;
    changed(service, id);
  }
  return true;
}

void Registry::track_lease(Instance& inst) {
  if (!shared_ && inst.source == Source::kDynamic && inst.ttl.count() > 0 && !inst.stale) leases_.emplace(inst.lease_expires_ms, &inst);
}

void Registry::untrack_lease(Instance& inst) { leases_.erase({inst.lease_expires_ms, &inst}); }

void Registry::track_routes(const Instance& inst) {
  if (!inst.routes.empty()) route_carriers_[inst.uid] = &inst;
}

int64_t Registry::expire(int64_t now_ms) {
  // Only services with a lease due now are looked at: the cost follows what expires, not the
  // size of the registry.
  std::set<std::string> due_services;
  for (auto it = leases_.begin(); it != leases_.end() && it->first <= now_ms; ++it) due_services.insert(it->second->service);
  for (const auto& name : due_services) {
    auto sit = services_.find(name);
    if (sit == services_.end()) continue;
    Service& svc = sit->second;
    // Forget expiries older than one lease window.
    const int64_t window = default_ttl_.count();
    std::erase_if(svc.recent_expiries, [&](int64_t t) { return t < now_ms - window; });
    std::vector<std::string> due;
    size_t dynamic = 0, silent = 0;
    for (auto& [id, inst] : svc.instances) {
      if (inst.source != Source::kDynamic) continue;
      ++dynamic;
      if (inst.ttl.count() == 0) continue;
      // Silent: no heartbeat for over half its TTL (a healthy client beats every TTL/3).
      if (inst.stale || inst.lease_expires_ms - now_ms < inst.ttl.count() / 2) ++silent;
      if (inst.stale) continue;
      if (inst.lease_expires_ms <= now_ms) due.push_back(id);
    }
    if (due.empty()) continue;
    // A mass expiry: more than one, and more than half, of the service's dynamic instances gone
    // silent (or expired) within one lease window. That looks like a partition between the
    // services and us, not like the services dying, so keep them (stale) rather than emptying the
    // service (Eureka's self-preservation). Counting the silent ones, not only those already due,
    // keeps the verdict from depending on which lease happens to run out first.
    size_t expiring = silent + svc.recent_expiries.size();
    size_t population = dynamic + svc.recent_expiries.size();
    bool mass = mass_expiry(expiring, population);
    for (const auto& id : due) {
      Instance& inst = svc.instances[id];
      untrack_lease(inst);
      if (mass) {
        inst.stale = true;
        log("lease expired in a mass expiry, keeping as stale: " + name + "/" + id + " (" + std::to_string(expiring) +
            " of " + std::to_string(population) + " instances expired within one TTL)");
      } else {
        forget(inst);
        mark_persist(name, id, Origin::kLocal);
        svc.instances.erase(id);
        --total_;
        svc.recent_expiries.push_back(now_ms);
        log("lease expired, instance removed: " + name + "/" + id);
      }
    }
    if (svc.instances.empty() && !svc.in_config) services_.erase(sit);
    for (const auto& id : due) changed(name, id);
  }
  return leases_.empty() ? -1 : leases_.begin()->first;
}

const Instance* Registry::find(const std::string& service, const std::string& id) const {
  auto sit = services_.find(service);
  if (sit == services_.end()) return nullptr;
  auto it = sit->second.instances.find(id);
  return it == sit->second.instances.end() ? nullptr : &it->second;
}

bool Registry::apply_remote(const Registration& r, int64_t lease, int64_t now_ms) {
  if (Instance* cur = find_mutable(r.service, r.id)) {
    if (cur->source == Source::kStatic) {
      log("shared registry: " + r.service + "/" + r.id + " is a static instance here; the shared one is not applied");
      return false;
    }
    cur->shared_lease = lease;
    Registration have = registration_of(*cur);
    have.written_at_ms = r.written_at_ms;
    if (!cur->stale && encode_registration(have, DocKind::kStored) == encode_registration(r, DocKind::kStored)) return false;
  }
  put_impl(r, now_ms, false, Origin::kStore);
  drain_impl(r.service, r.id, r.draining, Origin::kStore);
  set_shared_lease(r.service, r.id, lease);
  return true;
}

void Registry::set_shared_lease(const std::string& service, const std::string& id, int64_t lease) {
  // Not a change anyone routes on or persists: the lease is what renewals ask the store for.
  if (Instance* inst = find_mutable(service, id); inst && inst->source == Source::kDynamic) inst->shared_lease = lease;
}

bool Registry::remove_remote(const std::string& service, const std::string& id) {
  const Instance* inst = find(service, id);
  if (!inst || inst->source != Source::kDynamic) return false;
  return remove_impl(service, id, Origin::kStore);
}

void Registry::lease_lost(const std::string& service, const std::string& id, int64_t now_ms) {
  auto sit = services_.find(service);
  if (sit == services_.end()) return;
  Service& svc = sit->second;
  auto it = svc.instances.find(id);
  if (it == svc.instances.end() || it->second.source != Source::kDynamic || it->second.stale) return;
  const int64_t window = default_ttl_.count();
  std::erase_if(svc.recent_expiries, [&](int64_t t) { return t < now_ms - window; });
  std::erase_if(svc.recently_expired, [&](const auto& e) { return e.first < now_ms - window; });
  size_t dynamic = 0, stale = 0;
  for (const auto& [iid, inst] : svc.instances) {
    if (inst.source != Source::kDynamic) continue;
    ++dynamic;
    if (inst.stale) ++stale;
  }
  // The same verdict as expire(): more than one, and more than half, of the service's dynamic
  // instances lost within one lease window looks like a partition, not like the services dying.
  // Here "lost" is what the store reported (this one, the stale ones, the recent expiries): a
  // proxy cannot see heartbeats sent to its peers, so it cannot count the silent ones.
  const size_t expiring = 1 + stale + svc.recent_expiries.size();
  const size_t population = dynamic + svc.recent_expiries.size();
  const bool mass = mass_expiry(expiring, population);
  if (!mass) {
    svc.recently_expired.emplace_back(now_ms, registration_of(it->second));
    svc.recent_expiries.push_back(now_ms);
    log("lease expired in the shared registry, instance removed: " + service + "/" + id);
    remove_remote(service, id);
    return;
  }
  it->second.stale = true;
  log("lease expired in a mass expiry (shared registry), keeping as stale: " + service + "/" + id + " (" +
      std::to_string(expiring) + " of " + std::to_string(population) + " instances expired within one TTL)");
  // Those removed just before the verdict come back as stale.
  auto back = std::move(svc.recently_expired);
  svc.recently_expired.clear();
  for (auto& [t, reg] : back) {
    if (find(reg.service, reg.id)) continue;
    put_impl(reg, now_ms, false, Origin::kStore);
    if (Instance* inst = find_mutable(reg.service, reg.id)) {
      inst->stale = true;
      log("kept as stale after all (mass expiry): " + reg.service + "/" + reg.id);
    }
  }
  changed(service);
}

void Registry::restore(const Registration& r, int64_t now_ms) {
  if (const Instance* cur = find(r.service, r.id); cur && cur->source == Source::kStatic) {
    // Saved by a version that let a registration take over a config-file id: the file wins.
    log("saved registration " + r.service + "/" + r.id + " not restored: the config file defines that instance");
    return;
  }
  Service& svc = service_for(r.service);
  bool existed = svc.instances.count(r.id);
  Instance& inst = svc.instances[r.id];
  if (!existed) ++total_;
  forget(inst);
  inst.uid = next_uid_++;
  inst.routable_since_ms = 0;  // present at start: nothing to ramp against
  assign(inst, r, now_ms);
  track_lease(inst);
  track_routes(inst);
  track_id(inst);
  inst.draining = r.draining;
  inst.health = probing_ && probed(svc, inst) ? Health::kUnknown : Health::kHealthy;
}

void Registry::assign(Instance& inst, const Registration& r, int64_t now_ms) const {
  inst.id = r.id;
  inst.service = r.service;
  inst.address = r.address;
  inst.tls = r.tls;
  inst.protocol = r.protocol;
  inst.weight = r.weight;
  inst.tags = r.tags;
  inst.meta = r.meta;
  inst.zone = r.zone;
  inst.source = Source::kDynamic;
  inst.routes = r.routes;
  inst.has_health_check = r.has_health_check;
  inst.health_check = r.health_check;
  inst.deregister_critical_after = r.deregister_critical_after;
  inst.ttl = !r.leased ? conf::Millis(0) : r.ttl.count() > 0 ? r.ttl : default_ttl_;
  inst.lease_expires_ms = now_ms + inst.ttl.count();
  inst.stale = false;
}

}  // namespace sy::registry
