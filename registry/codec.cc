// The registry's documents to and from JSON (see codec.h for their shapes).
#include "registry/codec.h"

#include <algorithm>
#include <charconv>
#include <cmath>

namespace sy::registry {

using nlohmann::json;

namespace {

constexpr int64_t kMaxTtlMs = 24LL * 3600 * 1000;

bool fail(Error& err, const char* code, std::string message) {
  err.code = code;
  err.message = std::move(message);
  return false;
}

const char* type_name(conf::HealthCheck::Type t) {
  switch (t) {
    case conf::HealthCheck::Type::kTcp: return "tcp";
    case conf::HealthCheck::Type::kGrpc: return "grpc";
    case conf::HealthCheck::Type::kNone: return "none";
    case conf::HealthCheck::Type::kHttp: break;
  }
  return "http";
}

// A status or range as the documents hold it: "200-399", "204" or 204.
bool parse_status_range(const json& item, std::pair<int, int>& out) {
  const std::string t = item.is_string() ? item.get<std::string>()
                        : item.is_number_unsigned() ? std::to_string(item.get<uint64_t>())
                                                    : std::string();
  return conf::parse_status_range(t, out).empty();
}

}  // namespace

std::string format_duration(conf::Millis d) {
  const int64_t ms = d.count();
  if (ms != 0 && ms % 3600000 == 0) return std::to_string(ms / 3600000) + "h";
  if (ms != 0 && ms % 60000 == 0) return std::to_string(ms / 60000) + "m";
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

std::string format_percent(double fraction) {
  // Fractions come from "N%" with a short decimal N, so N read back to 10 significant digits is
  // exactly what was written, and parsing it gives the same double again.
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof buf, fraction * 100, std::chars_format::general, 10);
  return std::string(buf, r.ptr) + "%";
}

bool valid_service_name(const std::string& s) {
  if (s.empty() || s.size() > 128) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
  });
}

bool valid_instance_id(const std::string& s) {
  if (s.empty() || s.size() > 128) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
           c == '.' || c == ':' || c == '[' || c == ']';
  });
}

// ---- health check ----

json encode_health_check(const conf::HealthCheck& h) {
  json statuses = json::array();
  for (const auto& [lo, hi] : h.expected_status)
    statuses.push_back(lo == hi ? std::to_string(lo) : std::to_string(lo) + "-" + std::to_string(hi));
  json j{{"type", type_name(h.type)},
         {"path", h.path},
         {"host", h.host},
         {"expected_status", statuses},
         {"interval", format_duration(h.interval)},
         {"timeout", format_duration(h.timeout)},
         {"jitter", format_percent(h.jitter)},
         {"healthy_threshold", h.healthy_threshold},
         {"unhealthy_threshold", h.unhealthy_threshold}};
  if (h.type == conf::HealthCheck::Type::kGrpc) j["grpc_service"] = h.grpc_service;
  return j;
}

bool decode_health_check(const json& j, conf::HealthCheck& h, Error& err) {
  if (!j.is_object()) return fail(err, "bad_field", "'health_check' must be an object");
  for (const auto& [k, v] : j.items()) {
    if (k == "type") {
      const std::string t = v.is_string() ? v.get<std::string>() : "";
      if (t == "http") h.type = conf::HealthCheck::Type::kHttp;
      else if (t == "tcp") h.type = conf::HealthCheck::Type::kTcp;
      else if (t == "grpc") h.type = conf::HealthCheck::Type::kGrpc;
      else if (t == "none") h.type = conf::HealthCheck::Type::kNone;
      else return fail(err, "bad_field", "health_check.type must be http, tcp, grpc or none");
    } else if (k == "grpc_service") {
      if (!v.is_string() || v.get<std::string>().size() > 255)
        return fail(err, "bad_field", "health_check.grpc_service must be a string of at most 255 characters");
      h.grpc_service = v.get<std::string>();
    } else if (k == "path") {
      if (!v.is_string() || v.get<std::string>().empty() || v.get<std::string>()[0] != '/')
        return fail(err, "bad_field", "health_check.path must be a string starting with '/'");
      h.path = v.get<std::string>();
    } else if (k == "interval" || k == "timeout") {
      conf::Millis m;
      if (!v.is_string() || !conf::parse_duration(v.get<std::string>(), m).empty() || m.count() <= 0)
        return fail(err, "bad_field", "health_check." + k + " must be a duration such as \"5s\"");
      (k == "interval" ? h.interval : h.timeout) = m;
    } else if (k == "healthy_threshold" || k == "unhealthy_threshold") {
      if (!v.is_number_unsigned() || v.get<uint64_t>() < 1 || v.get<uint64_t>() > 1000)
        return fail(err, "bad_field", "health_check." + k + " must be a number 1..1000");
      (k == "healthy_threshold" ? h.healthy_threshold : h.unhealthy_threshold) = v.get<uint32_t>();
    } else if (k == "host") {
      if (!v.is_string() || v.get<std::string>().size() > 255)
        return fail(err, "bad_field", "health_check.host must be a string of at most 255 characters");
      h.host = v.get<std::string>();
    } else if (k == "jitter") {
      if (!v.is_string() || !conf::parse_percent(v.get<std::string>(), h.jitter).empty())
        return fail(err, "bad_field", "health_check.jitter must be a percentage such as \"10%\"");
    } else if (k == "expected_status") {
      if (!v.is_array() || v.empty() || v.size() > 32)
        return fail(err, "bad_field", "health_check.expected_status must be a list such as [\"200-399\"]");
      std::vector<std::pair<int, int>> ranges;
      for (const auto& item : v) {
        std::pair<int, int> range;
        if (!parse_status_range(item, range))
          return fail(err, "bad_field", "health_check.expected_status entries must be statuses or ranges like \"200-399\"");
        ranges.push_back(range);
      }
      h.expected_status = std::move(ranges);
    } else {
      return fail(err, "unknown_field", "unknown field health_check." + k);
    }
  }
  return true;
}

// ---- registration ----

json encode_registration(const Registration& r, DocKind kind) {
  json routes = json::array();
  for (const auto& rt : r.routes)
    routes.push_back({{"host", rt.host}, {"path_prefix", rt.path_prefix}, {"strip_prefix", rt.strip_prefix}});
  json j = {{"address", r.address.text},
            {"scheme", r.tls ? "https" : "http"},
            {"weight", r.weight},
            {"tags", r.tags},
            {"meta", r.meta},
            {"zone", r.zone},
            {"ttl", format_duration(r.leased ? r.ttl : conf::Millis(0))},
            {"routes", routes}};
  if (r.protocol) j["protocol"] = conf::upstream_protocol_name(*r.protocol);
  if (r.has_health_check) j["health_check"] = encode_health_check(r.health_check);
  if (r.deregister_critical_after.count() > 0)
    j["deregister_critical_after"] = format_duration(r.deregister_critical_after);
  if (kind == DocKind::kStored) {
    j["service"] = r.service;
    j["id"] = r.id;
    j["draining"] = r.draining;
    if (r.written_at_ms > 0) j["written_at_ms"] = r.written_at_ms;
  }
  return j;
}

bool decode_registration(const json& j, Registration& r, DocKind kind, Error& err) {
  if (!j.is_object()) return fail(err, "bad_json", "body must be a JSON object");
  bool have_address = false, have_service = false, have_id = false, have_scheme = false;
  for (const auto& [k, v] : j.items()) {
    if (k == "address") {
      if (!v.is_string()) return fail(err, "bad_field", "'address' must be a string \"host:port\"");
      std::string e = conf::parse_address(v.get<std::string>(), r.address, false);
      if (!e.empty()) return fail(err, "bad_field", "'address': " + e);
      if (r.address.is_unspecified()) return fail(err, "bad_field", "'address' must not be 0.0.0.0 or ::");
      have_address = true;
    } else if (k == "scheme") {
      if (!v.is_string() || (v.get<std::string>() != "http" && v.get<std::string>() != "https"))
        return fail(err, "bad_field", "'scheme' must be \"http\" or \"https\"");
      r.tls = v.get<std::string>() == "https";
      have_scheme = true;
    } else if (k == "protocol") {
      conf::UpstreamProtocol p;
      if (!v.is_string() || !conf::parse_upstream_protocol(v.get<std::string>(), p))
        return fail(err, "bad_field", "'protocol' must be \"http1\", \"h2c\" or \"h2\"");
      r.protocol = p;
    } else if (k == "weight") {
      if (!v.is_number_unsigned() || v.get<uint64_t>() < 1 || v.get<uint64_t>() > 10000)
        return fail(err, "bad_field", "'weight' must be a whole number 1..10000");
      r.weight = v.get<uint32_t>();
    } else if (k == "tags") {
      if (!v.is_array()) return fail(err, "bad_field", "'tags' must be a list of strings");
      if (v.size() > 64) return fail(err, "bad_field", "'tags' may hold at most 64 entries");
      r.tags.clear();
      for (const auto& t : v) {
        if (!t.is_string() || t.get<std::string>().empty() || t.get<std::string>().size() > 64)
          return fail(err, "bad_field", "'tags' entries must be strings of 1-64 characters");
        r.tags.push_back(t.get<std::string>());
      }
    } else if (k == "meta") {
      if (!v.is_object()) return fail(err, "bad_field", "'meta' must be an object of strings");
      if (v.size() > 64) return fail(err, "bad_field", "'meta' may hold at most 64 entries");
      r.meta.clear();
      for (const auto& [mk, mv] : v.items()) {
        if (!mv.is_string()) return fail(err, "bad_field", "'meta." + mk + "' must be a string");
        r.meta[mk] = mv.get<std::string>();
      }
    } else if (k == "zone") {
      if (!v.is_string()) return fail(err, "bad_field", "'zone' must be a string");
      r.zone = v.get<std::string>();
    } else if (k == "ttl") {
      if (!v.is_string()) return fail(err, "bad_field", "'ttl' must be a duration string such as \"30s\"");
      conf::Millis ttl;
      std::string e = conf::parse_duration(v.get<std::string>(), ttl);
      if (!e.empty()) return fail(err, "bad_field", "'ttl': " + e);
      if (ttl.count() != 0 && (ttl.count() < 1000 || ttl.count() > kMaxTtlMs))
        return fail(err, "bad_field", "'ttl' must be between 1s and 24h (or \"0s\": no lease)");
      r.ttl = ttl;
      r.leased = ttl.count() > 0;
    } else if (k == "deregister_critical_after") {
      conf::Millis d;
      if (!v.is_string() || !conf::parse_duration(v.get<std::string>(), d).empty() || d.count() < 0)
        return fail(err, "bad_field", "'deregister_critical_after' must be a duration such as \"90s\" (\"0s\": never)");
      if (d.count() > 0 && d.count() < 1000) return fail(err, "bad_field", "'deregister_critical_after' must be at least 1s");
      r.deregister_critical_after = d;
    } else if (k == "health_check") {
      conf::HealthCheck h;
      if (!decode_health_check(v, h, err)) return false;
      r.has_health_check = true;
      r.health_check = std::move(h);
    } else if (k == "routes") {
      if (!v.is_array()) return fail(err, "bad_field", "'routes' must be a list");
      if (v.size() > 64) return fail(err, "bad_field", "'routes' may hold at most 64 entries");
      r.routes.clear();
      for (const auto& rt : v) {
        if (!rt.is_object()) return fail(err, "bad_field", "'routes' entries must be objects");
        RouteSpec spec;
        for (const auto& [rk, rv] : rt.items()) {
          if (rk == "host" && rv.is_string()) spec.host = rv.get<std::string>();
          else if (rk == "path_prefix" && rv.is_string()) spec.path_prefix = rv.get<std::string>();
          else if (rk == "strip_prefix" && rv.is_boolean()) spec.strip_prefix = rv.get<bool>();
          else return fail(err, "bad_field", "routes entry field '" + rk + "' is unknown or of the wrong type");
        }
        if (!spec.path_prefix.empty() && spec.path_prefix[0] != '/')
          return fail(err, "bad_field", "routes.path_prefix must start with '/'");
        if (spec.host.empty() && spec.path_prefix.empty())
          return fail(err, "bad_field", "a route needs a host or a path_prefix");
        r.routes.push_back(spec);
      }
    } else if (kind == DocKind::kStored && k == "service") {
      if (!v.is_string() || !valid_service_name(v.get<std::string>()))
        return fail(err, "bad_field", "'service' must be 1-128 characters of [A-Za-z0-9._-]");
      r.service = v.get<std::string>();
      have_service = true;
    } else if (kind == DocKind::kStored && k == "id") {
      if (!v.is_string() || !valid_instance_id(v.get<std::string>()))
        return fail(err, "bad_field", "'id' must be 1-128 characters of [A-Za-z0-9._:-]");
      r.id = v.get<std::string>();
      have_id = true;
    } else if (kind == DocKind::kStored && k == "draining") {
      if (!v.is_boolean()) return fail(err, "bad_field", "'draining' must be true or false");
      r.draining = v.get<bool>();
    } else if (kind == DocKind::kStored && k == "written_at_ms") {
      if (!v.is_number_integer() || v.get<int64_t>() < 0) return fail(err, "bad_field", "'written_at_ms' must be a whole number");
      r.written_at_ms = v.get<int64_t>();
    } else {
      return fail(err, "unknown_field", "unknown field '" + k + "'");
    }
  }
  if (!have_address) return fail(err, "missing_field", "'address' is required");
  // h2 is HTTP/2 over TLS and h2c over plain TCP: the scheme follows, and one that contradicts it
  // is refused rather than guessed at.
  if (r.protocol == conf::UpstreamProtocol::kH2) {
    if (have_scheme && !r.tls) return fail(err, "bad_field", "'protocol' \"h2\" is HTTP/2 over TLS, but 'scheme' is \"http\" (use \"h2c\")");
    r.tls = true;
  } else if (r.protocol == conf::UpstreamProtocol::kH2c && r.tls) {
    return fail(err, "bad_field", "'protocol' \"h2c\" is HTTP/2 over plain TCP, but 'scheme' is \"https\" (use \"h2\")");
  }
  if (kind == DocKind::kStored && !have_service) return fail(err, "missing_field", "'service' is required");
  if (kind == DocKind::kStored && !have_id) return fail(err, "missing_field", "'id' is required");
  return true;
}

Registration registration_of(const Instance& inst) {
  Registration r;
  r.service = inst.service;
  r.id = inst.id;
  r.address = inst.address;
  r.tls = inst.tls;
  r.protocol = inst.protocol;
  r.weight = inst.weight;
  r.tags = inst.tags;
  r.meta = inst.meta;
  r.zone = inst.zone;
  r.ttl = inst.ttl;
  r.leased = inst.ttl.count() > 0;
  r.routes = inst.routes;
  r.has_health_check = inst.has_health_check;
  r.health_check = inst.health_check;
  r.deregister_critical_after = inst.deregister_critical_after;
  r.draining = inst.draining;
  return r;
}

// ---- instance view ----

json encode_instance(const Instance& inst, const conf::HealthCheck* service_check) {
  json j = encode_registration(registration_of(inst), DocKind::kStored);
  j["state"] = inst.state_name();
  j["source"] = inst.source == Source::kStatic ? "static" : "dynamic";
  j["circuit_breaker"] = inst.breaker_open ? "open" : "closed";
  j["ejections"] = inst.ejections;
  // The check that actually probes it: its own, else its service's, else none.
  if (!inst.has_health_check) j["health_check"] = service_check ? encode_health_check(*service_check) : json(nullptr);
  j["health_check_from"] = inst.has_health_check ? "registration" : service_check ? "service" : "none";
  return j;
}

}  // namespace sy::registry
