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

const char* status_of(const registry::Instance& i) {
  if (i.draining) return "OUT_OF_SERVICE";
  if (!i.in_good_standing()) return "DOWN";
  return "UP";
}

json instance_view(const registry::Instance& i) {
  const std::string host = i.address.host(), base = "http://" + i.address.text + "/";
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
              {"port", {{"$", i.address.port()}, {"@enabled", "true"}}},
              {"securePort", {{"$", 443}, {"@enabled", "false"}}},
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

bool EurekaApi::owns(const std::string& path) { return path.rfind("/eureka/", 0) == 0; }

AdminResponse EurekaApi::route(const AdminRequest& req) {
  const std::string& m = req.method;
  const std::string path = req.decoded_path();
  std::string rest = path.substr(path.rfind("/eureka/v2/", 0) == 0 ? 11 : 8);
  std::vector<std::string> parts;
  for (size_t i = 0; i <= rest.size();) {
    size_t j = rest.find('/', i);
    if (j == std::string::npos) j = rest.size();
    if (j > i) parts.push_back(rest.substr(i, j - i));
    i = j + 1;
  }
  if ((m == "POST" || m == "PUT" || m == "DELETE") && !api_.authorized(req)) {
    AdminResponse r = answer(401, "unauthorized", "this call needs the admin token (HTTP Basic password or bearer)");
    r.headers.emplace_back("WWW-Authenticate", "Basic realm=\"switchyard\"");
    return r;
  }
  registry::Registry& reg = api_.registry();
  auto not_found = [&] { return answer(404, "not_found", "no such application or instance"); };
  if (parts.empty() || (parts[0] != "apps" && parts[0] != "instances" && parts[0] != "vips"))
    return answer(404, "not_found", "no Eureka endpoint " + m + " " + req.path + " (docs/consul-eureka.md lists the supported calls)");

  if (parts[0] == "instances" && parts.size() == 2 && m == "GET") {
    auto found = reg.find_by_id(parts[1]);
    if (found.empty()) return not_found();
    return render(req, {{"instance", instance_view(*found.front())}});
  }
  if (parts[0] == "vips" && parts.size() == 2 && m == "GET") {
    json apps = json::array();
    auto it = reg.services().find(http::ascii_lowered(parts[1]));
    if (it != reg.services().end() && !it->second.instances.empty()) apps.push_back(application_view(it->second, it->first));
    return render(req, {{"applications", {{"versions__delta", "-1"}, {"apps__hashcode", ""}, {"application", apps}}}});
  }
  if (parts[0] != "apps") return answer(405, "method_not_allowed", "use GET");

  if (parts.size() == 1 || (parts.size() == 2 && parts[1] == "delta")) {
    if (m != "GET") return answer(405, "method_not_allowed", "use GET on apps");
    json apps = json::array();
    std::map<std::string, int> by_status;
    for (const auto& [name, svc] : reg.services()) {
      if (svc.instances.empty()) continue;
      for (const auto& [id, inst] : svc.instances) ++by_status[status_of(inst)];
      if (parts.size() == 1) apps.push_back(application_view(svc, name));
    }
    // apps__hashcode: count per status, statuses in order ("DOWN_1_UP_3_"). A delta is answered
    // empty with the full registry's hashcode: a client then sees the mismatch and fetches all.
    std::string hash;
    for (const auto& [st, n] : by_status) hash += st + "_" + std::to_string(n) + "_";
    return render(req, {{"applications", {{"versions__delta", std::to_string(reg.index())}, {"apps__hashcode", hash},
                                          {"application", apps}}}});
  }
  const std::string service = http::ascii_lowered(parts[1]);
  if (!registry::valid_service_name(service)) return answer(400, "bad_request", "application name must be 1-128 characters of [A-Za-z0-9._-]");
  if (parts.size() == 2) {
    if (m == "POST") return registration(req, service);
    if (m != "GET") return answer(405, "method_not_allowed", "use POST (register) or GET on apps/{APP}");
    auto it = reg.services().find(service);
    if (it == reg.services().end() || it->second.instances.empty()) return not_found();
    return render(req, {{"application", application_view(it->second, it->first)}});
  }
  const std::string& id = parts[2];
  if (parts.size() == 3) {
    if (m == "GET") {
      const registry::Instance* inst = reg.find(service, id);
      return inst ? render(req, {{"instance", instance_view(*inst)}}) : not_found();
    }
    if (m == "PUT") {  // renewal; 404 makes the client register again
      return reg.heartbeat(service, id, api_.hooks().now_ms()) ? answer(200) : not_found();
    }
    if (m == "DELETE") {
      const registry::Instance* inst = reg.find(service, id);
      if (!inst) return not_found();
      if (inst->source == registry::Source::kStatic)
        return answer(409, "static_instance", "instance comes from the config file; remove it there and reload");
      reg.remove(service, id);
      return answer(200);
    }
    return answer(405, "method_not_allowed", "use GET, PUT (renew) or DELETE on apps/{APP}/{id}");
  }
  if (parts.size() == 4 && parts[3] == "status") {
    // Status overrides: OUT_OF_SERVICE drains (no new requests), UP or removing the override ends it.
    if (!reg.find(service, id)) return not_found();
    const std::string value = req.query_param("value");
    if (m == "DELETE" || (m == "PUT" && value == "UP")) {
      reg.set_drain(service, id, false);
      return answer(200);
    }
    if (m == "PUT" && value == "OUT_OF_SERVICE") {
      reg.set_drain(service, id, true);
      return answer(200);
    }
    if (m == "PUT") return answer(400, "bad_request", "status value must be OUT_OF_SERVICE or UP");
    return answer(405, "method_not_allowed", "use PUT or DELETE on apps/{APP}/{id}/status");
  }
  return answer(404, "not_found", "no Eureka endpoint " + m + " " + req.path + " (docs/consul-eureka.md lists the supported calls)");
}

bool decode_eureka_instance(const std::string& text_body, const std::string& content_type, const std::string& service,
                            EurekaRegistration& out, std::string& code, std::string& message) {
  auto fail = [&](const char* c, const std::string& m) {
    code = c;
    message = m;
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
  int64_t port = 0;
  if (!inst.contains("port") || !number_of(inst["port"], port) || port < 1 || port > 65535)
    return fail("bad_field", "port must be a number 1-65535 (switchyard routes to ipAddr:port)");
  int64_t lease = kEurekaLeaseSeconds;
  if (inst.contains("leaseInfo") && inst["leaseInfo"].is_object() && inst["leaseInfo"].contains("durationInSecs") &&
      (!number_of(inst["leaseInfo"]["durationInSecs"], lease) || lease < 1 || lease > 86400))
    return fail("bad_field", "leaseInfo.durationInSecs must be a number 1-86400");
  json doc = {{"address", (ip.find(':') != std::string::npos ? "[" + ip + "]" : ip) + ":" + std::to_string(port)},
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
  registry::DecodeError err;
  if (!registry::decode_registration(doc, r, registry::DocKind::kRegistration, err)) return fail(err.code.c_str(), err.message);
  out.status = str("status").empty() ? "UP" : str("status");
  return true;
}

AdminResponse EurekaApi::registration(const AdminRequest& req, const std::string& service) {
  EurekaRegistration in;
  std::string code, message;
  if (!decode_eureka_instance(req.body, req.header("content-type"), service, in, code, message))
    return answer(400, code, message);
  const registry::Registration& r = in.reg;
  const std::string& id = r.id;
  registry::Registry::PutResult res;
  AdminApi::Refusal why;
  if (!api_.admit(r, res, why)) return answer(why.status, why.code, why.message);
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
