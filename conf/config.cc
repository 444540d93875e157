// YAML → Config in one pass that reports every problem with its file position.
// Unknown keys, wrong types, bad values and out-of-range numbers are all collected; the caller
// prints them one per line as "FILE:LINE:COL: message".
#include "conf/config.h"

#include <yaml-cpp/yaml.h>

#include <fstream>
#include <algorithm>
#include <functional>
#include <set>
#include <charconv>
#include <sstream>
#include <cstring>
#include <utility>
#include <cerrno>

namespace sy::conf {

namespace {

class Loader {
 public:
  Loader(std::string name, std::vector<std::string>& errors) : name_(std::move(name)), errors_(errors) {}

  void error(const YAML::Node& n, const std::string& msg) {
    YAML::Mark m = n.Mark();
    error_at(m.line + 1, m.column + 1, msg);
  }
  void error_at(int line, int col, const std::string& msg) {
    std::ostringstream o;
    o << name_ << ":" << line << ":" << col << ": " << msg;
    errors_.push_back(o.str());
  }
  // At a position recorded while loading; a key that was not written (a default) reports 1:1.
  void error_at(Pos p, const std::string& msg) { error_at(p.line ? p.line : 1, p.line ? p.col : 1, msg); }
  static Pos pos(const YAML::Node& n) { return {n.Mark().line + 1, n.Mark().column + 1}; }

  // Visits every key of a mapping; keys not in `handlers` are reported as unknown.
  using Handler = std::function<void(const YAML::Node&)>;
  void map(const YAML::Node& n, const std::string& where,
           const std::vector<std::pair<std::string, Handler>>& handlers) {
    if (n.IsNull()) return;
    if (!n.IsMap()) {
      error(n, where + " must be a mapping");
      return;
    }
    for (const auto& kv : n) {
      std::string key = kv.first.Scalar();
      bool found = false;
      for (const auto& [name, h] : handlers) {
        if (name == key) {
          h(kv.second);
          found = true;
          break;
        }
      }
      if (!found) error(kv.first, "unknown key '" + key + "' in " + where);
    }
  }

  bool scalar(const YAML::Node& n, const std::string& key, std::string& out) {
    if (!n.IsScalar()) {
      error(n, "'" + key + "' must be a scalar value");
      return false;
    }
    out = n.Scalar();
    return true;
  }
  void str(const YAML::Node& n, const std::string& key, std::string& out) {
    if (n.IsNull()) {
      out.clear();
      return;
    }
    scalar(n, key, out);
  }
  void uint(const YAML::Node& n, const std::string& key, uint32_t& out, uint64_t lo, uint64_t hi) {
    uint64_t v = out;
    uint64(n, key, v, lo, std::min<uint64_t>(hi, UINT32_MAX));
    out = static_cast<uint32_t>(v);
  }
  void uint64(const YAML::Node& n, const std::string& key, uint64_t& out, uint64_t lo, uint64_t hi) {
    std::string s;
    if (!scalar(n, key, s)) return;
    uint64_t v = 0;
    const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
    const bool ok = !s.empty() && r.ec == std::errc() && r.ptr == s.data() + s.size();
    if (!ok) {
      error(n, "'" + key + "' must be a whole number, got '" + s + "'");
    } else if (v < lo || v > hi) {
      error(n, "'" + key + "' is " + s + ", out of range " + std::to_string(lo) + ".." + std::to_string(hi));
    } else {
      out = v;
    }
  }
  void boolean(const YAML::Node& n, const std::string& key, bool& out) {
    std::string s;
    if (!scalar(n, key, s)) return;
    if (s == "true" || s == "yes" || s == "on") out = true;
    else if (s == "false" || s == "no" || s == "off") out = false;
    else error(n, "'" + key + "' must be true or false, got '" + s + "'");
  }
  void duration(const YAML::Node& n, const std::string& key, Millis& out, bool allow_zero = true) {
    std::string s;
    if (!scalar(n, key, s)) return;
    Millis v;
    std::string e = parse_duration(s, v);
    if (!e.empty()) error(n, "'" + key + "': " + e);
    else if (!allow_zero && v.count() == 0) error(n, "'" + key + "' must be greater than 0");
    else out = v;
  }
  void conditions(const YAML::Node& n, const std::string& key, Conditions& out) {
    std::vector<std::string> words;
    str_list(n, key, words);
    Conditions c;
    bool ok = true;
    for (const auto& w : words) {
      if (!c.add(w)) {
        error(n, "'" + key + "' entry '" + w + "' must be connect-failure, reset, timeout, a status code 100..599 or a gRPC status (cancelled, deadline-exceeded, internal, resource-exhausted, unavailable)");
        ok = false;
      }
    }
    if (ok) out = c;
  }
  void size(const YAML::Node& n, const std::string& key, uint64_t& out, uint64_t lo, uint64_t hi) {
    std::string s;
    if (!scalar(n, key, s)) return;
    uint64_t v;
    std::string e = parse_size(s, v);
    if (!e.empty()) error(n, "'" + key + "': " + e);
    else if (v < lo || v > hi)
      error(n, "'" + key + "' is " + s + ", out of range " + std::to_string(lo) + ".." + std::to_string(hi) + " bytes");
    else out = v;
  }
  void address(const YAML::Node& n, const std::string& key, Address& out, bool allow_port0) {
    std::string s;
    if (!scalar(n, key, s)) return;
    std::string e = parse_address(s, out, allow_port0);
    if (!e.empty()) error(n, "'" + key + "': " + e);
  }
  void str_list(const YAML::Node& n, const std::string& key, std::vector<std::string>& out) {
    out.clear();
    if (n.IsNull()) return;
    if (!n.IsSequence()) {
      error(n, "'" + key + "' must be a list");
      return;
    }
    for (const auto& item : n) {
      std::string s;
      if (scalar(item, key, s)) out.push_back(s);
    }
  }

  void load(const YAML::Node& root, Config& c);

 private:
  void load_client(const YAML::Node& n, ClientLimits& c);
  void load_service(const std::string& name, const YAML::Node& n, Service& s);
  void load_health(const YAML::Node& n, HealthCheck& h);
  void load_etcd(const YAML::Node& n, EtcdConf& e) {
    map(n, "registry.etcd",
        {{"endpoints",
          [&](const YAML::Node& v) {
            e.endpoints.clear();
            if (!v.IsSequence()) {
              error(v, "'registry.etcd.endpoints' must be a list of host:port addresses");
              return;
            }
            size_t https = 0;
            for (const auto& item : v) {
              Address a;
              std::string text;
              if (!scalar(item, "registry.etcd.endpoints", text)) continue;
              // http:// or https:// as etcd's own flags write them; bare host:port is plain.
              std::string_view t = text;
              if (t.substr(0, 8) == "https://") {
                t.remove_prefix(8);
                ++https;
              } else if (t.substr(0, 7) == "http://") {
                t.remove_prefix(7);
              }
              if (!t.empty() && t.back() == '/') t.remove_suffix(1);
              std::string err = parse_address(t, a, false);
              if (!err.empty()) error(item, "'registry.etcd.endpoints': " + err);
              e.endpoints.push_back(a);
            }
            if (e.endpoints.empty()) error(v, "'registry.etcd.endpoints' needs at least one address");
            if (https > 0 && https != e.endpoints.size())
              error(v, "'registry.etcd.endpoints' mixes https:// and plain endpoints: one cluster speaks one or the other");
            if (https > 0) e.tls.enabled = true;
          }},
         {"tls", [&](const YAML::Node& v) { load_client_tls(v, "registry.etcd.tls", e.tls, false); }},
         {"prefix",
          [&](const YAML::Node& v) {
            str(v, "registry.etcd.prefix", e.prefix);
            if (e.prefix.empty() || e.prefix.size() > 256 || e.prefix.back() != '/')
              error(v, "'registry.etcd.prefix' must be 1-256 characters ending in '/', such as /switchyard/");
          }},
         {"timeout", [&](const YAML::Node& v) { duration(v, "registry.etcd.timeout", e.timeout, false); }}});
  }
  void load_route(const YAML::Node& n, Route& r);
  void load_listen_entry(const YAML::Node& n, Address& a, ListenerTls& t);
  bool alpn_written_ = false;  // load_listener_tls saw an `alpn` key
  void load_listener_tls(const YAML::Node& n, const std::string& where, ListenerTls& t);
  void load_client_tls(const YAML::Node& n, const std::string& where, ClientTls& t, bool has_enabled);
  void load_rate_limit(const std::string& name, const YAML::Node& n, RateLimit& r);
  void rate_limit_ref(const YAML::Node& n, const std::string& key, RateLimitRef& ref) {
    ref.pos = pos(n);
    str(n, key, ref.name);
  }
  void file(const YAML::Node& n, const std::string& key, FileRef& out) {
    out.pos = pos(n);
    str(n, key, out.path);
  }

  std::string name_;
  std::vector<std::string>& errors_;
  // For the cross-field checks at the end of load().
  Pos admin_listen_pos_, admin_token_pos_, admin_read_token_pos_;
  bool read_token_set_ = false;
};

bool valid_name(const std::string& s) {
  if (s.empty() || s.size() > 128) return false;
  for (char c : s) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '_' || c == '.';
    if (!ok) return false;
  }
  return true;
}

void Loader::load(const YAML::Node& root, Config& c) {
  if (root.IsNull()) return;
  if (!root.IsMap()) {
    error(root, "the top level must be a mapping of keys (listen, admin, services, ...)");
    return;
  }
  map(root, "the top level",
      {
          {"listen",
           [&](const YAML::Node& n) {
             c.listen.clear();
             c.listen_tls.clear();
             auto one = [&](const YAML::Node& item) {
               Address a;
               ListenerTls t;
               load_listen_entry(item, a, t);
               c.listen.push_back(a);
               c.listen_tls.push_back(t);
             };
             if (n.IsSequence()) {
               for (const auto& item : n) one(item);
               if (c.listen.empty()) error(n, "'listen' needs at least one address");
             } else {
               one(n);
             }
           }},
          {"workers", [&](const YAML::Node& n) { uint(n, "workers", c.workers, 0, 256); }},
          {"max_connections",
           [&](const YAML::Node& n) {
             uint32_t v = 0;
             uint(n, "max_connections", v, 0, 10000000);
             c.max_connections = v;
           }},
          {"zone", [&](const YAML::Node& n) { str(n, "zone", c.zone); }},
          {"shutdown_timeout", [&](const YAML::Node& n) { duration(n, "shutdown_timeout", c.shutdown_timeout); }},
          {"log_level",
           [&](const YAML::Node& n) {
             std::string s;
             if (!scalar(n, "log_level", s)) return;
             if (s != "debug" && s != "info" && s != "warn" && s != "error")
               error(n, "'log_level' must be one of debug, info, warn, error; got '" + s + "'");
             else c.log_level = s;
           }},
          {"client", [&](const YAML::Node& n) { load_client(n, c.client); }},
          {"http2",
           [&](const YAML::Node& n) {
             map(n, "http2",
                 {{"max_concurrent_streams", [&](const YAML::Node& v) { uint(v, "http2.max_concurrent_streams", c.http2.max_concurrent_streams, 1, 100000); }},
                  // RFC 9113 §6.5.2: a window is at most 2^31-1; below 16 KiB a frame could never be full.
                  {"initial_stream_window", [&](const YAML::Node& v) { size(v, "http2.initial_stream_window", c.http2.initial_stream_window, 16 * 1024, 2147483647); }},
                  {"connection_window", [&](const YAML::Node& v) { size(v, "http2.connection_window", c.http2.connection_window, 64 * 1024, 2147483647); }},
                  {"max_header_list_bytes", [&](const YAML::Node& v) { size(v, "http2.max_header_list_bytes", c.http2.max_header_list_bytes, 1024, 16 * 1024 * 1024); }},
                  {"max_control_frames_per_second", [&](const YAML::Node& v) { uint(v, "http2.max_control_frames_per_second", c.http2.max_control_frames_per_second, 1, 1000000); }}});
           }},
          {"admin",
           [&](const YAML::Node& n) {
             map(n, "admin",
                 {{"listen",
                   [&](const YAML::Node& v) {
                     admin_listen_pos_ = pos(v);
                     address(v, "admin.listen", c.admin.listen, true);
                   }},
                  {"token",
                   [&](const YAML::Node& v) {
                     admin_token_pos_ = pos(v);
                     str(v, "admin.token", c.admin.token);
                   }},
                  {"read_token",
                   [&](const YAML::Node& v) {
                     admin_read_token_pos_ = pos(v);
                     read_token_set_ = true;
                     boolean(v, "admin.read_token", c.admin.read_token);
                   }},
                  {"max_connections", [&](const YAML::Node& v) { uint(v, "admin.max_connections", c.admin.max_connections, 1, 100000); }},
                  {"tls", [&](const YAML::Node& v) { load_listener_tls(v, "admin.tls", c.admin.tls); }}});
           }},
          {"registry",
           [&](const YAML::Node& n) {
             map(n, "registry",
                 {{"backend",
                   [&](const YAML::Node& v) {
                     std::string b;
                     if (!scalar(v, "registry.backend", b)) return;
                     if (b == "embedded") c.registry.backend = RegistryConf::Backend::kEmbedded;
                     else if (b == "etcd") c.registry.backend = RegistryConf::Backend::kEtcd;
                     else error(v, "'registry.backend' must be embedded or etcd; got '" + b + "'");
                   }},
                  {"etcd", [&](const YAML::Node& v) { load_etcd(v, c.registry.etcd); }},
                  {"snapshot", [&](const YAML::Node& v) { str(v, "registry.snapshot", c.registry.snapshot); }},
                  {"default_ttl",
                   [&](const YAML::Node& v) { duration(v, "registry.default_ttl", c.registry.default_ttl, false); }},
                  {"journal_max",
                   [&](const YAML::Node& v) { size(v, "registry.journal_max", c.registry.journal_max, 4096, UINT64_C(1) << 40); }},
                  {"datacenter",
                   [&](const YAML::Node& v) {
                     str(v, "registry.datacenter", c.registry.datacenter);
                     if (c.registry.datacenter.empty() || c.registry.datacenter.size() > 64)
                       error(v, "registry.datacenter must be 1-64 characters");
                   }}});
             // The shared registry keeps registrations in etcd; a snapshot file beside it would be a
             // second truth that drifts from the first.
             if (c.registry.backend == RegistryConf::Backend::kEtcd && !c.registry.snapshot.empty())
               error(n, "registry.snapshot is for backend: embedded; with backend: etcd the registrations live in etcd");
           }},
          {"access_log", [&](const YAML::Node& n) { str(n, "access_log", c.access_log); }},
          {"metrics", [&](const YAML::Node& n) { boolean(n, "metrics", c.metrics); }},
          {"rate_limits",
           [&](const YAML::Node& n) {
             if (n.IsNull()) return;
             if (!n.IsMap()) {
               error(n, "'rate_limits' must be a mapping of policy name to settings");
               return;
             }
             for (const auto& kv : n) {
               std::string name = kv.first.Scalar();
               if (!valid_name(name)) {
                 error(kv.first, "rate limit name '" + name + "' must be 1-128 characters of [A-Za-z0-9._-]");
                 continue;
               }
               RateLimit r;
               r.name = name;
               r.pos = pos(kv.first);
               load_rate_limit(name, kv.second, r);
               c.rate_limits[name] = r;
             }
           }},
          {"routes",
           [&](const YAML::Node& n) {
             if (n.IsNull()) return;
             if (!n.IsSequence()) {
               error(n, "'routes' must be a list");
               return;
             }
             for (const auto& item : n) {
               Route r;
               load_route(item, r);
               c.routes.push_back(r);
             }
           }},
          {"services",
           [&](const YAML::Node& n) {
             if (n.IsNull()) return;
             if (!n.IsMap()) {
               error(n, "'services' must be a mapping of service name to settings");
               return;
             }
             for (const auto& kv : n) {
               std::string name = kv.first.Scalar();
               if (!valid_name(name)) {
                 error(kv.first, "service name '" + name + "' must be 1-128 characters of [A-Za-z0-9._-]");
                 continue;
               }
               Service s = default_service(name);
               s.pos = pos(kv.first);
               load_service(name, kv.second, s);
               c.services[name] = s;
             }
           }},
      });

  // Cross-field checks, each at the key that decides it. Start-up, --check, SIGHUP and
  // POST /v1/reload all load through here, so a reload cannot do what a start would refuse.
  if (!c.admin.token.empty() && c.admin.token.size() < 8) {
    error_at(admin_token_pos_, "'admin.token' must be at least 8 characters");
  }
  if (!c.admin.listen.is_loopback() && c.admin.token.empty()) {
    error_at(admin_token_pos_.line ? admin_token_pos_ : admin_listen_pos_,
             "admin.listen " + c.admin.listen.text +
                 " is not a loopback address and admin.token is empty: refusing to expose an unauthenticated admin API");
  }
  if (!read_token_set_) c.admin.read_token = !c.admin.listen.is_loopback();
  if (read_token_set_ && c.admin.read_token && c.admin.token.empty())
    error_at(admin_read_token_pos_, "'admin.read_token' is true but admin.token is empty: set a token for reads to ask for");
  for (const auto& l : c.listen) {
    if (l.port() != 0 && l == c.admin.listen) error_at(admin_listen_pos_, "'listen' and 'admin.listen' are the same address " + l.text);
  }
  auto known_policy = [&](const RateLimitRef& ref, const std::string& where) {
    if (!ref.name.empty() && !c.rate_limits.count(ref.name))
      error_at(ref.pos, "'" + where + ".rate_limit' names '" + ref.name + "', which is not a policy under 'rate_limits'");
  };
  for (const auto& r : c.routes) known_policy(r.rate_limit, "routes[]");
  for (const auto& [name, p] : c.rate_limits)
    if (p.global && c.registry.backend != RegistryConf::Backend::kEtcd)
      error_at(p.pos, "rate limit '" + name + "' has scope: global, which shares the rate among the proxies of one etcd "
                      "registry: it needs registry.backend: etcd");
  for (const auto& [name, s] : c.services) known_policy(s.rate_limit, "services." + name);
}

void Loader::load_rate_limit(const std::string& name, const YAML::Node& n, RateLimit& r) {
  const std::string w = "rate_limits." + name;
  bool have_rate = false;
  map(n, "rate limit '" + name + "'",
      {{"rate",
        [&](const YAML::Node& v) {
          std::string s;
          if (!scalar(v, w + ".rate", s)) return;
          std::string e = parse_rate(s, r.rate);
          if (!e.empty()) error(v, "'" + w + ".rate': " + e);
          have_rate = true;
        }},
       {"burst", [&](const YAML::Node& v) { uint64(v, w + ".burst", r.burst, 1, 1000000000); }},
       {"key",
        [&](const YAML::Node& v) {
          std::string s;
          if (!scalar(v, w + ".key", s)) return;
          if (s == "source_ip") r.key = RateLimit::Key::kSourceIp;
          else if (s == "route") r.key = RateLimit::Key::kRoute;
          else if (s == "service") r.key = RateLimit::Key::kService;
          else if (s == "none") r.key = RateLimit::Key::kNone;
          else if (s.rfind("header:", 0) == 0 && s.size() > 7) {
            r.key = RateLimit::Key::kHeader;
            r.header = s.substr(7);
            for (auto& ch : r.header) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
          } else {
            error(v, "'" + w + ".key' must be source_ip, header:NAME, route, service or none; got '" + s + "'");
          }
        }},
       {"mode",
        [&](const YAML::Node& v) {
          std::string s;
          if (!scalar(v, w + ".mode", s)) return;
          if (s == "enforce") r.mode = RateLimit::Mode::kEnforce;
          else if (s == "dry_run") r.mode = RateLimit::Mode::kDryRun;
          else error(v, "'" + w + ".mode' must be enforce or dry_run; got '" + s + "'");
        }},
       {"max_keys", [&](const YAML::Node& v) { uint64(v, w + ".max_keys", r.max_keys, 1, 100000000); }},
       {"scope",
        [&](const YAML::Node& v) {
          std::string s;
          if (!scalar(v, w + ".scope", s)) return;
          if (s == "global") r.global = true;
          else if (s != "local") error(v, "'" + w + ".scope' must be local or global; got '" + s + "'");
        }}});
  if (!have_rate && n.IsMap()) error(n, "'" + w + "' needs a 'rate' (such as 100/s)");
  if (r.burst == 0) r.burst = std::max<uint64_t>(1, r.rate.tokens * 1000000 / r.rate.per_us);
}

void Loader::load_client(const YAML::Node& n, ClientLimits& c) {
  map(n, "client",
      {{"header_timeout", [&](const YAML::Node& v) { duration(v, "client.header_timeout", c.header_timeout, false); }},
       {"idle_timeout", [&](const YAML::Node& v) { duration(v, "client.idle_timeout", c.idle_timeout, false); }},
       {"max_header_bytes",
        [&](const YAML::Node& v) { size(v, "client.max_header_bytes", c.max_header_bytes, 1024, 1024 * 1024); }},
       {"max_headers", [&](const YAML::Node& v) { uint(v, "client.max_headers", c.max_headers, 1, 10000); }},
       {"max_uri_bytes",
        [&](const YAML::Node& v) { size(v, "client.max_uri_bytes", c.max_uri_bytes, 16, 1024 * 1024); }},
       {"max_body_bytes",
        [&](const YAML::Node& v) { size(v, "client.max_body_bytes", c.max_body_bytes, 0, UINT64_C(1) << 50); }},
       {"body_timeout", [&](const YAML::Node& v) { duration(v, "client.body_timeout", c.body_timeout, false); }},
       {"trusted_proxies",
        [&](const YAML::Node& v) {
          std::vector<std::string> items;
          str_list(v, "client.trusted_proxies", items);
          c.trusted_proxies.clear();
          for (const auto& it : items) {
            Cidr cidr;
            std::string e = parse_cidr(it, cidr);
            if (!e.empty()) error(v, "'client.trusted_proxies': " + e);
            else c.trusted_proxies.push_back(cidr);
          }
        }}});
}

void Loader::load_health(const YAML::Node& n, HealthCheck& h) {
  map(n, "health_check",
      {{"type",
        [&](const YAML::Node& v) {
          std::string s;
          if (!scalar(v, "health_check.type", s)) return;
          if (s == "http") h.type = HealthCheck::Type::kHttp;
          else if (s == "tcp") h.type = HealthCheck::Type::kTcp;
          else if (s == "grpc") h.type = HealthCheck::Type::kGrpc;
          else if (s == "none") h.type = HealthCheck::Type::kNone;
          else error(v, "'health_check.type' must be http, tcp, grpc or none; got '" + s + "'");
        }},
       {"grpc_service", [&](const YAML::Node& v) { str(v, "health_check.grpc_service", h.grpc_service); }},
       {"path",
        [&](const YAML::Node& v) {
          str(v, "health_check.path", h.path);
          if (h.path.empty() || h.path[0] != '/') error(v, "'health_check.path' must start with '/'");
        }},
       {"host", [&](const YAML::Node& v) { str(v, "health_check.host", h.host); }},
       {"expected_status",
        [&](const YAML::Node& v) {
          std::vector<std::string> items;
          str_list(v, "health_check.expected_status", items);
          h.expected_status.clear();
          for (const auto& it : items) {
            std::pair<int, int> range;
            if (!parse_status_range(it, range).empty())
              error(v, "'health_check.expected_status' entry '" + it + "' must be a status or range like 200-399");
            else h.expected_status.push_back(range);
          }
        }},
       {"interval", [&](const YAML::Node& v) { duration(v, "health_check.interval", h.interval, false); }},
       {"timeout", [&](const YAML::Node& v) { duration(v, "health_check.timeout", h.timeout, false); }},
       {"jitter",
        [&](const YAML::Node& v) {
          std::string s;
          if (!scalar(v, "health_check.jitter", s)) return;
          std::string e = parse_percent(s, h.jitter);
          if (!e.empty()) error(v, "'health_check.jitter': " + e);
        }},
       {"healthy_threshold",
        [&](const YAML::Node& v) { uint(v, "health_check.healthy_threshold", h.healthy_threshold, 1, 1000); }},
       {"unhealthy_threshold",
        [&](const YAML::Node& v) { uint(v, "health_check.unhealthy_threshold", h.unhealthy_threshold, 1, 1000); }}});
}

void Loader::load_service(const std::string& name, const YAML::Node& n, Service& s) {
  const std::string w = "services." + name;
  // Where the keys of the cross-field checks below were written (0 = not written: a default).
  Pos hash_on_pos, backoff_base_pos, backoff_max_pos, hc_pos, hc_interval_pos, hc_timeout_pos, protocol_pos;
  map(n, "service '" + name + "'",
      {{"lb",
        [&](const YAML::Node& v) {
          std::string p;
          if (!scalar(v, w + ".lb", p)) return;
          if (!parse_lb(p, s.lb)) {
            std::string names;
            for (const auto& [k, name] : kLbNames) names += (names.empty() ? "" : ", ") + std::string(name);
            error(v, "'" + w + ".lb' must be one of " + names + "; got '" + p + "'");
          }
        }},
       {"hash_on",
        [&](const YAML::Node& v) {
          std::string h;
          hash_on_pos = pos(v);
          if (!scalar(v, w + ".hash_on", h)) return;
          if (!parse_hash_on(h, s.hash_on)) error(v, "'" + w + ".hash_on' must be header:NAME, cookie:NAME or source_ip; got '" + h + "'");
        }},
       {"slow_start", [&](const YAML::Node& v) { duration(v, w + ".slow_start", s.slow_start); }},
       {"protocol",
        [&](const YAML::Node& v) {
          std::string p;
          protocol_pos = pos(v);
          if (!scalar(v, w + ".protocol", p)) return;
          if (!parse_upstream_protocol(p, s.protocol)) error(v, "'" + w + ".protocol' must be http1, h2c or h2; got '" + p + "'");
        }},
       {"instances",
        [&](const YAML::Node& v) {
          if (v.IsNull()) return;
          if (!v.IsSequence()) {
            error(v, "'" + w + ".instances' must be a list");
            return;
          }
          for (const auto& item : v) {
            StaticInstance si;
            si.pos = pos(item);
            bool have_address = false;
            map(item, "an instance of '" + name + "'",
                {{"address",
                  [&](const YAML::Node& a) {
                    have_address = true;
                    address(a, w + ".instances.address", si.address, false);
                    si.address_text = si.address.text;
                  }},
                 {"weight", [&](const YAML::Node& a) { uint(a, w + ".instances.weight", si.weight, 1, 10000); }},
                 {"id",
                  [&](const YAML::Node& a) {
                    str(a, w + ".instances.id", si.id);
                    if (!valid_name(si.id)) error(a, "instance id '" + si.id + "' must be 1-128 characters of [A-Za-z0-9._-]");
                  }},
                 {"tags", [&](const YAML::Node& a) { str_list(a, w + ".instances.tags", si.tags); }},
                 {"zone", [&](const YAML::Node& a) { str(a, w + ".instances.zone", si.zone); }}});
            if (!have_address && item.IsMap()) error(item, "an instance of '" + name + "' needs an 'address'");
            if (si.id.empty()) si.id = si.address.text;
            for (const auto& other : s.instances)
              if (other.id == si.id) error(item, "duplicate instance id '" + si.id + "' in service '" + name + "'");
            s.instances.push_back(si);
          }
        }},
       {"health_check",
        [&](const YAML::Node& v) {
          s.has_health_check = true;
          hc_pos = pos(v);
          if (v.IsMap()) {
            if (v["interval"]) hc_interval_pos = pos(v["interval"]);
            if (v["timeout"]) hc_timeout_pos = pos(v["timeout"]);
          }
          load_health(v, s.health_check);
        }},
       {"outlier_detection",
        [&](const YAML::Node& v) {
          auto& o = s.outlier_detection;
          map(v, "outlier_detection",
              {{"consecutive_failures", [&](const YAML::Node& x) { uint(x, "outlier_detection.consecutive_failures", o.consecutive_failures, 1, 1000); }},
               {"base_ejection_time", [&](const YAML::Node& x) { duration(x, "outlier_detection.base_ejection_time", o.base_ejection_time, false); }},
               {"max_ejection_percent", [&](const YAML::Node& x) { uint(x, "outlier_detection.max_ejection_percent", o.max_ejection_percent, 0, 100); }},
               {"on", [&](const YAML::Node& x) { conditions(x, "outlier_detection.on", o.on); }}});
        }},
       {"circuit_breaker",
        [&](const YAML::Node& v) {
          auto& b = s.circuit_breaker;
          map(v, "circuit_breaker",
              {{"max_connections", [&](const YAML::Node& x) { uint(x, "circuit_breaker.max_connections", b.max_connections, 1, 1000000); }},
               {"max_pending", [&](const YAML::Node& x) { uint(x, "circuit_breaker.max_pending", b.max_pending, 0, 1000000); }},
               {"max_requests", [&](const YAML::Node& x) { uint(x, "circuit_breaker.max_requests", b.max_requests, 1, 1000000); }},
               {"max_retries", [&](const YAML::Node& x) { uint(x, "circuit_breaker.max_retries", b.max_retries, 0, 1000000); }},
               {"failure_threshold", [&](const YAML::Node& x) { uint(x, "circuit_breaker.failure_threshold", b.failure_threshold, 1, 1000); }},
               {"open_for", [&](const YAML::Node& x) { duration(x, "circuit_breaker.open_for", b.open_for, false); }},
               {"half_open_requests", [&](const YAML::Node& x) { uint(x, "circuit_breaker.half_open_requests", b.half_open_requests, 1, 1000); }},
               {"on", [&](const YAML::Node& x) { conditions(x, "circuit_breaker.on", b.on); }}});
        }},
       {"retry",
        [&](const YAML::Node& v) {
          auto& r = s.retry;
          map(v, "retry",
              {{"attempts", [&](const YAML::Node& x) { uint(x, "retry.attempts", r.attempts, 1, 10); }},
               {"on", [&](const YAML::Node& x) { conditions(x, "retry.on", r.on); }},
               {"backoff",
                [&](const YAML::Node& x) {
                  map(x, "retry.backoff",
                      {{"base",
                        [&](const YAML::Node& y) {
                          backoff_base_pos = pos(y);
                          duration(y, "retry.backoff.base", r.backoff_base);
                        }},
                       {"max",
                        [&](const YAML::Node& y) {
                          backoff_max_pos = pos(y);
                          duration(y, "retry.backoff.max", r.backoff_max);
                        }}});
                }},
               {"per_try_timeout", [&](const YAML::Node& x) { duration(x, "retry.per_try_timeout", r.per_try_timeout); }},
               {"budget_percent", [&](const YAML::Node& x) { uint(x, "retry.budget_percent", r.budget_percent, 0, 100); }}});
        }},
       {"timeouts",
        [&](const YAML::Node& v) {
          auto& t = s.timeouts;
          map(v, "timeouts",
              {{"connect", [&](const YAML::Node& x) { duration(x, "timeouts.connect", t.connect, false); }},
               {"response", [&](const YAML::Node& x) { duration(x, "timeouts.response", t.response, false); }},
               {"idle", [&](const YAML::Node& x) { duration(x, "timeouts.idle", t.idle, false); }}});
        }},
       {"tls", [&](const YAML::Node& v) { load_client_tls(v, w + ".tls", s.tls, true); }},
       {"rate_limit", [&](const YAML::Node& v) { rate_limit_ref(v, w + ".rate_limit", s.rate_limit); }}});

  // Cross-field checks of the service, at the key a user would change.
  if (hash_on_pos.line && s.lb != Lb::kRingHash && s.lb != Lb::kMaglev)
    error_at(hash_on_pos, "'" + w + ".hash_on' is set but '" + w + ".lb' is " + std::string(lb_name(s.lb)) +
                              ", which does not hash: use lb: ring_hash or maglev, or remove hash_on");
  if (s.protocol == UpstreamProtocol::kH2c && s.tls.enabled)
    error_at(protocol_pos, "'" + w + ".protocol' is h2c, HTTP/2 over plain TCP, but '" + w +
                               ".tls' is enabled: use protocol: h2 for HTTP/2 over TLS");
  if (s.retry.backoff_base > s.retry.backoff_max)
    error_at(backoff_base_pos.line ? backoff_base_pos : backoff_max_pos,
             "'" + w + ".retry.backoff.base' (" + std::to_string(s.retry.backoff_base.count()) +
                 " ms) is larger than 'retry.backoff.max' (" + std::to_string(s.retry.backoff_max.count()) + " ms)");
  if (s.has_health_check && s.health_check.type != HealthCheck::Type::kNone &&
      s.health_check.timeout >= s.health_check.interval)
    error_at(hc_timeout_pos.line ? hc_timeout_pos : hc_interval_pos.line ? hc_interval_pos : hc_pos,
             "'" + w + ".health_check.timeout' (" + std::to_string(s.health_check.timeout.count()) +
                 " ms) must be shorter than its interval (" + std::to_string(s.health_check.interval.count()) +
                 " ms): a probe must end before the next is due");
}

void Loader::load_route(const YAML::Node& n, Route& r) {
  r.pos = pos(n);
  bool have_service = false;
  map(n, "a route",
      {{"match",
        [&](const YAML::Node& m) {
          map(m, "route match",
              {{"host", [&](const YAML::Node& v) { str(v, "match.host", r.host); }},
               {"path_prefix",
                [&](const YAML::Node& v) {
                  str(v, "match.path_prefix", r.path_prefix);
                  if (!r.path_prefix.empty() && r.path_prefix[0] != '/')
                    error(v, "'match.path_prefix' must start with '/'");
                }}});
        }},
       {"service",
        [&](const YAML::Node& v) {
          have_service = true;
          str(v, "service", r.service);
          if (!valid_name(r.service)) error(v, "route service '" + r.service + "' must be 1-128 characters of [A-Za-z0-9._-]");
        }},
       {"strip_prefix", [&](const YAML::Node& v) { boolean(v, "strip_prefix", r.strip_prefix); }},
       {"tags", [&](const YAML::Node& v) { str_list(v, "tags", r.tags); }},
       {"rate_limit", [&](const YAML::Node& v) { rate_limit_ref(v, "rate_limit", r.rate_limit); }}});
  if (!have_service && n.IsMap()) error(n, "a route needs a 'service'");
}


// A listen entry: "host:port" (plain), or a mapping { address, tls }.
void Loader::load_listen_entry(const YAML::Node& n, Address& a, ListenerTls& t) {
  if (!n.IsMap()) {
    address(n, "listen", a, true);
    return;
  }
  bool have_address = false;
  bool http2 = true;
  Pos http2_pos;
  map(n, "a listen entry",
      {{"address",
        [&](const YAML::Node& v) {
          have_address = true;
          address(v, "listen.address", a, true);
        }},
       {"tls", [&](const YAML::Node& v) { load_listener_tls(v, "listen.tls", t); }},
       {"http2",
        [&](const YAML::Node& v) {
          http2_pos = pos(v);
          boolean(v, "listen.http2", http2);
        }}});
  if (!have_address) error(n, "a listen entry written as a mapping needs an 'address'");
  t.http2 = http2;
  // ALPN not written: h2 first when the listener serves HTTP/2 (clients take the server's order).
  if (t.enabled && !alpn_written_) t.alpn = http2 ? std::vector<std::string>{"h2", "http/1.1"} : std::vector<std::string>{"http/1.1"};
  if (t.enabled && !http2 && std::find(t.alpn.begin(), t.alpn.end(), "h2") != t.alpn.end())
    error_at(http2_pos, "'listen.http2' is false but 'listen.tls.alpn' offers h2");
}

void Loader::load_listener_tls(const YAML::Node& n, const std::string& w, ListenerTls& t) {
  t.enabled = true;
  alpn_written_ = false;
  t.pos = pos(n);
  map(n, w,
      {{"certificates",
        [&](const YAML::Node& v) {
          if (!v.IsSequence()) {
            error(v, "'" + w + ".certificates' must be a list of { cert, key }");
            return;
          }
          for (const auto& item : v) {
            ListenerTls::Certificate c;
            c.cert.pos = pos(item);
            map(item, w + ".certificates entry",
                {{"cert", [&](const YAML::Node& x) { file(x, w + ".certificates.cert", c.cert); }},
                 {"key", [&](const YAML::Node& x) { file(x, w + ".certificates.key", c.key); }}});
            if (c.cert.empty() && item.IsMap()) error(item, "a certificate in '" + w + ".certificates' needs a 'cert' file");
            t.certificates.push_back(c);
          }
        }},
       {"strict_sni", [&](const YAML::Node& v) { boolean(v, w + ".strict_sni", t.strict_sni); }},
       {"min_version",
        [&](const YAML::Node& v) {
          std::string s;
          if (!scalar(v, w + ".min_version", s)) return;
          if (s == "1.2") t.min_version = 12;
          else if (s == "1.3") t.min_version = 13;
          else error(v, "'" + w + ".min_version' must be \"1.2\" or \"1.3\" (older versions are not offered); got '" + s + "'");
        }},
       {"ciphers", [&](const YAML::Node& v) { str(v, w + ".ciphers", t.ciphers); }},
       {"alpn",
        [&](const YAML::Node& v) {
          alpn_written_ = true;
          str_list(v, w + ".alpn", t.alpn);
          const bool admin = w.rfind("admin", 0) == 0;  // the admin listener speaks HTTP/1.1 only
          for (const auto& p : t.alpn)
            if (p != "http/1.1" && (p != "h2" || admin))
              error(v, "'" + w + ".alpn' entry '" + p + "': " + (admin ? "the admin listener serves http/1.1 only" : "must be h2 or http/1.1"));
          if (t.alpn.empty()) error(v, "'" + w + ".alpn' needs at least one protocol (http/1.1)");
        }},
       {"client_auth",
        [&](const YAML::Node& v) {
          std::string s;
          if (!scalar(v, w + ".client_auth", s)) return;
          if (s == "none") t.client_auth = ListenerTls::ClientAuth::kNone;
          else if (s == "optional") t.client_auth = ListenerTls::ClientAuth::kOptional;
          else if (s == "required") t.client_auth = ListenerTls::ClientAuth::kRequired;
          else error(v, "'" + w + ".client_auth' must be none, optional or required; got '" + s + "'");
        }},
       {"client_ca", [&](const YAML::Node& v) { file(v, w + ".client_ca", t.client_ca); }},
       {"session_tickets", [&](const YAML::Node& v) { boolean(v, w + ".session_tickets", t.session_tickets); }}});
  if (n.IsMap() && t.certificates.empty()) error(n, "'" + w + "' needs at least one entry in 'certificates'");
  if (t.client_auth != ListenerTls::ClientAuth::kNone && t.client_ca.empty())
    error_at(t.pos, "'" + w + ".client_auth' is not none: '" + w + ".client_ca' must name the CA bundle client certificates chain to");
}

void Loader::load_client_tls(const YAML::Node& n, const std::string& w, ClientTls& t, bool has_enabled) {
  t.pos = pos(n);
  if (has_enabled) t.enabled = true;  // writing the block turns it on unless it says enabled: false
  std::vector<std::pair<std::string, Handler>> keys = {
      {"ca", [&](const YAML::Node& v) { file(v, w + ".ca", t.ca); }},
      {"verify", [&](const YAML::Node& v) { boolean(v, w + ".verify", t.verify); }},
      {"server_name", [&](const YAML::Node& v) { str(v, w + ".server_name", t.server_name); }},
      {"cert", [&](const YAML::Node& v) { file(v, w + ".cert", t.cert); }},
      {"key", [&](const YAML::Node& v) { file(v, w + ".key", t.key); }}};
  if (has_enabled) keys.push_back({"enabled", [&](const YAML::Node& v) { boolean(v, w + ".enabled", t.enabled); }});
  map(n, w, keys);
  if (!t.key.empty() && t.cert.empty()) error_at(t.key.pos, "'" + w + ".key' is set without '" + w + ".cert'");
}

}  // namespace

// The one spelling of services.X.protocol and a registration's "protocol".
bool parse_upstream_protocol(std::string_view s, UpstreamProtocol& out) {
  if (s == "http1") out = UpstreamProtocol::kHttp1;
  else if (s == "h2c") out = UpstreamProtocol::kH2c;
  else if (s == "h2") out = UpstreamProtocol::kH2;
  else return false;
  return true;
}

const char* upstream_protocol_name(UpstreamProtocol p) {
  switch (p) {
    case UpstreamProtocol::kHttp1: return "http1";
    case UpstreamProtocol::kH2c: return "h2c";
    case UpstreamProtocol::kH2: return "h2";
  }
  return "?";
}

namespace {
// The gRPC statuses `on` lists may name (gRPC's status codes; the set Envoy's retry_grpc_on takes).
constexpr std::pair<std::string_view, int> kGrpcWords[] = {
    {"cancelled", 1}, {"deadline-exceeded", 4}, {"resource-exhausted", 8}, {"internal", 13}, {"unavailable", 14}};
}  // namespace

bool Conditions::add(std::string_view w) {
  for (const auto& [word, code] : kGrpcWords) {
    if (w == word) {
      grpc.set(static_cast<size_t>(code));
      return true;
    }
  }
  if (w == "connect-failure") connect_failure = true;
  else if (w == "reset") reset = true;
  else if (w == "timeout") timeout = true;
  else if (w.size() == 3 && w[0] >= '1' && w[0] <= '5' && isdigit(static_cast<unsigned char>(w[1])) &&
           isdigit(static_cast<unsigned char>(w[2])))
    status.set(static_cast<size_t>((w[0] - '0') * 100 + (w[1] - '0') * 10 + (w[2] - '0')));
  else return false;
  return true;
}

std::vector<std::string> Conditions::words() const {
  std::vector<std::string> out;
  if (connect_failure) out.push_back("connect-failure");
  if (reset) out.push_back("reset");
  if (timeout) out.push_back("timeout");
  for (size_t st = 100; st < 600; ++st)
    if (status.test(st)) out.push_back(std::to_string(st));
  for (const auto& [word, code] : kGrpcWords)
    if (grpc.test(static_cast<size_t>(code))) out.emplace_back(word);
  return out;
}

Conditions Conditions::instance_failures() {
  Conditions c;
  for (auto w : {"connect-failure", "reset", "timeout", "502", "503", "504", "unavailable"}) c.add(w);
  return c;
}

Service default_service(const std::string& name) {
  Service s;
  s.name = name;
  return s;
}

bool load_string(const std::string& text, const std::string& name, Config& out, std::vector<std::string>& errors) {
  size_t before = errors.size();
  Config c;
  c.path = name;
  Loader loader(name, errors);
  try {
    YAML::Node root = YAML::Load(text);
    loader.load(root, c);
  } catch (const YAML::Exception& e) {
    loader.error_at(e.mark.line + 1, e.mark.column + 1, "YAML syntax error: " + e.msg);
  }
  if (errors.size() != before) return false;
  out = std::move(c);
  return true;
}

bool load_file(const std::string& path, Config& out, std::vector<std::string>& errors, bool allow_missing) {
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    if (allow_missing) {
      out = Config{};
      return true;
    }
    errors.push_back(path + ":0:0: cannot open the file: " + std::strerror(errno));
    return false;
  }
  std::stringstream ss;
  ss << f.rdbuf();
  return load_string(ss.str(), path, out, errors);
}

}  // namespace sy::conf
