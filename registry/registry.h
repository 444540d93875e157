// The service registry: services (from the config file or first seen in a registration) and
// their instances (static from the config, dynamic from the admin API), leases, drain, and the
// registry index. No libuv: time is passed in.
//
// Threading: one writer, the main loop. Readers on the request path never touch this object; they
// read the immutable routing snapshot built from it (proxy/server/routing_table.h) after each
// change, which the registry announces through its change listener.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <utility>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "conf/config.h"

namespace sy::registry {

enum class Health { kHealthy, kUnhealthy, kUnknown };
enum class Source { kStatic, kDynamic };

// A route carried in a registration: it exists while an instance carrying it exists.
struct RouteSpec {
  std::string host;
  std::string path_prefix;
  bool strip_prefix = false;
  bool operator==(const RouteSpec&) const = default;
};

struct Instance {
  std::string id;
  std::string service;
  conf::Address address;
  bool tls = false;  // reached over TLS ("scheme": "https") even when its service has no tls block
  // "protocol" of its registration: how it is spoken to, whatever its service's protocol says.
  std::optional<conf::UpstreamProtocol> protocol;
  uint32_t weight = 1;
  std::vector<std::string> tags;
  std::map<std::string, std::string> meta;
  std::string zone;
  Source source = Source::kStatic;
  std::vector<RouteSpec> routes;
  bool has_health_check = false;  // a per-instance health_check from a registration
  conf::HealthCheck health_check;
  conf::Millis deregister_critical_after{0};  // 0 = never; else removed once unhealthy this long

  // Lease (dynamic instances only).
  conf::Millis ttl{0};           // 0 = no lease
  int64_t lease_expires_ms = 0;  // monotonic clock
  bool stale = false;            // lease ran out in a mass expiry and was kept (self-preservation)

  bool draining = false;
  Health health = Health::kHealthy;
  std::string health_reason;  // last probe's verdict, for the admin API's "why"
  // The last active probe (the dashboard's "last probe"): when it ended (monotonic ms; 0 = never
  // probed), how long it took, whether it passed. Not persisted, not a change (no index bump).
  int64_t probed_ms = 0;
  uint32_t probe_latency_ms = 0;
  bool probe_ok = false;
  bool warning = false;       // reported "warn" (Consul TTL check): routed, shown as warning
  int64_t critical_since_ms = 0;  // unhealthy since (deregister_critical_after counts from here)

  // Passive health and the circuit breaker (written by health/ through the setters below).
  bool ejected = false;
  int64_t ejected_until_ms = 0;
  uint32_t ejections = 0;
  bool breaker_open = false;
  int64_t breaker_open_until_ms = 0;

  int64_t shared_lease = 0;  // shared registry: the etcd lease this instance's key is attached to

  uint64_t uid = 0;  // never reused: keys per-loop state such as connection pools
  int64_t routable_since_ms = 0;  // became routable (new, recovered): slow start ramps from here

  // Whether new requests may go to it (a stale instance only when no fresh one exists).
  bool routable() const { return !draining && health != Health::kUnhealthy && !ejected && !breaker_open; }
  // Probed healthy, not ejected, breaker closed, lease fresh: what `?healthy=1`, Consul's "passing"
  // and Eureka's "UP" report (drain aside, which each API shows its own way).
  bool in_good_standing() const { return health == Health::kHealthy && !ejected && !breaker_open && !stale; }
  const char* state_name() const;
};

// What a registration asked for; the registry fills in lease times and uid.
struct Registration {
  std::string service;
  std::string id;
  conf::Address address;
  bool tls = false;  // "scheme": "https" (or "protocol": "h2")
  std::optional<conf::UpstreamProtocol> protocol;  // "protocol"; none: the service's
  uint32_t weight = 1;
  std::vector<std::string> tags;
  std::map<std::string, std::string> meta;
  std::string zone;
  conf::Millis ttl{0};  // 0 = the registry's default
  bool leased = true;   // false: no TTL (catalog registrations by plain services that never heartbeat)
  std::vector<RouteSpec> routes;
  bool has_health_check = false;
  conf::HealthCheck health_check;
  conf::Millis deregister_critical_after{0};  // 0 = never
  bool draining = false;  // stored documents only (restore()); put() leaves an instance's drain alone
  int64_t written_at_ms = 0;  // shared registry: wall-clock ms of the write (sync lag); 0 = not sent
};

struct Service {
  conf::Service cfg;
  bool in_config = false;  // defined in the config file (kept when its last instance leaves)
  std::map<std::string, Instance> instances;
  std::vector<int64_t> recent_expiries;  // lease expiries within the last TTL window
  // Shared registry: what the instances expired within the window were registered with, so a
  // mass expiry can keep them all (stale), not only those after the verdict.
  std::vector<std::pair<int64_t, Registration>> recently_expired;
};

struct Limits {
  size_t max_instances_per_service = 10000;
  size_t max_instances_total = 100000;
};

class Registry {
 public:
  // Told after every change: the service that changed, or nullptr when any may have.
  using Listener = std::function<void(const std::string* service)>;
  using Logger = std::function<void(const std::string&)>;

  Registry() = default;
  Registry(const Registry&) = delete;  // the lease index points into this object's instances
  Registry& operator=(const Registry&) = delete;

  void set_listener(Listener l) { listener_ = std::move(l); }
  void set_logger(Logger l) { logger_ = std::move(l); }
  void set_default_ttl(conf::Millis ttl) { default_ttl_ = ttl; }
  void set_limits(Limits l) { limits_ = l; }
  // With an active prober, instances that have a health check start `unknown` until probed
  // healthy. Without one (this build: probes arrive with health/), they start healthy.
  void set_probing(bool enabled) { probing_ = enabled; }

  // Replaces config-defined services and static instances; dynamic instances stay. Returns a
  // human-readable list of what changed.
  std::vector<std::string> apply_config(const conf::Config& c);

  // kStatic: the id belongs to an instance from the config file, which only the file (and a
  // reload) may change; nothing is changed.
  enum class PutResult { kCreated, kUpdated, kServiceFull, kRegistryFull, kStatic };
  PutResult put(const Registration& r, int64_t now_ms);
  bool remove(const std::string& service, const std::string& id);
  bool heartbeat(const std::string& service, const std::string& id, int64_t now_ms);
  bool set_drain(const std::string& service, const std::string& id, bool enabled);
  bool set_health(const std::string& service, const std::string& id, Health h, const std::string& reason);
  // A probe ended (before set_health): recorded for the admin views, changes nothing routed.
  void note_probe(const std::string& service, const std::string& id, bool ok, uint32_t latency_ms, int64_t now_ms);
  bool set_ejected(const std::string& service, const std::string& id, bool ejected, int64_t until_ms, uint32_t ejections);
  bool set_breaker_open(const std::string& service, const std::string& id, bool open, int64_t until_ms);

  // A health verdict reported by the instance itself (Consul TTL check updates): `warning` keeps it
  // routed but says so.
  bool set_reported_health(const std::string& service, const std::string& id, Health h, bool warning,
                           const std::string& reason);
  // Removes instances unhealthy for longer than their deregister_critical_after. Cost follows the
  // instances that are both unhealthy and opted in, not the registry.
  void reap_critical(int64_t now_ms);

  // Removes instances whose lease ran out; a mass expiry keeps them as stale instead (each
  // through changed(), as every mutation).
  // Returns the earliest next expiry (ms) or -1 when no lease is running.
  int64_t expire(int64_t now_ms);

  const Instance* find(const std::string& service, const std::string& id) const;
  // Dynamic instances with this id, in any service (Consul and Eureka name instances by id alone).
  std::vector<const Instance*> find_by_id(const std::string& id) const;
  const std::map<std::string, Service>& services() const { return services_; }
  // Instances whose registration carries routes, by uid (registration order): what the routing
  // snapshot reads for registration routes, without a walk over every instance.
  const std::map<uint64_t, const Instance*>& route_carriers() const { return route_carriers_; }
  uint64_t index() const { return index_; }
  // The index of the last change to this service (≥ 1; kept a while after the service is gone, so
  // a blocking query on it learns that it went). Consul's per-service X-Consul-Index.
  uint64_t service_index(const std::string& service) const;
  size_t total_instances() const { return total_; }

  // Bumps the index and tells the listener; every mutation ends here. With a service and an id,
  // only that instance is marked (health runtimes and probe sessions look at it alone; the
  // service's routing is rebuilt); with a service only, every instance of it is; without,
  // everything is.
  void changed();
  void changed(const std::string& service);
  void changed(const std::string& service, const std::string& id);

  // What changed since the last call: lets the routing snapshot rebuild only those services, and
  // the health runtime and prober look only at the instances that changed.
  struct Dirty {
    bool all = false;
    std::set<std::string> services;  // routing rebuilt for these
    std::set<std::string> whole;     // of those, the ones where any instance may have changed
    std::map<std::string, std::set<std::string>> instances;  // else: the ids that changed
    bool whole_service(const std::string& s) const { return all || whole.count(s) > 0; }
    // The changed ids of a service not in `whole` (empty: only its routing needs a rebuild).
    const std::set<std::string>& ids(const std::string& s) const {
      static const std::set<std::string> none;
      auto it = instances.find(s);
      return it == instances.end() ? none : it->second;
    }
  };
  Dirty take_dirty() { return std::exchange(dirty_, Dirty{}); }
  // Asks for a rebuild of one service's routing without a registry change (slow-start ramps).
  void touch(const std::string& service) { dirty_.services.insert(service); }
  // The clock used to stamp routable_since_ms on changes that make an instance routable.
  void set_clock(std::function<int64_t()> now_ms) { now_ms_ = std::move(now_ms); }

  // Dynamic instances whose registration changed in a way that is persisted (registered, updated,
  // drained, removed) since the last call: what the journal writes, once per loop turn.
  std::vector<std::pair<std::string, std::string>> take_persist_dirty() {
    std::vector<std::pair<std::string, std::string>> out(persist_dirty_.begin(), persist_dirty_.end());
    persist_dirty_.clear();
    return out;
  }

  // ---- shared registry (registry.backend: etcd) ----
  // Shared: leases run in the store, not here (expire() finds nothing), and dynamic instances
  // change through the apply_* calls below as the store's watch reports them.
  void set_shared(bool shared) { shared_ = shared; }
  bool shared() const { return shared_; }
  // A registration as the store holds it (a watch event or a full read): creates or replaces the
  // instance, drain included, with no limit check (the store has accepted it already) and without
  // marking it for writing back. False when the instance already read exactly so (an echo of this
  // proxy's own write): nothing changes, the index stays.
  bool apply_remote(const Registration& r, int64_t lease, int64_t now_ms);
  // Shared: heartbeats renew leases in the store; what this turn's heartbeats asked to renew.
  std::vector<int64_t> take_renewals() { return std::exchange(renewals_, {}); }
  // The store deleted the key (a deregistration through any proxy). Not written back.
  bool remove_remote(const std::string& service, const std::string& id);
  // The store's lease id for an instance this proxy wrote (its write was committed).
  void set_shared_lease(const std::string& service, const std::string& id, int64_t lease);
  // The store deleted the key because its lease ran out: removed, or kept as stale when the
  // service is losing most of its instances at once (self-preservation on what the watch saw;
  // the instances expired just before the verdict are brought back as stale too).
  void lease_lost(const std::string& service, const std::string& id, int64_t now_ms);

  // Restores a dynamic instance from a persisted snapshot (lease restarts at `now_ms`; drain as
  // stored in `r`).
  void restore(const Registration& r, int64_t now_ms);

 private:
  // Where a change comes from: a local call (admin API, expiry; written to the journal or the
  // store) or the store itself (a watch event: never written back). Every mutation takes it
  // explicitly; there is no mode to forget to reset.
  enum class Origin { kLocal, kStore };
  PutResult put_impl(const Registration& r, int64_t now_ms, bool check_limits, Origin origin);
  bool remove_impl(const std::string& service, const std::string& id, Origin origin);
  bool drain_impl(const std::string& service, const std::string& id, bool enabled, Origin origin);
  Instance* find_mutable(const std::string& service, const std::string& id);
  Service& service_for(const std::string& name);
  // The registration's fields onto the instance (put and restore).
  void assign(Instance& inst, const Registration& r, int64_t now_ms) const;
  void drop_service_if_empty(const std::string& name);
  void log(const std::string& s) {
    if (logger_) logger_(s);
  }

  // Lease bookkeeping, so expiry touches only what is due: (expiry time, instance) for every
  // dynamic instance with a running lease (not stale). Instances live in std::map nodes, whose
  // addresses are stable until erased; every erase of a leased instance untracks it first.
  void track_lease(Instance& inst);
  void untrack_lease(Instance& inst);
  void track_routes(const Instance& inst);
  void track_critical(Instance& inst);
  void untrack_critical(Instance& inst);
  void forget(Instance& inst);  // every index entry of an instance about to be erased
  void track_id(const Instance& inst);
  void note_change(const std::string& service);
  // Whether registering `r` would leave `inst` as it is (a client registering again what it
  // registered): such a registration only renews the lease, as a heartbeat does.
  bool unchanged_by(const Instance& inst, const Registration& r) const;
  void mark_persist(const std::string& service, const std::string& id, Origin origin) {
    if (origin == Origin::kLocal) persist_dirty_.emplace(service, id);
  }
  bool shared_ = false;
  std::vector<int64_t> renewals_;
  std::set<std::pair<int64_t, Instance*>> leases_;
  std::set<std::pair<int64_t, Instance*>> critical_;  // (removal time, instance) of opted-in unhealthy ones
  std::map<std::string, uint64_t> service_index_;
  std::multimap<std::string, const Instance*> by_id_;  // dynamic instances by id
  uint64_t all_index_ = 1;  // last change that may have touched every service (config)
  std::set<std::pair<std::string, std::string>> persist_dirty_;
  std::map<uint64_t, const Instance*> route_carriers_;

  std::map<std::string, Service> services_;
  uint64_t index_ = 1;
  uint64_t next_uid_ = 1;
  size_t total_ = 0;
  conf::Millis default_ttl_{30000};
  Limits limits_;
  Dirty dirty_;
  std::function<int64_t()> now_ms_;
  int64_t now() const { return now_ms_ ? now_ms_() : 0; }
  bool probing_ = false;
  Listener listener_;
  Logger logger_;
};

}  // namespace sy::registry
