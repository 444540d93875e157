// Consul's agent, health and catalog HTTP API on the admin listener (docs/consul-eureka.md), so
// services written for a Consul client register unchanged and tools that discover through Consul (Prometheus consul_sd_configs, Traefik, fabio) discover
// through switchyard. A Consul registration is translated into switchyard's registration document
// and admitted like any other (AdminApi::admit); reads render registry instances in Consul's shapes.
// Blocking queries (?index=&wait=) wait per service: a change wakes only the watchers of the
// service it touched (and those of the whole catalog). Runs on the main loop.
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
// "" or the message Consul clients get with a 400. `peer_ip`: the Address when the body has none.
std::string decode_consul_registration(const std::string& body, const std::string& peer_ip, ConsulRegistration& out);

class ConsulApi {
 public:
  explicit ConsulApi(AdminApi& api) : api_(api) {}

  // /v1/agent/..., /v1/health/..., /v1/catalog/... (not switchyard's own /v1/catalog), /v1/kv/...,
  // /v1/status/...
  static bool owns(const std::string& path);
  // Calls that change the registry, whatever their method (Consul clients deregister with GET).
  // `path` decoded.
  static bool mutating(const std::string& path);
  AdminResponse route(AdminConn* conn, AdminRequest& req, bool& deferred);

  void on_changed(const std::string* service);
  void sweep(int64_t now_ms);
  void forget(AdminConn* conn);
  size_t waiting() const { return waiters_.size(); }

 private:
  AdminResponse read(const AdminRequest& req);  // a read call's answer now
  AdminResponse with_index(AdminResponse r, const std::string& key) const;
  AdminResponse registration(const AdminRequest& req);
  AdminResponse deregistration(const std::string& id);
  AdminResponse check_update(const std::string& check_id, const std::string& status, const std::string& output);
  AdminResponse maintenance(const AdminRequest& req, const std::string& id);
  // The index a read of `key` ("" = the whole catalog, else a service) answers with.
  uint64_t index_of(const std::string& key) const;
  // The service a TTL check id belongs to (its instance), or nullptr.
  const registry::Instance* instance_of_check(const std::string& check_id);

  AdminApi& api_;
  Watchers waiters_;                                                  // by what they watch ("" = catalog)
  std::map<std::string, std::pair<std::string, std::string>> checks_;  // custom CheckID → (service, id)
};

}  // namespace sy::admin
