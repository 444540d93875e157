// ConsulApi: Consul's request documents translated into switchyard's registration document, and
// registry instances rendered in Consul's answer shapes (docs/consul-eureka.md lists every call).
// Past 600 lines because Consul has that many answer shapes; each is a short function.
#include "proxy/admin/consul_api.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string_view>

#include "proxy/http/ascii.h"
#include "registry/codec.h"

namespace sy::admin {

using nlohmann::json;

namespace {

// Consul answers errors as plain text.
AdminResponse text(int status, const std::string& msg) {
  AdminResponse r;
  r.status = status;
  r.content_type = "text/plain; charset=utf-8";
  r.body = msg;
  return r;
}

AdminResponse json_answer(const json& j) {
  AdminResponse r;
  r.body = j.dump(2);
  return r;
}

// Consul accepts keys in PascalCase, camelCase, lower case and snake_case: compare them folded.
std::string fold(const std::string& k) {
  std::string out;
  for (char c : k) {
    if (c == '_' || c == '-') continue;
    out.push_back(http::ascii_lower(c));
  }
  return out;
}

// One level of an object with folded keys (the values, such as Meta's own keys, stay as sent).
json folded(const json& obj) {
  json out = json::object();
  if (!obj.is_object()) return out;
  for (const auto& [k, v] : obj.items()) out[fold(k)] = v;
  return out;
}

// Go's duration syntax, which Consul clients send ("10s", "1m30s", "500ms"), or a number of
// nanoseconds.
bool consul_duration(const json& v, conf::Millis& out) {
  if (v.is_number_unsigned() || v.is_number_integer()) {
    out = conf::Millis(v.get<int64_t>() / 1000000);
    return v.get<int64_t>() >= 0;
  }
  if (!v.is_string()) return false;
  const std::string s = v.get<std::string>();
  if (s.empty()) return false;
  if (s == "0") {
    out = conf::Millis(0);
    return true;
  }
  double total_ms = 0;
  size_t i = 0;
  while (i < s.size()) {
    size_t j = i;
    while (j < s.size() && ((s[j] >= '0' && s[j] <= '9') || s[j] == '.')) ++j;
    if (j == i) return false;
    double n = 0;
    auto r = std::from_chars(s.data() + i, s.data() + j, n);
    if (r.ec != std::errc() || r.ptr != s.data() + j) return false;
    size_t k = j;
    while (k < s.size() && !((s[k] >= '0' && s[k] <= '9') || s[k] == '.')) ++k;
    const std::string unit = s.substr(j, k - j);
    double scale;
    if (unit == "h") scale = 3600000;
    else if (unit == "m") scale = 60000;
    else if (unit == "s") scale = 1000;
    else if (unit == "ms") scale = 1;
    else if (unit == "us" || unit == "\xc2\xb5s") scale = 0.001;
    else if (unit == "ns") scale = 0.000001;
    else return false;
    total_ms += n * scale;
    i = k;
  }
  if (!(total_ms >= 0 && total_ms < 1e15)) return false;
  out = conf::Millis(static_cast<int64_t>(std::llround(total_ms)));
  return true;
}

const std::string& node_name() {
  static const std::string name = [] {
    char buf[256] = "";
    if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return std::string("switchyard");
    return std::string(buf);
  }();
  return name;
}

const char* check_type(const registry::Registry& reg, const registry::Instance& i) {
  const conf::HealthCheck* hc = i.has_health_check ? &i.health_check : nullptr;
  if (!hc) {
    auto it = reg.services().find(i.service);
    if (it != reg.services().end() && it->second.cfg.has_health_check) hc = &it->second.cfg.health_check;
  }
  if (hc && hc->type == conf::HealthCheck::Type::kHttp) return "http";
  if (hc && hc->type == conf::HealthCheck::Type::kTcp) return "tcp";
  if (hc && hc->type == conf::HealthCheck::Type::kGrpc) return "grpc";
  return i.ttl.count() > 0 ? "ttl" : "";
}

// switchyard's view of an instance as one Consul check status.
const char* status_of(const registry::Instance& i) {
  if (!i.in_good_standing()) return "critical";
  return i.warning ? "warning" : "passing";
}

std::string output_of(const registry::Instance& i) {
  if (i.stale) return "lease expired in a mass expiry; kept as stale until it heartbeats";
  if (i.ejected) return "ejected by outlier detection";
  if (i.breaker_open) return "circuit breaker open";
  return i.health_reason;
}

// Consul's node object and its service and check shapes, as one read renders them: this proxy
// is the one node, written once (the catalog's node list and the health answer carry it whole;
// the catalog's service answer flattens it as NodeMeta).
struct View {
  const registry::Registry& reg;
  std::string dc, node_addr = "127.0.0.1";
  json node;

  View(const AdminApi& api, const registry::Registry& r) : reg(r) {
    dc = api.hooks().config ? api.hooks().config().registry.datacenter : std::string("dc1");
    if (api.hooks().config) {
      const conf::Address& a = api.hooks().config().admin.listen;
      if (!a.is_unspecified()) node_addr = a.host();
    }
    const uint64_t idx = std::max<uint64_t>(1, reg.index());
    node = {{"ID", ""}, {"Node", node_name()}, {"Address", node_addr}, {"Datacenter", dc},
            {"TaggedAddresses", {{"lan", node_addr}, {"wan", node_addr}}}, {"Meta", json::object()},
            {"CreateIndex", 1}, {"ModifyIndex", idx}};
  }
  json service(const registry::Instance& i) const {
    return json{{"ID", i.id},
                {"Service", i.service},
                {"Tags", i.tags},
                {"Meta", i.meta},
                {"Port", i.address.port()},
                {"Address", i.address.host()},
                {"Weights", {{"Passing", i.weight}, {"Warning", 1}}},
                {"EnableTagOverride", false},
                {"Datacenter", dc},
                {"CreateIndex", 1},
                {"ModifyIndex", reg.service_index(i.service)}};
  }
  // The instances of `service` carrying `tag` (every one when empty); none when no such service.
  template <class F>
  void each(const std::string& service, const std::string& tag, F f) const {
    auto it = reg.services().find(service);
    if (it == reg.services().end()) return;
    for (const auto& [id, inst] : it->second.instances)
      if (tag.empty() || std::find(inst.tags.begin(), inst.tags.end(), tag) != inst.tags.end()) f(inst);
  }
  json checks(const registry::Instance& i, bool with_node) const {
    json list = json::array();
    auto base = [&](const std::string& cid, const std::string& name, const std::string& status, const std::string& notes,
                    const std::string& output, const std::string& type, bool for_service) {
      return json{{"Node", node_name()}, {"CheckID", cid}, {"Name", name}, {"Status", status}, {"Notes", notes},
                  {"Output", output}, {"ServiceID", for_service ? i.id : ""}, {"ServiceName", for_service ? i.service : ""},
                  {"ServiceTags", for_service ? json(i.tags) : json::array()}, {"Type", type},
                  {"Definition", json::object()}, {"CreateIndex", 1}, {"ModifyIndex", reg.service_index(i.service)}};
    };
    if (with_node) list.push_back(base("serfHealth", "Serf Health Status", "passing", "", "Agent alive and reachable", "", false));
    list.push_back(base("service:" + i.id, "Service '" + i.service + "' check", status_of(i), "", output_of(i),
                        check_type(reg, i), true));
    if (i.draining)
      list.push_back(base("_service_maintenance:" + i.id, "Service Maintenance Mode", "critical",
                          "draining: no new requests", "", "maintenance", true));
    return list;
  }
};

// The read calls, one function each: the request and the view they render.
bool all_passing(const json& checks) {
  return std::all_of(checks.begin(), checks.end(), [](const json& c) { return c["Status"] == "passing"; });
}

AdminResponse agent_self(const Call&, const View& v) {
  return json_answer({{"Config", {{"Datacenter", v.dc}, {"NodeName", node_name()}, {"NodeID", ""}, {"Server", false},
                                  {"Revision", "switchyard"}, {"Version", "1.15.0"}, {"PrimaryDatacenter", v.dc}}},
                      {"DebugConfig", {{"Datacenter", v.dc}, {"NodeName", node_name()}}},
                      {"Member", {{"Name", node_name()}, {"Addr", v.node_addr}, {"Port", 8301},
                                  {"Tags", {{"dc", v.dc}, {"role", "node"}}}, {"Status", 1}}},
                      {"Meta", json::object()}});
}
AdminResponse status_leader(const Call&, const View& v) { return json_answer(json(v.node_addr + ":8300")); }
AdminResponse status_peers(const Call&, const View& v) { return json_answer(json::array({v.node_addr + ":8300"})); }
AdminResponse datacenters(const Call&, const View& v) { return json_answer(json::array({v.dc})); }
AdminResponse catalog_nodes(const Call&, const View& v) { return json_answer(json::array({v.node})); }

AdminResponse agent_services(const Call&, const View& v) {
  json out = json::object();
  for (const auto& [name, svc] : v.reg.services())
    for (const auto& [id, inst] : svc.instances) out[id] = v.service(inst);
  return json_answer(out);
}

AdminResponse agent_checks(const Call&, const View& v) {
  json out = json::object();
  for (const auto& [name, svc] : v.reg.services())
    for (const auto& [id, inst] : svc.instances)
      for (const auto& c : v.checks(inst, false)) out[c["CheckID"].get<std::string>()] = c;
  return json_answer(out);
}

AdminResponse agent_service(const Call& c, const View& v) {
  auto found = v.reg.find_by_id(c.arg(0));
  if (found.empty()) return text(404, "unknown service ID: " + c.arg(0));
  return json_answer(v.service(*found.front()));
}

AdminResponse catalog_services(const Call&, const View& v) {
  json out = json::object();
  for (const auto& [name, svc] : v.reg.services()) {
    std::set<std::string> tags;
    for (const auto& [id, inst] : svc.instances) tags.insert(inst.tags.begin(), inst.tags.end());
    out[name] = std::vector<std::string>(tags.begin(), tags.end());
  }
  return json_answer(out);
}

AdminResponse health_service(const Call& c, const View& v) {
  // "?passing", "?passing=1" or "=true" filter; "=false" / "=0" do not (as Consul reads it).
  const std::string passing_q = c.req.query_param("passing");
  const bool passing = c.req.has_param("passing") && passing_q != "false" && passing_q != "0";
  json out = json::array();  // no such service: an empty list, not a 404 (as Consul)
  v.each(c.arg(0), c.req.query_param("tag"), [&](const registry::Instance& inst) {
    json checks = v.checks(inst, true);
    if (!passing || all_passing(checks)) out.push_back({{"Node", v.node}, {"Service", v.service(inst)}, {"Checks", checks}});
  });
  return json_answer(out);
}

AdminResponse catalog_service(const Call& c, const View& v) {
  json out = json::array();
  v.each(c.arg(0), c.req.query_param("tag"), [&](const registry::Instance& inst) {
    json entry = {{"ID", ""}, {"Node", v.node["Node"]}, {"Address", v.node["Address"]}, {"Datacenter", v.dc},
                  {"TaggedAddresses", v.node["TaggedAddresses"]}, {"NodeMeta", v.node["Meta"]}};
    entry.update(json{{"ServiceKind", ""}, {"ServiceID", inst.id}, {"ServiceName", inst.service}, {"ServiceTags", inst.tags},
                      {"ServiceAddress", inst.address.host()}, {"ServicePort", inst.address.port()},
                      {"ServiceMeta", inst.meta}, {"ServiceWeights", {{"Passing", inst.weight}, {"Warning", 1}}},
                      {"ServiceEnableTagOverride", false}, {"CreateIndex", 1},
                      {"ModifyIndex", v.reg.service_index(inst.service)}});
    out.push_back(std::move(entry));
  });
  return json_answer(out);
}

AdminResponse health_checks(const Call& c, const View& v) {
  json out = json::array();
  v.each(c.arg(0), c.req.query_param("tag"), [&](const registry::Instance& inst) {
    for (auto& ch : v.checks(inst, false)) out.push_back(ch);
  });
  return json_answer(out);
}

AdminResponse health_state(const Call& c, const View& v) {
  const std::string& state = c.arg(0);
  if (state != "any" && state != "passing" && state != "warning" && state != "critical")
    return text(400, "Invalid check state \"" + state + "\" (any, passing, warning, critical)");
  json out = json::array();
  for (const auto& [name, svc] : v.reg.services())
    for (const auto& [id, inst] : svc.instances)
      for (auto& ch : v.checks(inst, false))
        if (state == "any" || ch["Status"] == state) out.push_back(ch);
  return json_answer(out);
}

}  // namespace

void ConsulApi::add_endpoints(EndpointTable& t) {
  Family f;
  f.name = "consul";
  f.title = "Consul";
  f.docs = "docs/consul-eureka.md";
  f.prefixes = {"/v1/agent/", "/v1/health/", "/v1/catalog/", "/v1/kv/", "/v1/status/"};
  f.error = [](int status, const std::string&, const std::string& message) { return text(status, message); };
  f.unauthorized = [] { return text(403, "Permission denied: this call needs the admin token (X-Consul-Token, ?token= or a bearer header)"); };
  f.precheck = [this](const AdminRequest& req) -> std::optional<AdminResponse> {
    const std::string dc = req.query_param("dc");
    const std::string& ours = api_.hooks().config ? api_.hooks().config().registry.datacenter : std::string("dc1");
    if (!dc.empty() && dc != ours) return text(500, "No path to datacenter");
    return std::nullopt;
  };
  // Every Consul answer, 404s included, carries the index (clients fail without it).
  f.decorate = [this](AdminResponse& r, const std::string& key) {
    r.headers.emplace_back("X-Consul-Index", std::to_string(std::max<uint64_t>(1, api_.index_of(key))));
    r.headers.emplace_back("X-Consul-Knownleader", "true");
    r.headers.emplace_back("X-Consul-Lastcontact", "0");
  };
  f.parse_wait = [](const std::string& w, int64_t& ms) {
    conf::Millis d;
    if (!consul_duration(json(w), d)) return false;
    ms = d.count();
    return true;
  };
  f.bad_poll = [](int what, const AdminRequest& req) {
    return what == 0 ? text(400, "Invalid index: must be a whole number")
                     : text(400, "Invalid wait time: " + req.query_param("wait") + " (use a duration such as 30s, 5m or 500ms)");
  };
  const size_t fam = t.add_family(std::move(f));

  auto add = [&](unsigned methods, const char* pattern, Access access, const char* help, std::function<AdminResponse(Call&)> h,
                 std::function<std::optional<std::string>(const Call&)> watch = nullptr) {
    Endpoint e = Endpoint::row(methods, pattern, access, help, fam, std::move(h));
    e.watch = std::move(watch);
    t.add(std::move(e));
  };
  // Reads: every one may block (?index=&wait=), on the whole catalog unless it names a service.
  auto read = [&](const char* pattern, const char* help, AdminResponse (*fn)(const Call&, const View&), bool by_service = false) {
    add(kGet, pattern, Access::kRead, help,
        [this, fn](Call& c) {
          if (!c.req.query_param("filter").empty())
            return text(400, "filter expressions are not supported by switchyard; use ?tag= and ?passing");
          return fn(c, View(api_, api_.registry()));
        },
        [by_service](const Call& c) -> std::optional<std::string> {
          if (!c.req.query_param("filter").empty()) return std::nullopt;
          return by_service ? c.arg(0) : std::string();
        });
  };
  const unsigned put = kPut | kPost;
  // Consul clients deregister and update checks with GET too.
  const unsigned put_or_get = kPut | kPost | kGet;
  add(put, "/v1/agent/service/register", Access::kRegistry, "register a Consul service definition", [this](Call& c) { return registration(c.req); });
  add(put_or_get, "/v1/agent/service/deregister/{id}", Access::kRegistry, "deregister by service ID", [this](Call& c) { return deregistration(c.arg(0)); });
  add(put, "/v1/agent/service/maintenance/{id}", Access::kRegistry, "maintenance mode (?enable=true drains)", [this](Call& c) { return maintenance(c.req, c.arg(0)); });
  for (const char* verb : {"pass", "warn", "fail"}) {
    const std::string status = verb[0] == 'p' ? "passing" : verb[0] == 'w' ? "warning" : "critical";
    add(put_or_get, (std::string("/v1/agent/check/") + verb + "/{check*}").c_str(), Access::kRegistry, "set a TTL check (?note=)",
        [this, status](Call& c) {
          if (c.arg(0).empty()) return text(400, "Missing check ID");
          return check_update(c.arg(0), status, c.req.query_param("note"));
        });
  }
  add(put_or_get, "/v1/agent/check/update/{check*}", Access::kRegistry, "set a TTL check from {Status, Output}", [this](Call& c) {
    if (c.arg(0).empty()) return text(400, "Missing check ID");
    json b = json::parse(c.req.body.empty() ? "{}" : c.req.body, nullptr, false);
    json fb = folded(b);
    if (b.is_discarded() || !b.is_object()) return text(400, "Request decode failed: body must be a JSON object");
    if (!fb.value("status", json("")).is_string() || !fb.value("output", json("")).is_string())
      return text(400, "Request decode failed: Status and Output must be strings");
    return check_update(c.arg(0), fb.value("status", std::string()), fb.value("output", std::string()));
  });
  // No key/value store here; fabio and others read their config from KV and take 404 as "none".
  add(kGet | put | kDelete, "/v1/kv/{key*}", Access::kRead, "no key/value store: always 404", [](Call&) { return text(404, ""); });
  read("/v1/agent/self", "the agent's own description", &agent_self);
  read("/v1/status/leader", "this node as the leader", &status_leader);
  read("/v1/status/peers", "this node as the one peer", &status_peers);
  read("/v1/catalog/datacenters", "the one datacenter (registry.datacenter)", &datacenters);
  read("/v1/agent/services", "every instance as an agent service", &agent_services);
  read("/v1/agent/checks", "every instance's checks", &agent_checks);
  read("/v1/agent/service/{id}", "one agent service by ID", &agent_service);
  read("/v1/catalog/services", "service names with their tags", &catalog_services);
  read("/v1/catalog/nodes", "the one node", &catalog_nodes);
  read("/v1/health/service/{service}", "a service's instances with their checks (?passing, ?tag=)", &health_service, true);
  read("/v1/catalog/service/{service}", "a service's instances, catalog shape (?tag=)", &catalog_service, true);
  read("/v1/health/checks/{service}", "a service's checks", &health_checks, true);
  read("/v1/health/state/{state}", "checks in a state: any, passing, warning, critical", &health_state);
}

bool decode_consul_registration(const std::string& text_body, const std::string& peer_ip, ConsulRegistration& out,
                                registry::Error& error) {
  auto fail = [&](std::string m) {
    error = {400, "bad_request", std::move(m)};
    return false;
  };
  json body = json::parse(text_body, nullptr, false);
  if (body.is_discarded() || !body.is_object()) return fail("Request decode failed: body must be a JSON object");
  const json top = folded(body);
  auto bad = [&](const std::string& m) { return fail("Invalid service registration: " + m); };
  auto str = [&](const char* k) -> std::string { return top.contains(k) && top[k].is_string() ? top[k].get<std::string>() : ""; };
  for (const char* k : {"name", "id", "address", "kind"})
    if (top.contains(k) && !top[k].is_string() && !top[k].is_null()) return bad(std::string(k) + " must be a string");
  const std::string name = str("name");
  if (name.empty()) return fail("Missing service name");
  if (!registry::valid_service_name(name)) return bad("Name must be 1-128 characters of [A-Za-z0-9._-]");
  const std::string id = str("id").empty() ? name : str("id");
  if (!registry::valid_instance_id(id)) return bad("ID must be 1-128 characters of [A-Za-z0-9._:-]");
  if (!str("kind").empty()) return bad("Kind " + str("kind") + " is not supported: switchyard registers plain services");
  for (const char* k : {"connect", "proxy"})
    if (top.contains(k) && !top[k].is_null() && !(top[k].is_object() && top[k].empty()))
      return bad(std::string(k == std::string("connect") ? "Connect" : "Proxy") + " is not supported (no service mesh here)");
  if (!top.contains("port") || !top["port"].is_number_unsigned() || top["port"].get<uint64_t>() < 1 ||
      top["port"].get<uint64_t>() > 65535)
    return bad("Port must be a number 1-65535 (switchyard routes to Address:Port)");
  const uint64_t port = top["port"].get<uint64_t>();
  // No Address: the address the client registered from, as Consul uses its node's address.
  std::string host = str("address").empty() ? (peer_ip.empty() ? "127.0.0.1" : peer_ip) : str("address");
  json doc = json::object();
  doc["address"] = (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
  if (top.contains("tags") && !top["tags"].is_null()) doc["tags"] = top["tags"];
  if (top.contains("meta") && !top["meta"].is_null()) doc["meta"] = top["meta"];
  if (top.contains("weights") && top["weights"].is_object()) {
    const json w = folded(top["weights"]);
    if (w.contains("passing")) doc["weight"] = w["passing"];
  }
  // Checks: at most one HTTP, TCP or GRPC check (→ the instance's health check) and one TTL check
  // (→ its lease). A GRPC check also says the instance speaks gRPC: HTTP/2, h2c or (GRPCUseTLS) h2.
  std::vector<json> checks;
  if (top.contains("check") && top["check"].is_object()) checks.push_back(folded(top["check"]));
  if (top.contains("checks") && top["checks"].is_array())
    for (const auto& c : top["checks"])
      if (c.is_object()) checks.push_back(folded(c));
  bool have_active = false;
  bool& have_ttl = out.has_ttl;
  std::string& ttl_status = out.ttl_status;
  std::string& ttl_check_id = out.ttl_check_id;
  conf::Millis dca{0};
  doc["ttl"] = "0s";  // Consul agent services live until deregistered, unless a TTL check says otherwise
  for (const auto& c : checks) {
    for (const char* k : {"args", "script", "dockercontainerid", "h2ping", "aliasservice", "udp", "osservice"})
      if (c.contains(k) && !c[k].is_null() && !(c[k].is_string() && c[k].get<std::string>().empty()) &&
          !(c[k].is_array() && c[k].empty()))
        return bad(std::string("check type '") + k + "' is not supported (HTTP, TCP, GRPC and TTL checks are)");
    auto cstr = [&](const char* k) { return c.contains(k) && c[k].is_string() ? c[k].get<std::string>() : std::string(); };
    if (c.contains("deregistercriticalserviceafter") && !c["deregistercriticalserviceafter"].is_null()) {
      conf::Millis d;
      if (!consul_duration(c["deregistercriticalserviceafter"], d)) return bad("DeregisterCriticalServiceAfter must be a duration such as 90s");
      if (d.count() > 0 && (dca.count() == 0 || d < dca)) dca = d;
    }
    if (!cstr("ttl").empty()) {
      if (have_ttl) return bad("at most one TTL check per service");
      conf::Millis ttl;
      if (!consul_duration(c["ttl"], ttl) || ttl.count() < 1000) return bad("TTL must be a duration of at least 1s");
      have_ttl = true;
      doc["ttl"] = registry::format_duration(ttl);
      if (!cstr("status").empty()) ttl_status = cstr("status");
      ttl_check_id = cstr("checkid");
      continue;
    }
    const std::string http = cstr("http"), tcp = cstr("tcp"), grpc = cstr("grpc");
    if (http.empty() && tcp.empty() && grpc.empty()) return bad("a check needs HTTP, TCP, GRPC or TTL");
    if (have_active) return bad("at most one HTTP, TCP or GRPC check per service (switchyard probes one)");
    have_active = true;
    json hc = json::object();
    std::string authority;
    if (!http.empty()) {
      if (http.rfind("http://", 0) != 0) return bad("HTTP check URL must start with http:// (no TLS probes): " + http);
      const std::string rest = http.substr(7);
      const size_t slash = rest.find('/');
      authority = rest.substr(0, slash);
      hc["type"] = "http";
      hc["path"] = slash == std::string::npos ? "/" : rest.substr(slash);
      hc["host"] = authority;
      hc["expected_status"] = json::array({"200-299"});  // Consul: 2xx passing
      const std::string method = cstr("method");
      if (!method.empty() && method != "GET") return bad("HTTP check Method " + method + " is not supported (GET is)");
    } else if (!grpc.empty()) {
      // Consul's form: "host:port" (the server as a whole) or "host:port/service".
      const size_t slash = grpc.find('/');
      authority = grpc.substr(0, slash);
      hc["type"] = "grpc";
      hc["grpc_service"] = slash == std::string::npos ? "" : grpc.substr(slash + 1);
      if (c.contains("grpcusetls") && !c["grpcusetls"].is_null() && !c["grpcusetls"].is_boolean())
        return bad("GRPCUseTLS must be true or false");
      const bool use_tls = c.contains("grpcusetls") && c["grpcusetls"].is_boolean() && c["grpcusetls"].get<bool>();
      doc["protocol"] = use_tls ? "h2" : "h2c";
    } else {
      authority = tcp;
      hc["type"] = "tcp";
    }
    const size_t colon = authority.rfind(':');
    uint64_t check_port = 0;
    if (colon != std::string::npos) {
      auto pr = std::from_chars(authority.data() + colon + 1, authority.data() + authority.size(), check_port);
      if (pr.ec != std::errc()) check_port = 0;
    } else if (!http.empty()) {
      check_port = 80;
    }
    if (check_port != port)
      return bad("the check must probe the service's own port " + std::to_string(port) +
                 " (switchyard probes the instance's address): " + (!http.empty() ? http : !grpc.empty() ? grpc : tcp));
    conf::Millis interval, timeout;
    if (!c.contains("interval") || !consul_duration(c["interval"], interval) || interval.count() < 1)
      return bad("Interval is required for HTTP, TCP and GRPC checks (a duration such as 10s)");
    hc["interval"] = registry::format_duration(interval);
    if (c.contains("timeout") && !c["timeout"].is_null()) {
      if (!consul_duration(c["timeout"], timeout) || timeout.count() < 1) return bad("Timeout must be a duration such as 1s");
      hc["timeout"] = registry::format_duration(timeout);
    }
    // Consul passes or fails a check on one result unless told otherwise.
    auto count = [&](const char* k) -> int64_t {
      return c.contains(k) && c[k].is_number_integer() ? std::clamp<int64_t>(c[k].get<int64_t>(), 1, 1000) : 1;
    };
    hc["healthy_threshold"] = static_cast<uint64_t>(count("successbeforepassing"));
    hc["unhealthy_threshold"] = static_cast<uint64_t>(count("failuresbeforecritical"));
    doc["health_check"] = hc;
  }
  if (dca.count() > 0) doc["deregister_critical_after"] = registry::format_duration(std::max(dca, conf::Millis(1000)));

  registry::Registration& r = out.reg;
  r.service = name;
  r.id = id;
  registry::Error err;
  if (!registry::decode_registration(doc, r, registry::DocKind::kRegistration, err)) return bad(err.message);
  return true;
}

AdminResponse ConsulApi::registration(const AdminRequest& req) {
  ConsulRegistration in;
  registry::Error err;
  if (!decode_consul_registration(req.body, req.peer_ip, in, err)) return text(err.status, err.message);
  const registry::Registration& r = in.reg;
  const std::string& name = r.service;
  const std::string& id = r.id;
  const std::string& ttl_status = in.ttl_status;
  registry::Registry& reg = api_.registry();
  registry::Registry::PutResult res;
  if (!api_.admit(r, res, err)) return text(err.status, err.message);
  // A Consul service ID names one service on the agent: registering it under another name moves it
  // (the old entry goes once the new one is in, so a refused registration loses nothing).
  std::vector<std::string> others;
  for (const registry::Instance* other : reg.find_by_id(id))
    if (other->service != name) others.push_back(other->service);
  for (const auto& s : others) reg.remove(s, id);
  if (in.has_ttl) {
    // A TTL check starts as its Status says, critical unless told: not routed until it passes.
    if (ttl_status == "passing") reg.set_reported_health(name, id, registry::Health::kHealthy, false, "");
    else if (ttl_status == "warning") reg.set_reported_health(name, id, registry::Health::kHealthy, true, "");
    else reg.set_reported_health(name, id, registry::Health::kUnhealthy, false, "TTL check has not passed yet");
    if (!in.ttl_check_id.empty()) checks_[in.ttl_check_id] = {name, id};
    if (checks_.size() > 2 * reg.total_instances() + 1024)
      std::erase_if(checks_, [&](const auto& e) { return !reg.find(e.second.first, e.second.second); });
  }
  return text(200, "");
}

AdminResponse ConsulApi::deregistration(const std::string& id) {
  registry::Registry& reg = api_.registry();
  auto found = reg.find_by_id(id);
  if (found.empty())
    return text(404, "Unknown service ID \"" + id + "\". Ensure that the service ID is passed, not the service name.");
  std::vector<std::string> services;
  for (const auto* i : found) services.push_back(i->service);
  for (const auto& s : services) reg.remove(s, id);
  return text(200, "");
}

AdminResponse ConsulApi::maintenance(const AdminRequest& req, const std::string& id) {
  const std::string enable = req.query_param("enable");
  if (enable != "true" && enable != "false") return text(400, "Missing value for enable (true or false)");
  registry::Registry& reg = api_.registry();
  auto found = reg.find_by_id(id);
  if (found.empty()) return text(404, "Unknown service ID \"" + id + "\"");
  std::vector<std::string> services;
  for (const auto* i : found) services.push_back(i->service);
  for (const auto& s : services) reg.set_drain(s, id, enable == "true");
  return text(200, "");
}

const registry::Instance* ConsulApi::instance_of_check(const std::string& check_id) {
  registry::Registry& reg = api_.registry();
  if (auto it = checks_.find(check_id); it != checks_.end()) {
    if (const auto* inst = reg.find(it->second.first, it->second.second)) return inst;
    checks_.erase(it);
  }
  if (check_id.rfind("service:", 0) != 0) return nullptr;
  std::string id = check_id.substr(8);
  auto found = reg.find_by_id(id);
  if (found.empty()) {
    // "service:{id}:{n}": the n-th check of a service registered with several.
    const size_t colon = id.rfind(':');
    if (colon != std::string::npos && colon + 1 < id.size() &&
        std::all_of(id.begin() + static_cast<std::ptrdiff_t>(colon) + 1, id.end(), [](char c) { return c >= '0' && c <= '9'; }))
      found = reg.find_by_id(id.substr(0, colon));
  }
  return found.empty() ? nullptr : found.front();
}

AdminResponse ConsulApi::check_update(const std::string& check_id, const std::string& status, const std::string& output) {
  const registry::Instance* inst = instance_of_check(check_id);
  if (!inst) return text(404, "Unknown check ID \"" + check_id + "\"");
  if (inst->ttl.count() == 0) return text(500, "CheckID \"" + check_id + "\" does not have associated TTL");
  if (status != "passing" && status != "warning" && status != "critical")
    return text(400, "Invalid check status: \"" + status + "\" (passing, warning or critical)");
  registry::Registry& reg = api_.registry();
  const std::string service = inst->service, id = inst->id;
  reg.heartbeat(service, id, api_.hooks().now_ms());  // any TTL update renews it, as in Consul
  if (status == "critical")
    reg.set_reported_health(service, id, registry::Health::kUnhealthy, false, output.empty() ? "TTL check failed" : output);
  else
    reg.set_reported_health(service, id, registry::Health::kHealthy, status == "warning", output);
  return text(200, "");
}

}  // namespace sy::admin
