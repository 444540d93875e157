// Plain configuration structs: what conf/switchyard.yaml says, after validation.
// No libuv, no I/O beyond reading the file; runtime objects are built from these in proxy/app.cc.
#pragma once

#include <bitset>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "conf/lb_kind.h"
#include "conf/units.h"

namespace sy::conf {

// Where a value came from, for messages that point at the file ("FILE:LINE:COL").
struct Pos {
  int line = 0;  // 1-based; 0 = not from a file (a default)
  int col = 0;
  bool operator==(const Pos&) const = default;
};

// A file the config names (a certificate, a key, a CA bundle), with where it was written, so that a
// file that does not load is reported at its key (docs/configuration.md, "TLS").
struct FileRef {
  // (Declared, so not an aggregate: GCC 12 at -O3 reports the strings of value-initialized
  // aggregates nested this deep as maybe-uninitialized, a false positive.)
  FileRef() {}
  std::string path;  // "" = not set
  Pos pos;
  bool empty() const { return path.empty(); }
  bool operator==(const FileRef&) const = default;
};

// A listener's TLS (listen entries written as mappings, admin.tls). Certificates are loaded by the
// proxy (proxy/tls), not here: the config layer reads only its own file.
struct ListenerTls {
  bool enabled = false;
  struct Certificate {
    FileRef cert, key;  // key "" = in the cert file
    bool operator==(const Certificate&) const = default;
  };
  std::vector<Certificate> certificates;  // the first is the default
  bool strict_sni = false;
  int min_version = 12;  // 12 = TLS 1.2, 13 = TLS 1.3
  std::string ciphers;   // TLS 1.2 suites; "" = Mozilla intermediate
  std::vector<std::string> alpn{"http/1.1"};
  enum class ClientAuth { kNone, kOptional, kRequired };
  ClientAuth client_auth = ClientAuth::kNone;
  FileRef client_ca;
  bool session_tickets = true;
  // (A listener option that travels with its entry, TLS or not.) false: HTTP/1.1 only — no ALPN
  // h2, no prior-knowledge preface. The admin listener speaks HTTP/1.1 only.
  bool http2 = true;
  Pos pos;
  bool operator==(const ListenerTls&) const = default;
};

// TLS from the proxy to a peer: a service's instances (services.X.tls) or etcd (registry.etcd.tls).
struct ClientTls {
  ClientTls() {}  // (not an aggregate: see FileRef)
  bool enabled = false;
  FileRef ca;               // "" = the system bundle
  bool verify = true;       // the peer's certificate must chain to `ca` and match the name
  std::string server_name;  // SNI and the name checked; "" = the Host the client sent (etcd: the endpoint's IP)
  FileRef cert, key;        // a client certificate (mTLS); key "" = in the cert file
  Pos pos;
  bool operator==(const ClientTls&) const = default;
};

// A named rate-limit policy (`rate_limits:`), referred to by routes and services.
struct RateLimit {
  enum class Key { kSourceIp, kHeader, kRoute, kService, kNone };
  enum class Mode { kEnforce, kDryRun };
  std::string name;
  Rate rate;
  uint64_t burst = 0;  // bucket size; 0 = not written (the rate's tokens per unit, at least 1)
  Key key = Key::kSourceIp;
  std::string header;  // Key::kHeader: the header's name, lower-cased
  Mode mode = Mode::kEnforce;
  uint64_t max_keys = 100000;
  bool global = false;  // scope: global — the rate is shared by the proxies of one etcd registry
  Pos pos;
  bool operator==(const RateLimit&) const = default;
};

// Where a route or service names a policy ("" = none), with its position for the cross-check.
struct RateLimitRef {
  std::string name;
  Pos pos;
  bool operator==(const RateLimitRef&) const = default;
};

struct StaticInstance {
  std::string address_text;  // as written, "host:port"
  Address address;
  uint32_t weight = 1;
  std::string id;  // defaults to the address
  std::vector<std::string> tags;
  std::string zone;
  Pos pos;
};

struct HealthCheck {
  enum class Type { kHttp, kTcp, kGrpc, kNone };
  Type type = Type::kHttp;
  std::string path = "/health";
  std::string grpc_service;  // kGrpc: HealthCheckRequest.service ("" = the server as a whole)
  std::string host;  // Host header of probes; "" = the instance address
  // (Built from a count and a value, not an initializer list: GCC 12 at -O3 reports the list's
  // hidden array as maybe-uninitialized wherever a default HealthCheck is inlined, a false positive.)
  std::vector<std::pair<int, int>> expected_status = std::vector<std::pair<int, int>>(1, {200, 399});
  Millis interval{5000};
  Millis timeout{1000};
  double jitter = 0.10;  // fraction of interval
  uint32_t healthy_threshold = 2;
  uint32_t unhealthy_threshold = 3;
  bool operator==(const HealthCheck&) const = default;  // every field: a change restarts the probe
};

// A set of failure conditions, as `retry.on`, `circuit_breaker.on` and `outlier_detection.on`
// write them: connect-failure, reset (before a response), timeout, status codes ("503"), and gRPC
// statuses by name (cancelled, deadline-exceeded, resource-exhausted, internal, unavailable: the
// words of Envoy's retry_grpc_on). Parsed once when the config loads; matching on the request path
// is a bit test.
struct Conditions {
  bool connect_failure = false;
  bool reset = false;
  bool timeout = false;
  std::bitset<600> status;  // by status code
  std::bitset<17> grpc;     // by gRPC status code (0..16)

  // "connect-failure", "reset", "timeout", a status code 100..599 or a gRPC status word; false
  // for anything else.
  bool add(std::string_view word);
  bool has_status(int st) const { return st >= 0 && st < 600 && status.test(static_cast<size_t>(st)); }
  bool has_grpc(int code) const { return code >= 0 && code < 17 && grpc.test(static_cast<size_t>(code)); }
  std::vector<std::string> words() const;  // as the config writes them (docs, admin answers)
  bool operator==(const Conditions&) const = default;
  // The default of circuit_breaker.on and outlier_detection.on: what says the instance itself is
  // broken (an application's 500 on one path, or a gRPC NOT_FOUND, does not; gRPC UNAVAILABLE does).
  static Conditions instance_failures();
};

struct OutlierDetection {
  uint32_t consecutive_failures = 5;
  Millis base_ejection_time{30000};
  uint32_t max_ejection_percent = 50;
  Conditions on = Conditions::instance_failures();  // what counts as a failure
};

struct CircuitBreaker {
  uint32_t max_connections = 1024;
  uint32_t max_pending = 1024;
  uint32_t max_requests = 1024;
  uint32_t max_retries = 3;
  uint32_t failure_threshold = 5;
  Millis open_for{30000};
  uint32_t half_open_requests = 1;
  Conditions on = Conditions::instance_failures();  // what counts as a failure
};

struct Retry {
  uint32_t attempts = 2;
  Conditions on = [] {
    Conditions c;
    for (auto w : {"connect-failure", "reset", "502", "503", "504"}) c.add(w);
    return c;
  }();
  Millis backoff_base{25};
  Millis backoff_max{250};
  Millis per_try_timeout{0};  // 0 = none: a try may use all of timeouts.response
  uint32_t budget_percent = 20;
};

// What starts and stops each (docs/configuration.md, "Timeouts"). No timer counts time the
// client spends sending.
struct Timeouts {
  Millis connect{1000};    // TCP connect to an instance
  Millis response{30000};  // request's last byte written upstream → response head
  Millis idle{60000};      // silence between reads of a response body (or a backend not taking
                           // request bytes it was sent)
};

// How instances are spoken to: HTTP/1.1, HTTP/2 over plain TCP (prior knowledge), or HTTP/2 over
// TLS (ALPN h2). A registration's "protocol" overrides the service's for that instance.
enum class UpstreamProtocol { kHttp1, kH2c, kH2 };
bool parse_upstream_protocol(std::string_view s, UpstreamProtocol& out);
const char* upstream_protocol_name(UpstreamProtocol p);

struct Service {
  std::string name;
  UpstreamProtocol protocol = UpstreamProtocol::kHttp1;
  Lb lb = Lb::kRoundRobin;
  HashOn hash_on;
  Millis slow_start{0};
  std::vector<StaticInstance> instances;
  bool has_health_check = false;
  HealthCheck health_check;
  OutlierDetection outlier_detection;
  CircuitBreaker circuit_breaker;
  Retry retry;
  Timeouts timeouts;
  ClientTls tls;  // to the instances
  RateLimitRef rate_limit;  // for requests routed to this service by any route or by Host
  Pos pos;
};

struct Route {
  std::string host;         // "" = any host
  std::string path_prefix;  // "" = any path
  std::string service;
  bool strip_prefix = false;
  std::vector<std::string> tags;
  RateLimitRef rate_limit;
  Pos pos;
};

struct ClientLimits {
  Millis header_timeout{10000};
  Millis idle_timeout{60000};
  uint64_t max_header_bytes = 64 * 1024;
  uint32_t max_headers = 100;
  uint64_t max_uri_bytes = 8 * 1024;
  uint64_t max_body_bytes = 0;  // 0 = unlimited
  Millis body_timeout{60000};   // silence between two reads of a request body (while we read)
  // Peers whose X-Forwarded-For is believed (rate-limit keys by source_ip).
  std::vector<Cidr> trusted_proxies;
};

// HTTP/2 from clients (top-level `http2:`). Memory per connection is bounded by the windows.
struct Http2 {
  uint32_t max_concurrent_streams = 100;
  uint64_t initial_stream_window = 64 * 1024;  // per stream, SETTINGS_INITIAL_WINDOW_SIZE
  uint64_t connection_window = 1024 * 1024;    // the whole connection's receive window
  uint64_t max_header_list_bytes = 64 * 1024;  // SETTINGS_MAX_HEADER_LIST_SIZE; a larger head: 431
  // Frames that carry no request (PING, SETTINGS, PRIORITY, empty DATA, RST_STREAM) a connection
  // may send per second, with a burst of 10 s worth; past it: GOAWAY ENHANCE_YOUR_CALM.
  uint32_t max_control_frames_per_second = 100;
};

struct Admin {
  Address listen = Address::loopback(9901);
  std::string token;
  // Reads of registry data (and the dashboard's) need the token too. Default: true when `listen`
  // is not a loopback address, false on loopback (resolved by the loader).
  bool read_token = false;
  uint32_t max_connections = 256;  // open admin connections; past it a new one gets 503
  ListenerTls tls;
};

// registry.etcd: the shared registry's store (backend: etcd).
struct EtcdConf {
  std::vector<Address> endpoints{Address::loopback(2379)};  // v3 client addresses, tried in turn
  std::string prefix = "/switchyard/";                     // every key written starts with this
  Millis timeout{2000};                                    // one etcd request, connect included
  ClientTls tls;  // enabled by https:// endpoints (all or none)
};

struct RegistryConf {
  enum class Backend { kEmbedded, kEtcd };
  Backend backend = Backend::kEmbedded;
  EtcdConf etcd;
  std::string snapshot;
  Millis default_ttl{30000};
  uint64_t journal_max = 4 << 20;  // compact the journal into the snapshot past this (and past the snapshot's size)
  std::string datacenter = "dc1";  // what Consul-compatible answers call this registry ("Datacenter")
};

struct Config {
  std::string path;  // the file this came from ("" = built-in defaults)
  std::vector<Address> listen{Address::loopback(8080)};
  // listen_tls[i] is listen[i]'s TLS (disabled for a plain listener); always the same size.
  std::vector<ListenerTls> listen_tls{ListenerTls{}};
  // 0 = one per core: proxy traffic then runs on loops that do no registry, persistence or probe
  // work (HAProxy 2.5+ defaults to one thread per core too). 1 = traffic on the main loop.
  uint32_t workers = 0;
  uint64_t max_connections = 0;  // client connections in all; 0 = a safe share of RLIMIT_NOFILE
  std::string zone;
  Millis shutdown_timeout{10000};
  std::string log_level = "info";
  ClientLimits client;
  Http2 http2;
  Admin admin;
  RegistryConf registry;
  std::string access_log;
  bool metrics = true;  // false: the request path updates no metrics (to measure what they cost)
  std::vector<Route> routes;
  std::map<std::string, RateLimit> rate_limits;
  std::map<std::string, Service> services;  // ordered: stable output and reload diffs
};

// The defaults a service gets when it is only ever registered dynamically.
Service default_service(const std::string& name);

// Reads and validates `path`. On success returns true and fills `out`. On failure returns false
// and appends one "FILE:LINE:COL: message" line per problem to `errors` (every problem, not the
// first only). A missing file with `allow_missing` yields the defaults.
bool load_file(const std::string& path, Config& out, std::vector<std::string>& errors,
               bool allow_missing = false);

// Same, from text (tests, reload previews). `name` is used in messages.
bool load_string(const std::string& text, const std::string& name, Config& out,
                 std::vector<std::string>& errors);

}  // namespace sy::conf
