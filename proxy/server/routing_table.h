// The immutable routing snapshot the request path reads: routes (most specific first) and, per
// service, the routable endpoints with the load-balancing policy already built for them.
// Built on the main loop after every registry change (build_routing_table), published through a
// RoutingTableSlot; the request path reads it with one atomic load. Never modified after it is built.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "conf/config.h"
#include "health/runtime.h"
#include "proxy/lb/policy.h"
#include "proxy/net/tls_config.h"
#include "proxy/ratelimit/limiter.h"
#include "proxy/server/endpoint_list.h"
#include "proxy/http/host.h"
#include "registry/registry.h"

namespace sy::server {

struct Endpoint {
  uint64_t uid = 0;
  std::string id;
  conf::Address address;
  uint32_t weight = 1;
  std::shared_ptr<health::InstanceRuntime> runtime;  // live counters, breaker (may be null in tests)
  bool tls = false;  // registered over TLS (a scheme change is a new uid, so a new Endpoint)
  // Its registration's "protocol" (a change is a new uid too); none: the service's protocol.
  std::optional<conf::UpstreamProtocol> protocol = std::nullopt;
  conf::UpstreamProtocol protocol_in(const conf::Service& svc) const { return protocol ? *protocol : svc.protocol; }
};

// hash_on, parsed once when the config loads (conf/lb_kind.h).
using HashOn = conf::HashOn;

// The instances one route or service may send to, with the policy that chooses among them.
struct Upstreams {
  // Chooses an endpoint: zone-aware when the proxy has a zone (local endpoints first, spilling to
  // the others in proportion to missing local capacity), else the policy alone.
  int pick(const lb::PickContext& ctx) const;

  std::string service;
  std::shared_ptr<const conf::Service> cfg;
  // Shared with the snapshots before and after this one: an instance that did not change keeps its
  // Endpoint, and a chunk of 64 with no change in it is the same chunk (RoutingBuilder).
  EndpointList endpoints;  // zone-aware: the local zone's first, then the others
  std::unique_ptr<lb::Policy> policy;  // over endpoints[0, local_count) (all of them without zones)
  HashOn hash_on;
  // Zone awareness (proxy `zone:` set, instances with zones).
  size_t local_count = 0;
  double local_share = 1.0;  // fraction of requests that stay in the local zone
  std::unique_ptr<lb::Policy> remote_policy;  // over endpoints[local_count, n)
  std::shared_ptr<health::ServiceRuntime> runtime;  // limits, retry budget (may be null in tests)
  // What a policy built over the endpoints reads at pick time (RoutingBuilder; null otherwise).
  std::unique_ptr<lb::EndpointSource> source;
  // Why `endpoints` is empty, for the 503 message.
  bool has_instances = false;
  // Every instance is out (unhealthy, ejected, breaker open): `endpoints` holds them all anyway,
  // least bad first in spirit (Envoy's panic routing): some answers beat none.
  bool panic = false;
};

struct RouteEntry {
  std::string host;  // lower case, no port; "" = any
  std::string path_prefix;
  bool strip_prefix = false;
  std::string service;
  std::vector<std::string> tags;
  std::shared_ptr<const Upstreams> upstreams;  // null when the service has no instances yet
  std::string rate_limit;  // a policy name (rate_limits), "" = none
  std::string rate_key;    // the route's identity for key: route ("host|prefix")
  // That policy's buckets, found once per publish (App::publish) so a request does not look the
  // name up; null: not resolved (the exchange then finds it by name).
  ratelimit::Limiter* limiter = nullptr;
};

// Lets the service map be searched with a string_view (no allocation per request).
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

// Endpoints that left the registry, publish by publish, so workers close their idle pooled
// connections to exactly those instead of walking the whole snapshot. Each table's log links to
// the logs of the tables before it (a chain of at most kDepth; a worker further behind walks the
// snapshot once).
struct GoneLog {
  static constexpr uint32_t kDepth = 32;
  uint64_t seq = 0;    // the table that published these
  uint32_t depth = 1;  // links in the chain from here
  std::vector<uint64_t> uids;
  std::shared_ptr<const GoneLog> prev;
};

struct RoutingTable {
  uint64_t index = 0;
  uint64_t seq = 0;  // publish number (App), 0 = not published through App (tests)
  std::shared_ptr<const GoneLog> gone;  // null: unknown (walk)
  // The config this snapshot was built from: workers take client limits and timeouts from it, so
  // a reload reaches every worker with the same atomic load as the routes.
  std::shared_ptr<const conf::Config> config;
  std::shared_ptr<const net::TlsContexts> tls;  // the same, for TLS (null: nothing speaks TLS)
  std::shared_ptr<const ratelimit::Limiters> rate_limits;  // the config's policies (null: none)
  std::vector<RouteEntry> routes;  // sorted: exact host before any host, longer prefix first
  std::unordered_map<std::string, std::shared_ptr<const Upstreams>, StringHash, std::equal_to<>> services;

  // Routing (README.md, "Routing"): explicit routes, then Host = service name. `host` without port.
  // Returns the upstreams (may be null: route to a service with nothing registered) and the
  // matched route (null for Host routing); false when nothing matches (404).
  bool route(std::string_view host, std::string_view path, const RouteEntry*& route,
             const Upstreams*& upstreams) const;
};

// Builds the snapshots, on the main loop, keeping between publishes what lets a change cost its own
// instances rather than its whole service: per service, the Endpoint of every instance (made again
// only when that instance changed) and, where the policy allows it (round_robin, least_request,
// random, ewma without zones or slow start), the tiers of routable instances, patched per changed
// instance. Ring hash and Maglev (tables over every endpoint), zones and slow start rebuild the
// service's upstreams from the registry on each change; services not named in `dirty` reuse their
// Upstreams from `prev` whatever the policy.
class RoutingBuilder {
 public:
  // Ring hash and Maglev tables of a service of at least kThrottleFrom instances are rebuilt at most
  // once per kTableRebuildMs: a change in between leaves the service `pending` (its old upstreams
  // stay published) until a later build() finds the time passed. App holds the acknowledgements
  // while anything is pending, so an acknowledged change is still a routed one.
  static constexpr int64_t kTableRebuildMs = 100;
  static constexpr size_t kThrottleFrom = 1000;
  bool pending() const { return !pending_.empty(); }
  void set_throttle(bool on) { throttle_ = on; }  // off: every change is built at once (shutdown)

  std::shared_ptr<RoutingTable> build(const registry::Registry& reg, const conf::Config& cfg, const RoutingTable* prev,
                                      const registry::Registry::Dirty* dirty, const health::Runtime* runtime, int64_t now_ms);

 private:
  // Tiers of a service's instances, disjoint: healthy and fresh; routable otherwise (not yet probed,
  // stale); not routable but not draining (panic routing's last resort). Draining ones are in none.
  static constexpr int kTiers = 3;
  struct Member {
    std::shared_ptr<const Endpoint> endpoint;
    int tier = -1;
    size_t pos = 0;  // in tiers[tier]
  };
  struct ServiceState {
    std::unordered_map<std::string, Member> members;  // by instance id
    EndpointList tiers[kTiers];
    std::map<uint32_t, size_t> weights[kTiers];  // per tier: how many endpoints have each weight
  };
  static bool patchable(const conf::Service& svc, const conf::Config& cfg);
  // The service's state brought up to date: the changed ids patched, or (whole) every instance.
  ServiceState& refresh(const registry::Service& svc, const registry::Registry::Dirty* dirty, bool whole,
                        const health::Runtime* runtime);
  void place(ServiceState& st, const std::string& id, const registry::Instance* inst, const health::Runtime* runtime);
  static void link(ServiceState& st, Member& m, int tier);
  static void unlink(ServiceState& st, Member& m);
  std::shared_ptr<const Upstreams> upstreams_of(const registry::Service& svc, ServiceState& st,
                                                const health::Runtime* runtime) const;
  std::unordered_map<std::string, ServiceState> state_;
  std::unordered_map<std::string, int64_t> table_built_ms_;  // throttled services: last table build
  std::set<std::string> pending_;                            // changed, table not rebuilt yet
  bool throttle_ = true;
};

// One snapshot from scratch (tests; App keeps a RoutingBuilder).
std::shared_ptr<RoutingTable> build_routing_table(const registry::Registry& reg, const conf::Config& cfg,
                                                  const RoutingTable* prev = nullptr,
                                                  const registry::Registry::Dirty* dirty = nullptr,
                                                  const health::Runtime* runtime = nullptr, int64_t now_ms = 0);

// Slow start: the share of its weight an instance routable since `since_ms` gets at `now_ms`
// (from 10 % up to 100 % over the window).
double slow_start_factor(int64_t since_ms, int64_t now_ms, conf::Millis window);


// Single writer (main loop), many readers (workers). Readers poll `generation()` (one acquire
// load per request) and take the pointer, under the lock, only when it moved: once per publish per
// worker, never per request (Worker::snapshot()). A plain mutex rather than
// std::atomic<std::shared_ptr>: libstdc++ 12's version unlocks its internal spin bit with relaxed
// ordering, which ThreadSanitizer rightly cannot prove safe, and it buys nothing at this rate.
class RoutingTableSlot {
 public:
  std::shared_ptr<const RoutingTable> load() const {
    std::lock_guard<std::mutex> lock(mu_);
    return slot_;
  }
  void store(std::shared_ptr<const RoutingTable> t) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      slot_.swap(t);
    }
    gen_.fetch_add(1, std::memory_order_release);
    // `t` (the previous snapshot) is released here, outside the lock.
  }
  uint64_t generation() const { return gen_.load(std::memory_order_acquire); }

 private:
  mutable std::mutex mu_;
  std::shared_ptr<const RoutingTable> slot_;
  std::atomic<uint64_t> gen_{0};
};

}  // namespace sy::server
