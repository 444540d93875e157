// EurekaApi: Eureka's instance document translated into switchyard's registration document, and
// registry instances rendered in Eureka's shapes (docs/consul-eureka.md lists every call).
#include "proxy/admin/eureka_api.h"

#include <algorithm>
#include <cctype>
#include <stdexcept>
#include <charconv>
#include <map>
#include <nlohmann/json.hpp>
#include <pugixml.hpp>
#include <sstream>

#include "proxy/http/ascii.h"
#include "registry/codec.h"

namespace sy::admin {

using nlohmann::json;

namespace {

constexpr int64_t kEurekaLeaseSeconds = 90;  // Eureka's lease when leaseInfo says nothing

AdminResponse answer(int status, const std::string& code = "", const std::string& message = "") {
  AdminResponse r;
  r.status = status;
  if (!code.empty()) r.body = json{{"error", code}, {"message", message}}.dump() + "\n";
  return r;
}

std::string upper(std::string s) {
  for (auto& c : s)
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 32);
  return s;
}


// XML as Eureka's JSON writes it: attributes as "@name", an element's text beside attributes as
// "$", repeated elements as a list. One mapping both ways, so XML and JSON carry the same document.
constexpr int kMaxXmlDepth = 16;  // an instance document is 3 deep; deeper is hostile

bool xml_name(const std::string& s) {
  if (s.empty() || !(std::isalpha(static_cast<unsigned char>(s[0])) || s[0] == '_')) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
  });
}

json xml_to_json(const pugi::xml_node& n, int depth = 0) {
  if (depth > kMaxXmlDepth) throw std::invalid_argument("XML nested too deep");
  bool has_children = false;
  for (const auto& c : n.children())
    if (c.type() == pugi::node_element) has_children = true;
  if (!has_children && n.attributes().empty()) return n.text().as_string();
  json obj = json::object();
  for (const auto& a : n.attributes()) obj[std::string("@") + a.name()] = a.value();
  if (!has_children) {
    obj["$"] = n.text().as_string();
    return obj;
  }
  for (const auto& c : n.children()) {
    if (c.type() != pugi::node_element) continue;
    json v = xml_to_json(c, depth + 1);
    const std::string key = c.name();
    if (!obj.contains(key)) {
      obj[key] = std::move(v);
    } else {
      if (!obj[key].is_array()) obj[key] = json::array({obj[key]});
      obj[key].push_back(std::move(v));
    }
  }
  return obj;
}

void json_to_xml(pugi::xml_node parent, const std::string& name, const json& v) {
  if (!xml_name(name)) return;  // a metadata key XML cannot name (JSON answers carry it)
  if (v.is_array()) {
    for (const auto& e : v) json_to_xml(parent, name, e);
    return;
  }
  pugi::xml_node node = parent.append_child(name.c_str());
  if (v.is_object()) {
    for (const auto& [k, e] : v.items()) {
      if (!k.empty() && k[0] == '@') node.append_attribute(k.substr(1).c_str()) = (e.is_string() ? e.get<std::string>() : e.dump()).c_str();
      else if (k == "$") node.text().set((e.is_string() ? e.get<std::string>() : e.dump()).c_str());
      else json_to_xml(node, k, e);
    }
  } else if (!v.is_null()) {
    node.text().set((v.is_string() ? v.get<std::string>() : v.dump()).c_str());
  }
}

// A document in the format the client asked for: JSON when Accept names JSON, else XML (Eureka's
// default: Prometheus's eureka_sd sends no Accept and reads XML).
AdminResponse render(const AdminRequest& req, const json& doc) {
  AdminResponse r;
  const std::string accept = http::ascii_lowered(req.header("accept"));
  if (accept.find("json") == std::string::npos) {
    pugi::xml_document x;
    for (const auto& [k, v] : doc.items()) json_to_xml(x, k, v);
    std::ostringstream out;
    x.save(out, "  ");
    r.content_type = "application/xml";
    r.body = out.str();
  } else {
    r.content_type = "application/json";
    r.body = doc.dump();
  }
  return r;
}

// A number Eureka clients send as a number, a string, or {"$": n, "@enabled": ...}.
bool number_of(const json& v, int64_t& out) {
  const json& x = v.is_object() && v.contains("$") ? v["$"] : v;
  if (x.is_number_integer()) {
    out = x.get<int64_t>();
    return true;
  }
  if (!x.is_string()) return false;
  const std::string s = x.get<std::string>();
  auto r = std::from_chars(s.data(), s.data() + s.size(), out);
  return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

// A port object's "@enabled" ("true" as Eureka's XML and JSON write it, or a JSON boolean).
bool port_enabled(const json& v) {
  if (!v.is_object() || !v.contains("@enabled")) return false;
  const json& e = v["@enabled"];
  return e.is_boolean() ? e.get<bool>() : e.is_string() && e.get<std::string>() == "true";
}

const char* status_of(const registry::Instance& i) {
  if (i.draining) return "OUT_OF_SERVICE";
  if (!i.in_good_standing()) return "DOWN";
  return "UP";
}

json instance_view(const registry::Instance& i) {
  const std::string host = i.address.host(), base = (i.tls ? "https://" : "http://") + i.address.text + "/";
  json meta = json::object();
  for (const auto& [k, v] : i.meta) meta[k] = v;
  if (meta.empty()) meta["@class"] = "java.util.Collections$EmptyMap";
  const int64_t lease_s = i.ttl.count() / 1000;
  return json{{"instanceId", i.id},
              {"hostName", host},
              {"app", upper(i.service)},
              {"ipAddr", host},
              {"status", status_of(i)},
              {"overriddenStatus", i.draining ? "OUT_OF_SERVICE" : "UNKNOWN"},
              // An instance reached over TLS registered its securePort (and is reached only there).
              {"port", {{"$", i.tls ? 80 : i.address.port()}, {"@enabled", i.tls ? "false" : "true"}}},
              {"securePort", {{"$", i.tls ? i.address.port() : 443}, {"@enabled", i.tls ? "true" : "false"}}},
              {"countryId", 1},
              {"dataCenterInfo", {{"@class", "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo"}, {"name", "MyOwn"}}},
              {"leaseInfo", {{"renewalIntervalInSecs", std::max<int64_t>(1, lease_s / 3)}, {"durationInSecs", lease_s},
                             {"registrationTimestamp", 0}, {"lastRenewalTimestamp", 0}, {"evictionTimestamp", 0},
                             {"serviceUpTimestamp", 0}}},
              {"metadata", meta},
              {"homePageUrl", base},
              {"statusPageUrl", base + "info"},
              {"healthCheckUrl", base + "health"},
              {"vipAddress", i.service},
              {"secureVipAddress", i.service},
              {"isCoordinatingDiscoveryServer", "false"},
              {"lastUpdatedTimestamp", "0"},
              {"lastDirtyTimestamp", "0"},
              {"actionType", "ADDED"}};
}

json application_view(const registry::Service& svc, const std::string& name) {
  json list = json::array();
  for (const auto& [id, inst] : svc.instances) list.push_back(instance_view(inst));
  return json{{"name", upper(name)}, {"instance", list}};
}

}  // namespace

void EurekaApi::add_endpoints(EndpointTable& t) {
  Family f;
  f.name = "eureka";
  f.title = "Eureka";
  f.docs = "docs/consul-eureka.md";
  f.prefixes = {"/eureka/"};
  f.error = [](int status, const std::string& code, const std::string& message) { return answer(status, code, message); };
  f.unauthorized = [] {
    AdminResponse r = answer(401, "unauthorized", "this call needs the admin token (HTTP Basic password or bearer)");
    r.headers.emplace_back("WWW-Authenticate", "Basic realm=\"switchyard\"");
    return r;
  };
  const size_t fam = t.add_family(std::move(f));
  registry::Registry& reg = api_.registry();
  auto not_found = [] { return answer(404, "not_found", "no such application or instance"); };
  // Eureka clients use both roots (/eureka/ and /eureka/v2/): each row is in the table under both.
  auto add = [&](unsigned methods, const std::string& pattern, Access access, const char* help, std::function<AdminResponse(Call&)> h) {
    for (const char* root : {"/eureka", "/eureka/v2"}) {
      // Application names are case-insensitive in Eureka (clients send them upper-cased).
      t.add(Endpoint::row(methods, root + pattern, access, help, fam, [h, pattern](Call& c) {
        if (pattern.rfind("/apps/{", 0) == 0) {
          c.args[0] = http::ascii_lowered(c.args[0]);
          if (!registry::valid_service_name(c.args[0]))
            return answer(400, "bad_request", "application name must be 1-128 characters of [A-Za-z0-9._-]");
        }
        return h(c);
      }));
    }
  };
  add(kGet, "/apps", Access::kRead, "every application (JSON or XML by Accept)", [this](Call& c) { return apps(c.req, false); });
  add(kGet, "/apps/delta", Access::kRead, "the delta: always empty with the full hashcode (clients then fetch all)",
      [this](Call& c) { return apps(c.req, true); });
  add(kGet, "/instances/{id}", Access::kRead, "one instance by id", [&reg, not_found](Call& c) {
    auto found = reg.find_by_id(c.arg(0));
    if (found.empty()) return not_found();
    return render(c.req, {{"instance", instance_view(*found.front())}});
  });
  add(kGet, "/vips/{vip}", Access::kRead, "the applications of a VIP address (the service name)", [&reg](Call& c) {
    json list = json::array();
    auto it = reg.services().find(http::ascii_lowered(c.arg(0)));
    if (it != reg.services().end() && !it->second.instances.empty()) list.push_back(application_view(it->second, it->first));
    return render(c.req, {{"applications", {{"versions__delta", "-1"}, {"apps__hashcode", ""}, {"application", list}}}});
  });
  add(kPost, "/apps/{app}", Access::kRegistry, "register an instance document", [this](Call& c) { return registration(c.req, c.arg(0)); });
  add(kGet, "/apps/{app}", Access::kRead, "one application", [&reg, not_found](Call& c) {
    auto it = reg.services().find(c.arg(0));
    if (it == reg.services().end() || it->second.instances.empty()) return not_found();
    return render(c.req, {{"application", application_view(it->second, it->first)}});
  });
  add(kGet, "/apps/{app}/{id}", Access::kRead, "one instance", [&reg, not_found](Call& c) {
    const registry::Instance* inst = reg.find(c.arg(0), c.arg(1));
    return inst ? render(c.req, {{"instance", instance_view(*inst)}}) : not_found();
  });
  add(kPut, "/apps/{app}/{id}", Access::kRegistry, "renew the lease (404: register again)", [this, &reg, not_found](Call& c) {
    return reg.heartbeat(c.arg(0), c.arg(1), api_.hooks().now_ms()) ? answer(200) : not_found();
  });
  add(kDelete, "/apps/{app}/{id}", Access::kRegistry, "deregister", [&reg, not_found](Call& c) {
    const registry::Instance* inst = reg.find(c.arg(0), c.arg(1));
    if (!inst) return not_found();
    if (inst->source == registry::Source::kStatic)
      return answer(409, "static_instance", "instance comes from the config file; remove it there and reload");
    reg.remove(c.arg(0), c.arg(1));
    return answer(200);
  });
  // Status overrides: OUT_OF_SERVICE drains (no new requests), UP or removing the override ends it.
  add(kPut | kDelete, "/apps/{app}/{id}/status", Access::kRegistry, "status override (?value=OUT_OF_SERVICE drains, UP ends it)",
      [&reg, not_found](Call& c) {
        const std::string &service = c.arg(0), &id = c.arg(1);
        if (!reg.find(service, id)) return not_found();
        const std::string value = c.req.query_param("value");
        if (c.req.method == "DELETE" || value == "UP") {
          reg.set_drain(service, id, false);
          return answer(200);
        }
        if (value == "OUT_OF_SERVICE") {
          reg.set_drain(service, id, true);
          return answer(200);
        }
        return answer(400, "bad_request", "status value must be OUT_OF_SERVICE or UP");
      });
}

AdminResponse EurekaApi::apps(const AdminRequest& req, bool delta) {
  const registry::Registry& reg = api_.registry();
  json list = json::array();
  std::map<std::string, int> by_status;
  for (const auto& [name, svc] : reg.services()) {
    if (svc.instances.empty()) continue;
    for (const auto& [id, inst] : svc.instances) ++by_status[status_of(inst)];
    if (!delta) list.push_back(application_view(svc, name));
  }
  // apps__hashcode: count per status, statuses in order ("DOWN_1_UP_3_"). A delta is answered
  // empty with the full registry's hashcode: a client then sees the mismatch and fetches all.
  std::string hash;
  for (const auto& [st, n] : by_status) hash += st + "_" + std::to_string(n) + "_";
  return render(req, {{"applications", {{"versions__delta", std::to_string(reg.index())}, {"apps__hashcode", hash},
                                        {"application", list}}}});
}

bool decode_eureka_instance(const std::string& text_body, const std::string& content_type, const std::string& service,
                            EurekaRegistration& out, registry::Error& error) {
  auto fail = [&](const std::string& c, const std::string& m) {
    error = {400, c, m};
    return false;
  };
  json body;
  const std::string ctype = http::ascii_lowered(content_type);
  const bool xml = ctype.find("xml") != std::string::npos ||
                   (ctype.find("json") == std::string::npos && !text_body.empty() && text_body.find('<') < text_body.find('{'));
  if (xml) {
    pugi::xml_document doc;
    if (!doc.load_buffer(text_body.data(), text_body.size()) || !doc.document_element())
      return fail("bad_xml", "body must be an XML <instance> document");
    try {
      body = json{{doc.document_element().name(), xml_to_json(doc.document_element())}};
    } catch (const std::invalid_argument&) {
      return fail("bad_xml", "XML nested deeper than an instance document can be");
    }
  } else {
    body = json::parse(text_body, nullptr, false);
    if (body.is_discarded() || !body.is_object()) return fail("bad_json", "body must be a JSON {\"instance\": {...}} document");
  }
  const json inst = body.contains("instance") ? body["instance"] : body;
  if (!inst.is_object()) return fail("bad_field", "'instance' must be an object");
  auto str = [&](const char* k) { return inst.contains(k) && inst[k].is_string() ? inst[k].get<std::string>() : std::string(); };
  const std::string id = !str("instanceId").empty() ? str("instanceId") : str("hostName");
  if (!registry::valid_instance_id(id))
    return fail("bad_field", "instanceId (or hostName) must be 1-128 characters of [A-Za-z0-9._:-]");
  const std::string ip = !str("ipAddr").empty() ? str("ipAddr") : str("hostName");
  // An enabled securePort wins: the instance is reached over TLS there (services.X.tls, or the
  // system's CA bundle, verifies it), as a Eureka client with securePortEnabled expects.
  int64_t port = 0;
  const bool secure = inst.contains("securePort") && port_enabled(inst["securePort"]);
  if (secure) {
    if (!number_of(inst["securePort"], port) || port < 1 || port > 65535)
      return fail("bad_field", "securePort must be a number 1-65535 (switchyard routes to ipAddr:securePort over TLS)");
  } else if (!inst.contains("port") || !number_of(inst["port"], port) || port < 1 || port > 65535) {
    return fail("bad_field", "port must be a number 1-65535 (switchyard routes to ipAddr:port)");
  }
  int64_t lease = kEurekaLeaseSeconds;
  if (inst.contains("leaseInfo") && inst["leaseInfo"].is_object() && inst["leaseInfo"].contains("durationInSecs") &&
      (!number_of(inst["leaseInfo"]["durationInSecs"], lease) || lease < 1 || lease > 86400))
    return fail("bad_field", "leaseInfo.durationInSecs must be a number 1-86400");
  json doc = {{"address", (ip.find(':') != std::string::npos ? "[" + ip + "]" : ip) + ":" + std::to_string(port)},
              {"scheme", secure ? "https" : "http"},
              {"ttl", std::to_string(lease) + "s"}};
  if (inst.contains("metadata") && inst["metadata"].is_object()) {
    json meta = json::object();
    for (const auto& [k, v] : inst["metadata"].items())
      if (!k.empty() && k[0] != '@') meta[k] = v.is_string() ? v.get<std::string>() : v.dump();
    doc["meta"] = meta;
  }
  registry::Registration& r = out.reg;
  r.service = service;
  r.id = id;
  registry::Error err;
  if (!registry::decode_registration(doc, r, registry::DocKind::kRegistration, err)) return fail(err.code, err.message);
  out.status = str("status").empty() ? "UP" : str("status");
  return true;
}

AdminResponse EurekaApi::registration(const AdminRequest& req, const std::string& service) {
  EurekaRegistration in;
  registry::Error err;
  if (!decode_eureka_instance(req.body, req.header("content-type"), service, in, err)) return answer(err.status, err.code, err.message);
  const registry::Registration& r = in.reg;
  const std::string& id = r.id;
  registry::Registry::PutResult res;
  if (!api_.admit(r, res, err)) return answer(err.status, err.code, err.message);
  registry::Registry& reg = api_.registry();
  const std::string& status = in.status;
  if (status == "OUT_OF_SERVICE") {
    reg.set_drain(service, id, true);
  } else if (status != "UP") {  // DOWN, STARTING, UNKNOWN: registered, not routed
    reg.set_reported_health(service, id, registry::Health::kUnhealthy, false, "Eureka status " + status);
  } else if (const auto* i = reg.find(service, id); i && i->health_reason.rfind("Eureka status", 0) == 0) {
    reg.set_reported_health(service, id, registry::Health::kHealthy, false, "");
  }
  return answer(204);
}

}  // namespace sy::admin
