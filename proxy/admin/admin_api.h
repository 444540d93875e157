// The admin API (docs/admin-api.md): registry calls, catalog, long poll, reload, /metrics, /healthz,
// and the gate every admin call passes (endpoints.h): the native rows are here, Consul's and
// Eureka's in their own files. Validates every input field and answers errors naming it, in the
// caller's family's shape. Runs on the main loop.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "conf/config.h"
#include "proxy/admin/admin_conn.h"
#include "proxy/admin/dashboard.h"
#include "proxy/admin/endpoints.h"
#include "proxy/admin/events.h"
#include "proxy/admin/metrics.h"
#include "proxy/admin/watchers.h"
#include "proxy/net/random.h"
#include "registry/error.h"
#include "registry/registry.h"

namespace sy::admin {

// What the API needs from the application around it.
struct AdminHooks {
  std::function<int64_t()> now_ms;                    // monotonic milliseconds
  std::function<std::string(std::string&)> reload;    // "" ok (fills summary JSON) or errors
  std::function<bool()> ready;
  std::function<std::vector<conf::Address>()> own_addresses;
  // True: answers to changes are held until the end of the loop turn (App::on_check publishes the
  // routing snapshot and writes the journal once for all of the turn's changes, then
  // release_persisted() sends them). False: published at once (before_ack), answered at once.
  std::function<bool()> persistence_enabled;
  std::function<void()> before_ack;              // publish the routing snapshot before a change is acknowledged
  // An answer is now held for the end of the loop turn: the loop must reach that end without
  // waiting for I/O (a pipelined request parsed in a write callback has no I/O to wake it).
  std::function<void()> on_held;
  std::function<const conf::Config&()> config;  // current config (route conflicts)
  std::function<void()> before_scrape;           // gauges read from live state, per scrape
  std::function<std::shared_ptr<const ratelimit::Limiters>()> rate_limits;  // the policies in force
  // Shared registry (registry.backend: etcd). `writable` false: the store is unreachable and every
  // mutating call answers 503 registry_unavailable. `renew`: heartbeats renew leases in the store;
  // `done` gets 200 (renewed), 404 (lease gone: register again) or 503.
  std::function<bool()> writable;
  std::function<std::string()> registry_status;  // /readyz's "registry": embedded, etcd: up, ...
  std::function<void(std::vector<int64_t> leases, std::function<void(int status)> done)> renew;
  // The dashboard (dashboard.h): an instance's runtime metrics and requests in flight (null when
  // it has none yet), and the banners / registry status of the overview.
  std::function<const health::InstanceMetrics*(uint64_t uid, uint32_t& active)> instance_runtime;
  std::function<nlohmann::json()> status;
  std::function<int64_t()> unix_ms;  // wall clock, for event times
};

class ConsulApi;
class EurekaApi;

class AdminApi final : public AdminHandler {
 public:
  AdminApi(registry::Registry& reg, Metrics& metrics, AdminHooks hooks, std::string token);
  ~AdminApi() override;

  void handle(AdminConn* conn, AdminRequest& req) override;
  void forget(AdminConn* conn) override;

  // After a registry change (of `service`, or of any when nullptr): answer long polls whose index
  // has passed.
  void on_registry_changed(const std::string* service);
  // Periodic: answer long polls whose wait ran out.
  void sweep(int64_t now_ms);
  // Nothing of this loop turn needs the disk (or the store): send the held acknowledgements.
  // (Answers that wait for a write go through take_held() / release_held().)
  void release_persisted();
  bool has_unpersisted() const { return !unpersisted_.empty(); }
  // The same in two steps, for a store that answers later (etcd): this turn's held answers become
  // one batch, released when the store has answered (`status` 0: as they are; else that error).
  uint64_t take_held();
  void release_held(uint64_t batch, int status, const std::string& code, const std::string& message);
  void set_token(std::string t) { token_ = std::move(t); }
  void set_read_token(bool on) { read_token_ = on; }
  // An event for GET /v1/events (events.h): encoded once, sent to every watcher.
  // `service`: the service it is about when the sentence names no "service/instance".
  void publish_event(std::string type, std::string message, std::string service = "");
  // Periodic (the app's tick): stream heartbeats, the dashboard's traffic readings.
  void tick(int64_t now_ms);

  // ---- shared with the compatible APIs (consul_api.cc, eureka_api.cc) ----
  // The one way a registration enters the registry, whichever API it came through: the loop
  // check (not one of our own listeners), the limits, Registry::put. false: `why` says.
  bool admit(const registry::Registration& r, registry::Registry::PutResult& res, registry::Error& why);
  // The admin token in any of the forms the APIs use: "Authorization: Bearer <token>", HTTP Basic
  // with the token as password (Eureka clients), "X-Consul-Token: <token>" or "?token=" (Consul).
  bool authorized(const AdminRequest& req) const;
  bool token_required() const { return !token_.empty(); }
  // Sends an answer. One that follows a registry change is held until the change is routed and
  // on disk (the end of this loop turn).
  void finish(AdminConn* conn, AdminResponse r, bool changed);
  registry::Registry& registry() { return reg_; }
  const AdminHooks& hooks() const { return hooks_; }
  const EndpointTable& endpoints() const { return table_; }
  // The index a read watching `key` answers with ("" = the whole registry, else a service).
  uint64_t index_of(const std::string& key) const;

 private:
  void add_endpoints();  // the native API's rows and the seed catalog's
  void wake(Watchers::Answer& a);  // a parked read answered
  AdminResponse service_view(const std::string& service, const AdminRequest& req);
  AdminResponse services_list();
  AdminResponse endpoint_list();
  AdminResponse instance_delete(const std::string& service, const std::string& id);
  AdminResponse instance_drain(const std::string& service, const std::string& id, const std::string& body);
  AdminResponse register_instance(const std::string& service, std::string id, const std::string& body, bool generated,
                                  bool leased = true);
  AdminResponse catalog_post(const std::string& body);
  AdminResponse catalog_get();
  AdminResponse rate_limits_view(const AdminRequest& req);
  AdminResponse instance_view(const std::string& service, const std::string& id);
  void watch_events(Call& c);

  registry::Registry& reg_;
  Metrics& metrics_;
  AdminHooks hooks_;
  std::string token_;
  bool read_token_ = false;
  EndpointTable table_;
  EventStream events_;
  std::unique_ptr<Dashboard> dashboard_;
  size_t native_ = 0;  // the native family's index in table_
  Watchers waiters_;   // parked reads of every family, by what they watch
  std::vector<std::pair<AdminConn*, AdminResponse>> unpersisted_;
  std::map<uint64_t, std::vector<std::pair<AdminConn*, AdminResponse>>> held_;  // by batch
  uint64_t next_batch_ = 0;
  uint64_t id_counter_ = 0;
  net::Random rng_{static_cast<uint64_t>(std::random_device{}())};  // generated instance ids
  std::unique_ptr<ConsulApi> consul_;
  std::unique_ptr<EurekaApi> eureka_;
};

}  // namespace sy::admin
