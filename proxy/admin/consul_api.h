// Consul's agent, health and catalog HTTP API on the admin listener (docs/consul-eureka.md), so
// services written for a Consul client register unchanged and tools that discover through Consul (Prometheus consul_sd_configs, Traefik, fabio) discover
// through switchyard. A Consul registration is translated into switchyard's registration document
// and admitted like any other (AdminApi::admit); reads render registry instances in Consul's shapes.
// Blocking queries (?index=&wait=) wait per service (parked by the endpoint gate): a change wakes
// only the watchers of the service it touched (and those of the whole catalog). Runs on the main loop.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>

#include "proxy/admin/admin_api.h"
#include "proxy/admin/watchers.h"

namespace sy::admin {

// A Consul service definition (the body of PUT /v1/agent/service/register) as switchyard's
// registration, plus what its TTL check says.
struct ConsulRegistration {
  registry::Registration reg;
  bool has_ttl = false;
  std::string ttl_status = "critical";  // a TTL check's first status (Consul's default: critical)
  std::string ttl_check_id;             // its CheckID, when the client chose one
};
// false: `error` holds the message Consul clients get (a 400). `peer_ip`: the Address when the body has none.
bool decode_consul_registration(const std::string& body, const std::string& peer_ip, ConsulRegistration& out,
                                registry::Error& error);

class ConsulApi {
 public:
  explicit ConsulApi(AdminApi& api) : api_(api) {}

  // Consul's rows in the endpoint table (the family owns /v1/agent/, /v1/health/, /v1/catalog/
  // — not switchyard's own /v1/catalog —, /v1/kv/, /v1/status/); blocking reads are parked by the
  // gate.
  void add_endpoints(EndpointTable& t);

 private:
  AdminResponse registration(const AdminRequest& req);
  AdminResponse deregistration(const std::string& id);
  AdminResponse check_update(const std::string& check_id, const std::string& status, const std::string& output);
  AdminResponse maintenance(const AdminRequest& req, const std::string& id);
  // The service a TTL check id belongs to (its instance), or nullptr.
  const registry::Instance* instance_of_check(const std::string& check_id);

  AdminApi& api_;
  std::map<std::string, std::pair<std::string, std::string>> checks_;  // custom CheckID → (service, id)
};

}  // namespace sy::admin
