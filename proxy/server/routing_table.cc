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
    u->endpoints.push_back(Endpoint{inst->uid, inst->id, inst->address, inst->weight, rt});
    uint32_t w = inst->weight;
    if (ramp) {  // weights × 10 so a ramping instance can hold a fraction of a unit
      const double f = slow_start_factor(inst->routable_since_ms, now_ms, svc.cfg.slow_start);
      w = std::max<uint32_t>(1, static_cast<uint32_t>(std::lround(inst->weight * 10 * f)));
    }
    (k < u->local_count ? local : remote).push_back(lb::EndpointInfo{w, inst->id, rt ? &rt->load : nullptr});
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

std::shared_ptr<RoutingTable> build_routing_table(const registry::Registry& reg, const conf::Config& cfg,
                                                  const RoutingTable* prev, const registry::Registry::Dirty* dirty,
                                                  const health::Runtime* runtime, int64_t now_ms) {
  auto t = std::make_shared<RoutingTable>();
  t->index = reg.index();
  const bool incremental = prev && dirty && !dirty->all;
  for (const auto& [name, svc] : reg.services()) {
    if (incremental && !dirty->services.count(name)) {
      auto it = prev->services.find(name);
      if (it != prev->services.end()) {
        t->services[name] = it->second;
        continue;
      }
    }
    t->services[name] = make_upstreams(svc, {}, runtime, cfg.zone, now_ms);
  }

  auto add_route = [&](RouteEntry r) {
    r.host = http::normalize_host(r.host);
    auto sit = reg.services().find(r.service);
    if (sit != reg.services().end()) r.upstreams = r.tags.empty() ? t->services[r.service] : make_upstreams(sit->second, r.tags, runtime, cfg.zone, now_ms);
    t->routes.push_back(std::move(r));
  };
  for (const auto& r : cfg.routes) add_route(RouteEntry{r.host, r.path_prefix, r.strip_prefix, r.service, r.tags, nullptr});
  // Routes carried by registrations (registry/route_owner.h states the rule): a config route with the
  // same host and prefix wins, the operator's file being the authority; between registrations of
  // different services, the earliest registered instance's service keeps it.
  // (The registry keeps the carriers by uid: no walk over every instance here.)
  for (const auto& [uid, inst] : reg.route_carriers()) {
    for (const auto& rs : inst->routes) {
      std::string h = http::normalize_host(rs.host);
      bool taken = std::any_of(t->routes.begin(), t->routes.end(),
                               [&](const RouteEntry& e) { return e.host == h && e.path_prefix == rs.path_prefix; });
      if (!taken) add_route(RouteEntry{rs.host, rs.path_prefix, rs.strip_prefix, inst->service, {}, nullptr});
    }
  }
  std::stable_sort(t->routes.begin(), t->routes.end(), [](const RouteEntry& a, const RouteEntry& b) {
    if (a.host.empty() != b.host.empty()) return !a.host.empty();
    return a.path_prefix.size() > b.path_prefix.size();
  });
  return t;
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
