// Building the routing snapshot from the registry and the config.
#include "proxy/server/routing_table.h"

#include <algorithm>

#include "proxy/lb/zone_aware.h"

namespace sy::server {

namespace {

bool has_tags(const registry::Instance& inst, const std::vector<std::string>& tags) {
  for (const auto& t : tags)
    if (std::find(inst.tags.begin(), inst.tags.end(), t) == inst.tags.end()) return false;
  return true;
}

// The one place an instance becomes an endpoint (both builders: whole lists and patches).
EndpointList::Ptr endpoint_of(const registry::Instance& inst, std::shared_ptr<health::InstanceRuntime> rt) {
  return std::make_shared<const Endpoint>(Endpoint{inst.uid, inst.id, inst.address, inst.weight, std::move(rt), inst.tls, inst.protocol});
}

// Routable instances in tiers: healthy and fresh first; failing that, unknown (not yet probed)
// and stale ones (lease lost in a mass expiry); failing that, panic: every non-draining instance,
// since some answers beat none.
std::shared_ptr<const Upstreams> make_upstreams(const registry::Service& svc, const std::vector<std::string>& tags,
                                                const health::Runtime* runtime, const std::string& zone,
                                                int64_t now_ms) {
  auto u = std::make_shared<Upstreams>();
  u->service = svc.cfg.name;
  u->cfg = std::make_shared<const conf::Service>(svc.cfg);
  u->hash_on = svc.cfg.hash_on;
  if (runtime) u->runtime = runtime->service(svc.cfg.name);
  std::vector<const registry::Instance*> best, fallback, panic;
  double local_total = 0, local_up = 0;
  for (const auto& [id, inst] : svc.instances) {
    if (!has_tags(inst, tags)) continue;
    u->has_instances = true;
    // The local zone's capacity counts every instance it has, drained ones included: a drained
    // instance is capacity that is missing.
    if (!zone.empty() && inst.zone == zone) local_total += inst.weight;
    if (inst.draining) continue;
    panic.push_back(&inst);
    if (!inst.routable()) continue;
    if (inst.health == registry::Health::kHealthy && !inst.stale) best.push_back(&inst);
    else fallback.push_back(&inst);
  }
  u->panic = best.empty() && fallback.empty() && !panic.empty();
  std::vector<const registry::Instance*> chosen = !best.empty() ? best : !fallback.empty() ? fallback : panic;
  // Zone awareness: the local zone's instances first.
  if (!zone.empty()) {
    std::stable_partition(chosen.begin(), chosen.end(), [&](const registry::Instance* i) { return i->zone == zone; });
    for (const auto* i : chosen)
      if (i->zone == zone) {
        ++u->local_count;
        local_up += i->weight;
      }
    u->local_share = lb::zone_local_share(u->local_count, chosen.size(), local_up, local_total);
  } else {
    u->local_count = chosen.size();
  }
  const bool ramp = svc.cfg.slow_start.count() > 0;
  std::vector<lb::EndpointInfo> local, remote;
  for (size_t k = 0; k < chosen.size(); ++k) {
    const auto* inst = chosen[k];
    auto rt = runtime ? runtime->instance(inst->uid) : nullptr;
    u->endpoints.push_back(endpoint_of(*inst, rt));
    uint32_t w = inst->weight;
    if (ramp) {  // weights × 10 so a ramping instance can hold a fraction of a unit
      const double f = slow_start_factor(inst->routable_since_ms, now_ms, svc.cfg.slow_start);
      w = std::max<uint32_t>(1, static_cast<uint32_t>(std::lround(inst->weight * 10 * f)));
    }
    (k < u->local_count ? local : remote).push_back(lb::EndpointInfo{w, u->endpoints.back()->id, rt ? &rt->load : nullptr});
  }
  u->policy = lb::make_policy(svc.cfg.lb, local);
  if (!remote.empty()) u->remote_policy = lb::make_policy(svc.cfg.lb, remote);
  return u;
}

}  // namespace

double slow_start_factor(int64_t since_ms, int64_t now_ms, conf::Millis window) {
  if (window.count() <= 0) return 1.0;
  const double f = static_cast<double>(now_ms - since_ms) / static_cast<double>(window.count());
  return std::clamp(f, 0.1, 1.0);
}

int Upstreams::pick(const lb::PickContext& ctx) const {
  const size_t n = endpoints.size();
  if (n == 0) return -1;
  const bool have_local = local_count > 0, have_remote = local_count < n && remote_policy;
  // A share below 1: this request spills to another zone with probability 1 - share.
  bool remote = !have_local || (have_remote && lb::zone_spills(local_share, ctx.random));
  if (remote && have_remote) {
    lb::PickContext r = ctx;
    r.exclude_mask = local_count < 64 ? ctx.exclude_mask >> local_count : 0;
    int i = remote_policy->pick(r);
    return i < 0 ? -1 : static_cast<int>(local_count) + i;
  }
  int i = policy->pick(ctx);
  // Every local endpoint already tried (a retry): go remote rather than repeat one.
  if (i >= 0 && ctx.excluded(static_cast<size_t>(i)) && have_remote) {
    lb::PickContext r = ctx;
    r.exclude_mask = local_count < 64 ? ctx.exclude_mask >> local_count : 0;
    int j = remote_policy->pick(r);
    if (j >= 0) return static_cast<int>(local_count) + j;
  }
  return i;
}

namespace {
// Ring hash and Maglev: a table over every endpoint, built whole.
bool table_policy(conf::Lb lb) { return lb == conf::Lb::kRingHash || lb == conf::Lb::kMaglev; }
}  // namespace

bool RoutingBuilder::patchable(const conf::Service& svc, const conf::Config& cfg) {
  return !table_policy(svc.lb) && cfg.zone.empty() && svc.slow_start.count() <= 0;
}

namespace {
// The published endpoint list as a policy's source (the Upstreams owns both, so it outlives the policy).
class ListSource final : public lb::EndpointSource {
 public:
  explicit ListSource(const EndpointList& l) : list_(l) {}
  size_t size() const override { return list_.size(); }
  uint32_t weight(size_t i) const override { return list_[i]->weight; }
  const lb::LoadStats* load(size_t i) const override {
    const auto& rt = list_[i]->runtime;
    return rt ? &rt->load : nullptr;
  }

 private:
  const EndpointList& list_;
};

int tier_of(const registry::Instance& inst) {
  if (inst.draining) return -1;
  if (!inst.routable()) return 2;
  return inst.health == registry::Health::kHealthy && !inst.stale ? 0 : 1;
}
}  // namespace

void RoutingBuilder::link(ServiceState& st, Member& m, int tier) {
  m.tier = tier;
  m.pos = st.tiers[tier].size();
  st.tiers[tier].push_back(m.endpoint);
  ++st.weights[tier][m.endpoint->weight];
}

void RoutingBuilder::unlink(ServiceState& st, Member& m) {
  if (m.tier < 0) return;
  auto& v = st.tiers[m.tier];
  // Swap-remove: the last endpoint of the tier takes this one's place.
  if (m.pos + 1 != v.size()) {
    v.set(m.pos, v.back());
    st.members[v[m.pos]->id].pos = m.pos;
  }
  v.pop_back();
  auto w = st.weights[m.tier].find(m.endpoint->weight);
  if (--w->second == 0) st.weights[m.tier].erase(w);
  m.tier = -1;
}

void RoutingBuilder::place(ServiceState& st, const std::string& id, const registry::Instance* inst,
                           const health::Runtime* runtime) {
  auto it = st.members.find(id);
  if (!inst) {
    if (it != st.members.end()) {
      unlink(st, it->second);
      st.members.erase(it);
    }
    return;
  }
  Member& m = it != st.members.end() ? it->second : st.members[id];
  const int t = tier_of(*inst);
  // A new address is a new uid; the weight is the endpoint's own; the runtime follows the uid.
  const bool same = m.endpoint && m.endpoint->uid == inst->uid && m.endpoint->weight == inst->weight;
  if (same && t == m.tier) return;
  unlink(st, m);
  if (!same) {
    auto rt = runtime ? runtime->instance(inst->uid) : nullptr;
    m.endpoint = endpoint_of(*inst, std::move(rt));
  }
  if (t >= 0) link(st, m, t);
}

RoutingBuilder::ServiceState& RoutingBuilder::refresh(const registry::Service& svc, const registry::Registry::Dirty* dirty,
                                                      bool whole, const health::Runtime* runtime) {
  auto [it, fresh] = state_.try_emplace(svc.cfg.name);
  ServiceState& st = it->second;
  if (fresh || whole) {
    // Every instance again, in id order; endpoints of unchanged instances are kept (place()).
    for (auto& t : st.tiers) t.clear();
    for (auto& w : st.weights) w.clear();
    for (auto& [id, m] : st.members) m.tier = -1;
    std::erase_if(st.members, [&](const auto& e) { return !svc.instances.count(e.first); });
    for (const auto& [id, inst] : svc.instances) place(st, id, &inst, runtime);
    return st;
  }
  for (const auto& id : dirty->ids(svc.cfg.name)) {
    auto inst = svc.instances.find(id);
    place(st, id, inst == svc.instances.end() ? nullptr : &inst->second, runtime);
  }
  return st;
}

std::shared_ptr<const Upstreams> RoutingBuilder::upstreams_of(const registry::Service& svc, ServiceState& st,
                                                              const health::Runtime* runtime) const {
  auto u = std::make_shared<Upstreams>();
  u->service = svc.cfg.name;
  u->cfg = std::make_shared<const conf::Service>(svc.cfg);
  u->hash_on = svc.cfg.hash_on;
  if (runtime) u->runtime = runtime->service(svc.cfg.name);
  u->has_instances = !svc.instances.empty();
  int chosen = 0;
  while (chosen + 1 < kTiers && st.tiers[chosen].empty()) ++chosen;
  u->endpoints = st.tiers[chosen].published();
  u->panic = chosen == kTiers - 1 && !u->endpoints.empty();
  u->local_count = u->endpoints.size();
  u->source = std::make_unique<ListSource>(u->endpoints);
  u->policy = lb::make_policy_over(svc.cfg.lb, *u->source, st.weights[chosen].size() <= 1);
  if (u->policy) return u;
  // Weighted round robin and random: their cycle / prefix sums over every endpoint.
  std::vector<lb::EndpointInfo> infos;
  infos.reserve(u->endpoints.size());
  for (size_t i = 0; i < u->endpoints.size(); ++i) {
    const Endpoint& e = *u->endpoints[i];
    infos.push_back(lb::EndpointInfo{e.weight, e.id, e.runtime ? &e.runtime->load : nullptr});
  }
  u->policy = lb::make_policy(svc.cfg.lb, infos);
  return u;
}

std::shared_ptr<RoutingTable> RoutingBuilder::build(const registry::Registry& reg, const conf::Config& cfg,
                                                    const RoutingTable* prev, const registry::Registry::Dirty* dirty,
                                                    const health::Runtime* runtime, int64_t now_ms) {
  auto t = std::make_shared<RoutingTable>();
  t->index = reg.index();
  const bool incremental = prev && dirty && !dirty->all;
  if (!incremental) {
    std::erase_if(state_, [&](const auto& e) { return !reg.services().count(e.first); });
    std::erase_if(table_built_ms_, [&](const auto& e) { return !reg.services().count(e.first); });
    pending_.clear();
  } else {
    for (const auto& name : dirty->services)
      if (!reg.services().count(name)) {
        state_.erase(name);
        table_built_ms_.erase(name);
      }
    std::erase_if(pending_, [&](const std::string& n) { return !reg.services().count(n); });
  }
  auto changed = [&](const std::string& name) { return !incremental || dirty->services.count(name) || pending_.count(name); };
  for (const auto& [name, svc] : reg.services()) {
    if (!changed(name)) {
      auto it = prev->services.find(name);
      if (it != prev->services.end()) {
        t->services[name] = it->second;
        continue;
      }
    }
    if (patchable(svc.cfg, cfg)) {
      const bool whole = !incremental || dirty->whole_service(name);
      t->services[name] = upstreams_of(svc, refresh(svc, dirty, whole, runtime), runtime);
    } else {
      state_.erase(name);
      if (table_policy(svc.cfg.lb) && svc.instances.size() >= kThrottleFrom) {
        auto built = table_built_ms_.find(name);
        if (incremental && throttle_ && built != table_built_ms_.end() && now_ms - built->second < kTableRebuildMs) {
          if (auto was = prev->services.find(name); was != prev->services.end()) {
            t->services[name] = was->second;  // rebuilt by a later build(); answers wait (App::persist)
            pending_.insert(name);
            continue;
          }
        }
        table_built_ms_[name] = now_ms;
      }
      pending_.erase(name);
      t->services[name] = make_upstreams(svc, {}, runtime, cfg.zone, now_ms);
    }
  }
  auto add_route = [&](RouteEntry r) {
    r.host = http::normalize_host(r.host);
    auto sit = reg.services().find(r.service);
    if (sit != reg.services().end()) {
      if (r.tags.empty()) {
        r.upstreams = t->services[r.service];
      } else if (!changed(r.service) || pending_.count(r.service)) {
        // A subset by tag is rebuilt with its service only (routes are few; services may be many).
        for (const auto& p : prev->routes)
          if (p.host == r.host && p.path_prefix == r.path_prefix && p.service == r.service && p.tags == r.tags) r.upstreams = p.upstreams;
      }
      if (!r.upstreams) r.upstreams = make_upstreams(sit->second, r.tags, runtime, cfg.zone, now_ms);
    }
    t->routes.push_back(std::move(r));
  };
  for (const auto& r : cfg.routes)
    add_route(RouteEntry{r.host, r.path_prefix, r.strip_prefix, r.service, r.tags, nullptr, r.rate_limit.name, r.host + "|" + r.path_prefix, nullptr});
  // Routes carried by registrations (registry/route_owner.h states the rule): a config route with the
  // same host and prefix wins, the operator's file being the authority; between registrations of
  // different services, the earliest registered instance's service keeps it.
  // (The registry keeps the carriers by uid: no walk over every instance here.)
  for (const auto& [uid, inst] : reg.route_carriers()) {
    for (const auto& rs : inst->routes) {
      std::string h = http::normalize_host(rs.host);
      bool taken = std::any_of(t->routes.begin(), t->routes.end(),
                               [&](const RouteEntry& e) { return e.host == h && e.path_prefix == rs.path_prefix; });
      if (!taken) add_route(RouteEntry{rs.host, rs.path_prefix, rs.strip_prefix, inst->service, {}, nullptr, {}, {}, nullptr});
    }
  }
  std::stable_sort(t->routes.begin(), t->routes.end(), [](const RouteEntry& a, const RouteEntry& b) {
    if (a.host.empty() != b.host.empty()) return !a.host.empty();
    return a.path_prefix.size() > b.path_prefix.size();
  });
  return t;
}

std::shared_ptr<RoutingTable> build_routing_table(const registry::Registry& reg, const conf::Config& cfg,
                                                  const RoutingTable* prev, const registry::Registry::Dirty* dirty,
                                                  const health::Runtime* runtime, int64_t now_ms) {
  RoutingBuilder b;
  return b.build(reg, cfg, prev, dirty, runtime, now_ms);
}

bool RoutingTable::route(std::string_view host, std::string_view path, const RouteEntry*& route,
                         const Upstreams*& upstreams) const {
  route = nullptr;
  upstreams = nullptr;
  for (const auto& r : routes) {
    if (!r.host.empty() && r.host != host) continue;
    if (!r.path_prefix.empty()) {
      if (path.substr(0, r.path_prefix.size()) != r.path_prefix) continue;
      // "/api" matches "/api", "/api/x" and "/api?q", not "/apix" — unless the prefix ends in "/".
      if (path.size() > r.path_prefix.size() && r.path_prefix.back() != '/') {
        char next = path[r.path_prefix.size()];
        if (next != '/' && next != '?') continue;
      }
    }
    route = &r;
    upstreams = r.upstreams.get();
    return true;
  }
  auto it = services.find(host);
  if (it == services.end()) return false;
  upstreams = it->second.get();
  return true;
}

}  // namespace sy::server
