// AdminApi: request routing, validation and JSON answers.
#include "proxy/admin/admin_api.h"

#include <algorithm>
#include <charconv>
#include <nlohmann/json.hpp>

#include "proxy/admin/consul_api.h"
#include "proxy/admin/eureka_api.h"
#include "proxy/admin/ui_files.h"
#include "proxy/http/base64.h"
#include "registry/codec.h"
#include "registry/route_owner.h"
#include "version.h"

namespace sy::admin {

using nlohmann::json;

namespace {

AdminResponse json_response(int status, const json& j) {
  AdminResponse r;
  r.status = status;
  r.body = j.dump(2) + "\n";
  return r;
}

AdminResponse error(int status, const std::string& code, const std::string& message) {
  return json_response(status, json{{"error", code}, {"message", message}});
}

// One definition of what a name is, shared with the stored documents (registry/codec.h).
bool valid_name(const std::string& s) { return registry::valid_service_name(s); }
bool valid_id(const std::string& s) { return registry::valid_instance_id(s); }

bool constant_time_equal(const std::string& a, const std::string& b) {
  // Compares every byte whatever the content; the length difference is folded in too.
  unsigned char diff = static_cast<unsigned char>(a.size() != b.size());
  size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

// The instance view (registry/codec.h), with the health check that probes it.
json instance_json(const registry::Registry& reg, const registry::Instance& inst) {
  const conf::HealthCheck* service_check = nullptr;
  auto it = reg.services().find(inst.service);
  if (it != reg.services().end() && it->second.cfg.has_health_check) service_check = &it->second.cfg.health_check;
  return registry::encode_instance(inst, service_check);
}

// A browser says where a request comes from: `Sec-Fetch-Site` (cross-site / same-site / same-origin
// / none), and `Origin` on every POST/PUT/DELETE. Clients that are not browsers send neither.
bool cross_site(const AdminRequest& req) {
  const std::string site = req.header("sec-fetch-site");
  if (site == "cross-site" || site == "same-site") return true;
  const std::string origin = req.header("origin");
  if (origin.empty()) return false;
  if (origin == "null") return true;  // a sandboxed frame or a file: page
  const size_t scheme = origin.find("://");
  const std::string host = scheme == std::string::npos ? origin : origin.substr(scheme + 3);
  return host != req.header("host");
}

}  // namespace

AdminApi::AdminApi(registry::Registry& reg, Metrics& metrics, AdminHooks hooks, std::string token)
    : reg_(reg), metrics_(metrics), hooks_(std::move(hooks)), token_(std::move(token)),
      events_(hooks_.unix_ms ? hooks_.unix_ms() : 0),
      consul_(std::make_unique<ConsulApi>(*this)), eureka_(std::make_unique<EurekaApi>(*this)) {
  Dashboard::Hooks dh;
  dh.now_ms = hooks_.now_ms;
  dh.instance_json = [this](const registry::Instance& inst) { return instance_json(reg_, inst); };
  dh.instance_runtime = hooks_.instance_runtime;
  dh.status = hooks_.status;
  dh.config = hooks_.config;
  dh.events_last_id = [this] { return events_.last_id(); };
  dh.token_required = [this] { return token_required(); };
  dashboard_ = std::make_unique<Dashboard>(reg_, metrics_, std::move(dh));
  add_endpoints();
  consul_->add_endpoints(table_);
  eureka_->add_endpoints(table_);
}

AdminApi::~AdminApi() = default;

bool AdminApi::authorized(const AdminRequest& req) const {
  if (token_.empty()) return true;
  const std::string h = req.header("authorization");
  std::string given;
  if (h.rfind("Bearer ", 0) == 0) {
    given = h.substr(7);
  } else if (h.rfind("Basic ", 0) == 0) {
    const std::string user_pass = http::base64_decode(h.substr(6));
    given = user_pass.substr(user_pass.find(':') == std::string::npos ? user_pass.size() : user_pass.find(':') + 1);
  } else if (!req.header("x-consul-token").empty()) {
    given = req.header("x-consul-token");
  } else {
    given = req.query_param("token");
  }
  return constant_time_equal(given, token_);
}

void AdminApi::handle(AdminConn* conn, AdminRequest& req) {
  // The gate: every check a call needs, in one order, before any handler runs.
  const Family& owner = table_.family_of(req.path);
  auto answer = [&](const Family& f, AdminResponse r, const std::string& key) {
    if (f.decorate) f.decorate(r, key);
    finish(conn, std::move(r), false);
  };
  if (owner.precheck)
    if (auto r = owner.precheck(req)) return answer(owner, std::move(*r), "");
  EndpointTable::Match m = table_.match(req.method, req.path);
  if (!m.endpoint) {
    if (m.allow == 0) return answer(owner, owner.error(404, "not_found", "no " + owner.title + " endpoint " + req.method + " " + req.path + " (" + owner.docs + " lists them; GET /v1/ too)"), "");
    AdminResponse r = owner.error(405, "method_not_allowed", "method " + req.method + " not allowed on " + req.path + "; use " + EndpointTable::methods_text(m.allow));
    r.headers.emplace_back("Allow", EndpointTable::allow_header(m.allow));
    return answer(owner, std::move(r), "");
  }
  const Endpoint& ep = *m.endpoint;
  const Family& fam = table_.family(ep.family);
  if ((ep.access != Access::kRead || (read_token_ && !ep.public_read)) && !authorized(req)) return answer(fam, fam.unauthorized(), "");
  // A change asked for by a page of another site (a form or script elsewhere posting here through
  // the user's browser): refused whatever the token, so no page but our own dashboard can act.
  if (ep.access != Access::kRead && cross_site(req))
    return answer(fam, fam.error(403, "cross_site", "a change requested by a page of another origin (" + req.header("origin") + ") is refused"), "");
  // Shared registry away: refuse changes rather than make ones no other proxy will see.
  if (ep.access == Access::kRegistry && hooks_.writable && !hooks_.writable())
    return answer(fam, fam.error(503, "registry_unavailable", "the shared registry (etcd) cannot be reached; routing continues on the last registry seen; retry later"), "");
  if (req.body.size() > ep.body_limit())
    return answer(fam, fam.error(413, "body_too_large", "request body over " + std::to_string(ep.body_limit() / 1024) + " KiB, the limit of " + req.method + " " + ep.pattern), "");
  Call call{conn, req, std::move(m.args)};
  if (ep.stream) return ep.stream(call);
  std::string key;
  if (ep.watch) {
    // A blocking read: answered now when the watched index has passed the caller's, else parked
    // until it does or the wait runs out (wake()).
    const std::optional<std::string> watched = ep.watch(call);
    if (watched) {
      key = *watched;
      LongPoll poll;
      const auto bad = LongPoll::parse(req, fam.parse_wait, poll);
      if (bad != LongPoll::Error::kNone) return answer(fam, fam.bad_poll(bad == LongPoll::Error::kIndex ? 0 : 1, req), key);
      if (poll.asked && index_of(key) <= poll.index && poll.wait_ms > 0) {
        waiters_.add(key, {conn, req, poll.index, hooks_.now_ms() + poll.wait_ms, &ep, std::move(call.args)});
        return;
      }
    }
  }
  // A call that changed the registry (whatever its method: Consul clients deregister with GET) is
  // acknowledged once the change is routed and on disk.
  const uint64_t before = reg_.index();
  AdminResponse r = ep.handler(call);
  if (fam.decorate) fam.decorate(r, key);
  std::vector<int64_t> renewals = reg_.take_renewals();
  if (!renewals.empty() && hooks_.renew && r.status < 300) {
    // A heartbeat renews the lease in the shared store: answer once the store has.
    const uint64_t batch = ++next_batch_;
    held_[batch].emplace_back(conn, std::move(r));
    hooks_.renew(std::move(renewals), [this, batch](int status) {
      if (status == 200) release_held(batch, 0, "", "");
      else if (status == 404) release_held(batch, 404, "not_found", "the instance's lease is gone from the shared registry; register again");
      else release_held(batch, 503, "registry_unavailable", "the shared registry (etcd) cannot be reached; retry later");
    });
    return;
  }
  finish(conn, std::move(r), reg_.index() != before);
}

uint64_t AdminApi::index_of(const std::string& key) const { return key.empty() ? reg_.index() : reg_.service_index(key); }

void AdminApi::wake(Watchers::Answer& a) {
  auto& [key, w] = a;
  Call call{w.conn, w.req, std::move(w.args)};
  AdminResponse r = w.endpoint->handler(call);
  const Family& fam = table_.family(w.endpoint->family);
  if (fam.decorate) fam.decorate(r, key);
  finish(w.conn, std::move(r), false);
}

uint64_t AdminApi::take_held() {
  const uint64_t batch = ++next_batch_;
  if (!unpersisted_.empty()) held_[batch] = std::exchange(unpersisted_, {});
  return batch;
}

void AdminApi::release_held(uint64_t batch, int status, const std::string& code, const std::string& message) {
  auto it = held_.find(batch);
  if (it == held_.end()) return;
  auto answers = std::move(it->second);
  held_.erase(it);
  for (auto& [conn, r] : answers) {
    if (status != 0) {
      AdminResponse e = error(status, code, message);
      for (const auto& h : r.headers)
        if (h.first.rfind("X-", 0) == 0) e.headers.push_back(h);
      conn->respond(e);
    } else {
      conn->respond(r);
    }
  }
}

void AdminApi::finish(AdminConn* conn, AdminResponse r, bool changed) {
  r.headers.emplace_back("X-Switchyard-Index", std::to_string(reg_.index()));
  // An acknowledged change must be routed (and on disk) first: hold the answer until the end of
  // this loop turn, when one publish and one journal write cover every change of the turn.
  if (changed && hooks_.persistence_enabled && hooks_.persistence_enabled()) {
    unpersisted_.emplace_back(conn, std::move(r));
    if (hooks_.on_held) hooks_.on_held();
    return;
  }
  if (changed && hooks_.before_ack) hooks_.before_ack();
  conn->respond(r);
}

void AdminApi::release_persisted() {
  auto held = std::exchange(unpersisted_, {});
  for (auto& [conn, r] : held) conn->respond(r);
}

void AdminApi::forget(AdminConn* conn) {
  waiters_.forget(conn);
  events_.forget(conn);
  std::erase_if(unpersisted_, [&](const auto& p) { return p.first == conn; });
  for (auto& [batch, answers] : held_) std::erase_if(answers, [&](const auto& p) { return p.first == conn; });
}

void AdminApi::on_registry_changed(const std::string* service) {
  if (waiters_.empty()) return;
  auto index_of = [&](const std::string& k) { return this->index_of(k); };
  // Only the watchers of this service, and those of the whole registry ("", Consul's catalog).
  static const std::string kWhole;
  auto woken = waiters_.take_changed(service, index_of);
  if (service) {
    auto whole = waiters_.take_changed(&kWhole, index_of);
    woken.insert(woken.end(), std::make_move_iterator(whole.begin()), std::make_move_iterator(whole.end()));
  }
  for (auto& a : woken) wake(a);
}

void AdminApi::sweep(int64_t now_ms) {
  if (waiters_.empty()) return;
  for (auto& a : waiters_.take_due(now_ms)) wake(a);
}

void AdminApi::add_endpoints() {
  Family f;
  f.name = "native";
  f.title = "admin";
  f.docs = "docs/admin-api.md";
  f.error = error;
  f.unauthorized = [] {
    AdminResponse r = error(401, "unauthorized", "this call needs 'Authorization: Bearer <admin.token>'");
    r.headers.emplace_back("WWW-Authenticate", "Bearer");
    return r;
  };
  f.parse_wait = [](const std::string& w, int64_t& ms) {
    conf::Millis d;
    if (!conf::parse_duration(w, d).empty()) return false;
    ms = d.count();
    return true;
  };
  f.bad_poll = [](int what, const AdminRequest&) {
    return what == 0 ? error(400, "bad_request", "'index' must be a whole number 0 or more, such as 42")
                     : error(400, "bad_request", "'wait' must be a duration such as 30s");
  };
  native_ = table_.add_family(std::move(f));

  // A row of the native family; `service`/`id` captures are checked before the handler runs.
  // `open`: readable without the token even under admin.read_token (Endpoint::public_read).
  auto add = [&](unsigned methods, const char* pattern, Access access, const char* help, auto handler, bool open = false) {
    Endpoint e = Endpoint::row(methods, pattern, access, help, native_, [handler](Call& c) -> AdminResponse {
      if (!c.args.empty() && !valid_name(c.args[0]))
        return error(400, "bad_request", "service name must be 1-128 characters of [A-Za-z0-9._-]");
      if (c.args.size() > 1 && !valid_id(c.args[1]))
        return error(400, "bad_request", "instance id must be 1-128 characters of [A-Za-z0-9._:-]");
      return handler(c);
    });
    e.public_read = open;
    table_.add(std::move(e));
  };
  auto redirect = [](const char* to) {
    AdminResponse r;
    r.status = 302;
    r.content_type = "text/plain; charset=utf-8";
    r.headers.emplace_back("Location", to);
    r.body = std::string("see ") + to + "\n";
    return r;
  };
  add(kGet, "/healthz", Access::kRead, "liveness: 200 while the process runs", [](Call&) { return json_response(200, {{"status", "ok"}}); }, true);
  add(kGet, "/readyz", Access::kRead, "readiness: 200 once the registry is read and while not stopping", [this](Call&) {
    bool ok = !hooks_.ready || hooks_.ready();
    json body{{"status", ok ? "ready" : "not ready"}};
    if (hooks_.registry_status) body["registry"] = hooks_.registry_status();
    return json_response(ok ? 200 : 503, body);
  }, true);
  add(kGet, "/metrics", Access::kRead, "Prometheus metrics (text format 0.0.4)", [this](Call&) {
    AdminResponse r;
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    metrics_.sync_registry(reg_);  // registry gauges are computed per scrape, not per change
    metrics_.set_long_polls(waiters_.size());
    if (hooks_.before_scrape) hooks_.before_scrape();
    metrics_.set_events(events_.watchers(), events_.encoded());
    r.body = metrics_.render();
    return r;
  }, true);
  add(kGet, "/", Access::kRead, "the dashboard (a redirect to /ui/)", [redirect](Call&) { return redirect("/ui/"); }, true);
  add(kGet, "/ui", Access::kRead, "the dashboard (a redirect to /ui/)", [redirect](Call&) { return redirect("/ui/"); }, true);
  {
    // (Not through `add`: the capture is a file name, not a service.)
    Endpoint e = Endpoint::row(kGet, "/ui/{file*}", Access::kRead, "the dashboard's page and its files (built into the binary)", native_,
                               [](Call& c) { return ui_file(c.arg(0), c.req); });
    e.public_read = true;
    table_.add(std::move(e));
  }
  {
    Endpoint e = Endpoint::row(kGet, "/v1/events", Access::kRead,
                               "server-sent events: registry changes, health flips, breakers, ejections, reloads (Last-Event-ID resumes; ?format=json: the history)",
                               native_, [](Call&) { return AdminResponse{}; });  // (answered by `stream`)
    e.stream = [this](Call& c) { watch_events(c); };
    table_.add(std::move(e));
  }
  dashboard_->add_endpoints(table_, native_, error);
  add(kGet, "/v1", Access::kRead, "this list of admin endpoints", [this](Call&) { return endpoint_list(); });
  add(kPost, "/v1/reload", Access::kControl, "re-read the config file; refused with the errors --check gives", [this](Call&) {
    std::string summary;
    std::string err = hooks_.reload ? hooks_.reload(summary) : "reload is not available";
    if (!err.empty()) return error(400, "bad_config", err);
    return AdminResponse{200, "application/json", {}, summary};
  });
  add(kGet, "/v1/rate-limits", Access::kRead, "each rate-limit policy: settings, keys in use, passed and refused (?keys=N: N recent keys)",
      [this](Call& c) { return rate_limits_view(c.req); });
  add(kGet, "/v1/catalog", Access::kRead, "every instance in the seed catalog's shape", [this](Call&) { return catalog_get(); });
  add(kPost, "/v1/catalog", Access::kRegistry, "register {service_name, service_url} (no lease)", [this](Call& c) { return catalog_post(c.req.body); });
  add(kGet, "/v1/services", Access::kRead, "every service with instance counts by state", [this](Call&) { return services_list(); });
  {
    Endpoint e = Endpoint::row(kGet, "/v1/services/{service}", Access::kRead,
                               "a service's instances (?healthy=1, ?tag=); a long poll with ?index=&wait=", native_, [this](Call& c) {
      if (!valid_name(c.arg(0))) return error(400, "bad_request", "service name must be 1-128 characters of [A-Za-z0-9._-]");
      return service_view(c.arg(0), c.req);
    });
    e.watch = [](const Call& c) -> std::optional<std::string> {
      if (!valid_name(c.arg(0))) return std::nullopt;
      return c.arg(0);
    };
    table_.add(std::move(e));
  }
  add(kPost, "/v1/services/{service}/instances", Access::kRegistry, "register an instance under a generated id", [this](Call& c) {
    // 64 random bits: ids of a service of 100,000 instances collide with odds of 1 in 10^9.
    char buf[24];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(rng_.next() ^ ++id_counter_));
    return register_instance(c.arg(0), c.arg(0) + "-" + buf, c.req.body, true);
  });
  add(kPut, "/v1/services/{service}/instances/{id}", Access::kRegistry, "register (or update) the instance {id}",
      [this](Call& c) { return register_instance(c.arg(0), c.arg(1), c.req.body, false); });
  add(kGet, "/v1/services/{service}/instances/{id}", Access::kRead, "one instance, with the sentence saying why it is (not) routable",
      [this](Call& c) { return instance_view(c.arg(0), c.arg(1)); });
  add(kDelete, "/v1/services/{service}/instances/{id}", Access::kRegistry, "deregister a dynamic instance",
      [this](Call& c) { return instance_delete(c.arg(0), c.arg(1)); });
  add(kPut | kPost, "/v1/services/{service}/instances/{id}/heartbeat", Access::kRegistry, "renew the instance's lease", [this](Call& c) {
    const std::string &service = c.arg(0), &id = c.arg(1);
    if (!reg_.heartbeat(service, id, hooks_.now_ms()))
      return error(404, "not_found", "no dynamic instance " + id + " in service " + service + "; register again");
    const registry::Instance* inst = reg_.find(service, id);
    return json_response(200, {{"id", id}, {"ttl_ms", inst ? inst->ttl.count() : 0}});
  });
  add(kPut | kPost, "/v1/services/{service}/instances/{id}/drain", Access::kRegistry, "drain ({\"enabled\": true}) or undrain the instance",
      [this](Call& c) { return instance_drain(c.arg(0), c.arg(1), c.req.body); });
}

void AdminApi::watch_events(Call& c) {
  AdminRequest& req = c.req;
  if (req.query_param("format") == "json") {
    AdminResponse r{200, "application/json", {{"Cache-Control", "no-store"}}, events_.history_json(EventStream::kHistory)};
    return finish(c.conn, std::move(r), false);
  }
  // Last-Event-ID: the header an EventSource sends when it reconnects; ?last_event_id= for
  // readers that cannot set headers on their first request.
  std::string last = req.header("last-event-id");
  if (last.empty()) last = req.query_param("last_event_id");
  uint64_t id = 0;
  const bool has = !last.empty();
  if (has) {
    auto r = std::from_chars(last.data(), last.data() + last.size(), id);
    if (r.ec != std::errc() || r.ptr != last.data() + last.size())
      return finish(c.conn, error(400, "bad_request", "'Last-Event-ID' must be a whole number (an event's id)"), false);
  }
  events_.watch(c.conn, id, has);
}

void AdminApi::publish_event(std::string type, std::string message, std::string service) {
  events_.publish(std::move(type), std::move(message), hooks_.unix_ms ? hooks_.unix_ms() : 0, std::move(service));
}

void AdminApi::tick(int64_t now_ms) {
  events_.tick(now_ms);
  dashboard_->tick(now_ms);
}

AdminResponse AdminApi::endpoint_list() {
  json list = json::array();
  for (const auto& e : table_.endpoints()) {
    const char* access = e.access == Access::kRead ? "read" : e.access == Access::kRegistry ? "registry" : "control";
    list.push_back({{"methods", EndpointTable::allow_header(e.methods)}, {"path", e.pattern}, {"api", table_.family(e.family).name},
                    {"access", access}, {"token", e.access != Access::kRead && token_required()},
                    {"blocking", static_cast<bool>(e.watch)}, {"help", e.help}});
  }
  return json_response(200, {{"endpoints", list}});
}

AdminResponse AdminApi::services_list() {
  json list = json::array();
  for (const auto& [name, svc] : reg_.services()) {
    json counts = json::object();
    for (const auto& [id, inst] : svc.instances) counts[inst.state_name()] = counts.value(inst.state_name(), 0) + 1;
    list.push_back({{"name", name}, {"instances", svc.instances.size()}, {"states", counts},
                    {"lb", conf::lb_name(svc.cfg.lb)}, {"source", svc.in_config ? "config" : "registry"}});
  }
  return json_response(200, {{"services", list}, {"index", reg_.index()}});
}

AdminResponse AdminApi::instance_delete(const std::string& service, const std::string& id) {
  const registry::Instance* inst = reg_.find(service, id);
  if (inst && inst->source == registry::Source::kStatic)
    return error(409, "static_instance", "instance comes from the config file; remove it there and reload");
  if (!reg_.remove(service, id)) return error(404, "not_found", "no instance " + id + " in service " + service);
  return AdminResponse{204, "application/json", {}, ""};
}

AdminResponse AdminApi::instance_drain(const std::string& service, const std::string& id, const std::string& body) {
  bool enabled = true;
  if (!body.empty()) {
    json j = json::parse(body, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return error(400, "bad_json", "body must be a JSON object like {\"enabled\": true}");
    for (const auto& [k, v] : j.items()) {
      if (k != "enabled") return error(400, "unknown_field", "unknown field '" + k + "'");
      if (!v.is_boolean()) return error(400, "bad_field", "'enabled' must be true or false");
      enabled = v.get<bool>();
    }
  }
  if (!reg_.set_drain(service, id, enabled)) return error(404, "not_found", "no instance " + id + " in service " + service);
  return json_response(200, {{"id", id}, {"draining", enabled}});
}

AdminResponse AdminApi::service_view(const std::string& service, const AdminRequest& req) {
  auto it = reg_.services().find(service);
  if (it == reg_.services().end()) {
    AdminResponse r = error(404, "not_found", "no service " + service);
    return r;
  }
  const std::string healthy = req.query_param("healthy");
  if (!healthy.empty() && healthy != "1" && healthy != "0" && healthy != "true" && healthy != "false")
    return error(400, "bad_request", "'healthy' must be 1, 0, true or false");
  const bool healthy_only = healthy == "1" || healthy == "true";
  const std::string tag = req.query_param("tag");
  json list = json::array();
  for (const auto& [id, inst] : it->second.instances) {
    if (healthy_only && !(!inst.draining && inst.in_good_standing())) continue;
    if (!tag.empty() && std::find(inst.tags.begin(), inst.tags.end(), tag) == inst.tags.end()) continue;
    list.push_back(instance_json(reg_, inst));
  }
  return json_response(200, {{"service", service}, {"lb", conf::lb_name(it->second.cfg.lb)}, {"index", reg_.index()}, {"instances", list}});
}

AdminResponse AdminApi::instance_view(const std::string& service, const std::string& id) {
  const registry::Instance* inst = reg_.find(service, id);
  if (!inst) return error(404, "not_found", "no instance " + id + " in service " + service);
  json j = instance_json(reg_, *inst);
  const int64_t now = hooks_.now_ms();
  if (inst->source == registry::Source::kDynamic && inst->ttl.count() > 0)
    j["lease_remaining_ms"] = std::max<int64_t>(0, inst->lease_expires_ms - now);
  j["why"] = instance_why(*inst, now);
  return json_response(200, j);
}

AdminResponse AdminApi::register_instance(const std::string& service, std::string id, const std::string& body, bool generated,
                                          bool leased) {
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return error(400, "bad_json", "body must be a JSON object");
  if (generated && j.contains("id"))
    return error(400, "unknown_field", "'id' is generated for POST; use PUT .../instances/{id} to choose it");
  registry::Registration r;
  r.service = service;
  r.id = std::move(id);
  r.leased = leased;  // a "ttl" in the body decides, when there is one
  registry::Error err;
  if (!registry::decode_registration(j, r, registry::DocKind::kRegistration, err)) return error(400, err.code, err.message);
  registry::Registry::PutResult res;
  registry::Error why;
  if (!admit(r, res, why)) return error(why.status, why.code, why.message);
  const registry::Instance* inst = reg_.find(service, r.id);
  json out = instance_json(reg_, *inst);
  out["ttl_ms"] = inst->ttl.count();
  json conflicts = json::array();
  for (const auto& spec : r.routes) {
    std::string owner = hooks_.config ? registry::route_owner(reg_, hooks_.config(), spec, service) : "";
    if (!owner.empty()) conflicts.push_back({{"host", spec.host}, {"path_prefix", spec.path_prefix}, {"conflict", owner}});
  }
  if (!conflicts.empty()) out["route_conflicts"] = conflicts;
  out["index"] = reg_.index();
  return json_response(res == registry::Registry::PutResult::kCreated ? 201 : 200, out);
}

bool AdminApi::admit(const registry::Registration& r, registry::Registry::PutResult& res, registry::Error& why) {
  if (hooks_.own_addresses) {
    // own_addresses() lists wildcard listeners as every local address they answer on; an
    // IPv4-mapped IPv6 address is compared as the IPv4 address it is. (Requests that loop anyway,
    // through a name or NAT, meet the Via check: 508 loop_detected.)
    const conf::Address target = r.address.unmapped();
    for (const auto& own : hooks_.own_addresses()) {
      const bool same_port = own.port() == target.port();
      if (same_port && (own == target || (own.is_loopback() && target.is_loopback()))) {
        why = {400, "bad_field", "'address' " + r.address.text + " is one of switchyard's own listeners (it would loop)"};
        return false;
      }
    }
  }
  res = reg_.put(r, hooks_.now_ms());
  if (res == registry::Registry::PutResult::kStatic) {
    why = {409, "static_instance", "instance " + r.service + "/" + r.id +
                                       " comes from the config file; change it there and reload, or register under another id"};
    return false;
  }
  if (res == registry::Registry::PutResult::kServiceFull) {
    why = {429, "limit_reached", "service " + r.service + " has reached its instance limit"};
    return false;
  }
  if (res == registry::Registry::PutResult::kRegistryFull) {
    why = {429, "limit_reached", "the registry has reached its total instance limit"};
    return false;
  }
  return true;
}

AdminResponse AdminApi::catalog_post(const std::string& body) {
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return error(400, "bad_json", "body must be a JSON object");
  std::string name, url;
  for (const auto& [k, v] : j.items()) {
    if (k == "service_name" && v.is_string()) name = v.get<std::string>();
    else if (k == "service_url" && v.is_string()) url = v.get<std::string>();
    else if (k == "service_name" || k == "service_url") return error(400, "bad_field", "'" + k + "' must be a string");
    else return error(400, "unknown_field", "unknown field '" + k + "'");
  }
  if (!valid_name(name)) return error(400, "bad_field", "'service_name' must be 1-128 characters of [A-Za-z0-9._-]");
  // https://: the instance is reached over TLS (services.X.tls, or the system's CA bundle).
  const bool tls = url.rfind("https://", 0) == 0;
  if (!tls && url.rfind("http://", 0) != 0) return error(400, "bad_field", "'service_url' must be an http:// or https:// URL");
  std::string hostport = url.substr(tls ? 8 : 7);
  hostport = hostport.substr(0, hostport.find('/'));
  // The id is derived from the address, so the same service POSTing again updates, not duplicates.
  std::string id = hostport;
  for (auto& c : id)
    if (!valid_name(std::string(1, c))) c = '-';
  json reg = {{"address", hostport}, {"scheme", tls ? "https" : "http"}};
  // Plain catalog registrations carry no lease: such services never heartbeat.
  AdminResponse r = register_instance(name, id, reg.dump(), false, false);
  if (r.status < 300) {
    const registry::Instance* inst = reg_.find(name, id);
    return json_response(r.status, {{"service_name", name}, {"service_url", url}, {"id", id}, {"state", inst ? inst->state_name() : "unknown"}});
  }
  return r;
}

AdminResponse AdminApi::catalog_get() {
  json list = json::array();
  for (const auto& [name, svc] : reg_.services())
    for (const auto& [id, inst] : svc.instances)
      list.push_back({{"service_name", name}, {"service_url", (inst.tls ? "https://" : "http://") + inst.address.text}, {"id", id},
                      {"state", inst.state_name()},
              {"circuit_breaker", inst.breaker_open ? "open" : "closed"},
              {"ejections", inst.ejections}, {"source", inst.source == registry::Source::kStatic ? "static" : "dynamic"}});
  return json_response(200, list);
}

AdminResponse AdminApi::rate_limits_view(const AdminRequest& req) {
  const auto lims = hooks_.rate_limits ? hooks_.rate_limits() : nullptr;
  size_t want = 20;
  const std::string k = req.query_param("keys");
  if (!k.empty()) {
    auto r = std::from_chars(k.data(), k.data() + k.size(), want);
    if (r.ec != std::errc() || r.ptr != k.data() + k.size() || want > 1000)
      return error(400, "bad_request", "'keys' must be a whole number 0-1000");
  }
  static const char* kKeys[] = {"source_ip", "header", "route", "service", "none"};
  json list = json::array();
  if (lims) {
    for (const auto& [name, l] : lims->by_name) {
      const conf::RateLimit& p = l->policy();
      std::string key = kKeys[static_cast<int>(p.key)];
      if (p.key == conf::RateLimit::Key::kHeader) key += ":" + p.header;
      json recent = json::array();
      if (want > 0)
        for (const auto& ks : l->recent(want, static_cast<int64_t>(uv_hrtime() / 1000))) recent.push_back({{"key", ks.key}, {"tokens", ks.available}});
      list.push_back({{"name", name},
                      {"rate", std::to_string(p.rate.tokens) + (p.rate.per_us == 1000000 ? "/s" : p.rate.per_us == 60000000 ? "/m" : "/h")},
                      {"burst", p.burst},
                      {"key", key},
                      {"mode", l->dry_run() ? "dry_run" : "enforce"},
                      {"max_keys", p.max_keys},
                      {"scope", p.global ? "global" : "local"},
                      {"proxies", l->share()},  // scope: global — this proxy takes 1/proxies of rate and burst
                      {"keys", l->keys()},
                      {"evictions", l->evictions()},
                      {"passed", l->passed()},
                      {"refused", l->refused()},
                      {"recent_keys", recent}});
    }
  }
  return json_response(200, list);
}

}  // namespace sy::admin

