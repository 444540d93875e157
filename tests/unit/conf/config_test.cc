// The config loader: every key, defaults, and errors with file positions.
#include <doctest.h>

#include "conf/config.h"

using namespace sy::conf;

namespace {
std::vector<std::string> errors_of(const std::string& text) {
  Config c;
  std::vector<std::string> e;
  load_string(text, "t.yaml", c, e);
  return e;
}
}  // namespace

TEST_CASE("empty file gives the documented defaults") {
  Config c;
  std::vector<std::string> e;
  REQUIRE(load_string("", "t.yaml", c, e));
  CHECK(c.listen.at(0).text == "127.0.0.1:8080");
  CHECK(c.admin.listen.text == "127.0.0.1:9901");
  CHECK(c.workers == 0);  // one per core
  CHECK(c.client.max_header_bytes == 64 * 1024);
  CHECK(c.client.max_uri_bytes == 8 * 1024);
  CHECK(c.client.header_timeout.count() == 10000);
  CHECK(c.registry.default_ttl.count() == 30000);
  CHECK(c.client.body_timeout.count() == 60000);
}

TEST_CASE("timeouts: the defaults of a dynamic service, body_timeout, per_try_timeout 0 = none") {
  const Service s = default_service("x");
  CHECK(s.timeouts.connect.count() == 1000);
  CHECK(s.timeouts.response.count() == 30000);
  CHECK(s.timeouts.idle.count() == 60000);
  CHECK(s.retry.per_try_timeout.count() == 0);
  Config c;
  std::vector<std::string> e;
  REQUIRE(load_string("client: { body_timeout: 90s }\nservices:\n  a:\n    retry: { per_try_timeout: 0s }\n", "t.yaml", c, e));
  CHECK(c.client.body_timeout.count() == 90000);
  CHECK(c.services.at("a").retry.per_try_timeout.count() == 0);
  auto errs = errors_of("client:\n  body_timeout: 0s\n");
  REQUIRE(errs.size() == 1);
  CHECK(errs[0].find("t.yaml:2:17") == 0);
  CHECK(errs[0].find("client.body_timeout") != std::string::npos);
}

TEST_CASE("a full service block loads") {
  Config c;
  std::vector<std::string> e;
  const char* text = R"(
listen: [127.0.0.1:0, "[::1]:0"]
routes:
  - match: { host: api.example.com, path_prefix: /orders }
    service: orders
    strip_prefix: true
    tags: [primary]
services:
  orders:
    lb: ring_hash
    hash_on: header:x-user-id
    instances:
      - { address: 127.0.0.1:9001, weight: 3, id: o1, tags: [primary] }
    health_check: { type: tcp, interval: 2s, jitter: 5% }
    retry: { attempts: 3, on: [reset, "503"], backoff: { base: 10ms, max: 1s } }
    timeouts: { connect: 250ms }
)";
  REQUIRE_MESSAGE(load_string(text, "t.yaml", c, e), (e.empty() ? "" : e[0]));
  CHECK(c.listen.size() == 2);
  const auto& s = c.services.at("orders");
  CHECK(s.lb == sy::conf::Lb::kRingHash);
  CHECK(s.hash_on == sy::conf::HashOn{sy::conf::HashOn::Kind::kHeader, "x-user-id"});  // parsed at load
  CHECK(s.instances.at(0).weight == 3);
  CHECK(s.instances.at(0).id == "o1");
  CHECK(s.has_health_check);
  CHECK(s.health_check.type == HealthCheck::Type::kTcp);
  CHECK(s.health_check.jitter == doctest::Approx(0.05));
  CHECK(s.retry.attempts == 3);
  CHECK(s.timeouts.connect.count() == 250);
  CHECK(c.routes.at(0).strip_prefix);
  CHECK(c.routes.at(0).tags == std::vector<std::string>{"primary"});
}

TEST_CASE("every problem is reported with its position") {
  auto e = errors_of("listen: 1.2.3.4:70000\ncolor: red\nworkers: lots\n");
  REQUIRE(e.size() == 3);
  CHECK(e[0].rfind("t.yaml:1:9: ", 0) == 0);
  CHECK(e[1].rfind("t.yaml:2:1: unknown key 'color'", 0) == 0);
  CHECK(e[2].rfind("t.yaml:3:10: ", 0) == 0);
}

TEST_CASE("nested errors: durations, sizes, enums, ranges, types") {
  auto e = errors_of(R"(client:
  idle_timeout: forever
  max_body_bytes: 1QB
services:
  s:
    lb: best
    circuit_breaker: { max_connections: 0 }
    health_check: { expected_status: ["abc"] }
    instances: { address: 1 }
)");
  CHECK(e.size() == 6);
  auto has = [&](const std::string& needle) {
    for (const auto& l : e)
      if (l.find(needle) != std::string::npos) return true;
    return false;
  };
  CHECK(has("t.yaml:2:17: 'client.idle_timeout'"));
  CHECK(has("t.yaml:3:19: 'client.max_body_bytes'"));
  CHECK(has("t.yaml:6:9: 'services.s.lb'"));
  CHECK(has("max_connections' is 0, out of range"));
  CHECK(has("must be a list"));
  CHECK(has("expected_status' entry 'abc'"));
}

TEST_CASE("a route to an undefined service is allowed; a route without service is not") {
  CHECK(errors_of("routes:\n  - match: { host: x }\n    service: later\n").empty());
  auto e = errors_of("routes:\n  - match: { host: x }\n");
  REQUIRE(e.size() == 1);
  CHECK(e[0].find("needs a 'service'") != std::string::npos);
}

TEST_CASE("duplicate instance ids and invalid names") {
  auto e = errors_of("services:\n  s:\n    instances:\n      - { address: 127.0.0.1:1 }\n      - { address: 127.0.0.1:1 }\n  'bad name': {}\n");
  CHECK(e.size() == 2);
}

TEST_CASE("syntax errors carry a position") {
  auto e = errors_of("a: [1, 2\n");
  REQUIRE(e.size() == 1);
  CHECK(e[0].find("YAML syntax error") != std::string::npos);
  CHECK(e[0].rfind("t.yaml:", 0) == 0);
}

TEST_CASE("cross-field checks, each at the key that decides it") {
  // hash_on without a hashing policy: at hash_on.
  auto e = errors_of("services:\n  s:\n    lb: round_robin\n    hash_on: source_ip\n");
  REQUIRE(e.size() == 1);
  CHECK(e[0].rfind("t.yaml:4:14: 'services.s.hash_on' is set but 'services.s.lb' is round_robin", 0) == 0);
  CHECK(errors_of("services:\n  s:\n    lb: maglev\n    hash_on: source_ip\n").empty());
  // backoff.base above backoff.max: at base; with only max written, at max.
  e = errors_of("services:\n  s:\n    retry:\n      backoff: { base: 2s, max: 1s }\n");
  REQUIRE(e.size() == 1);
  CHECK(e[0].rfind("t.yaml:4:24: 'services.s.retry.backoff.base' (2000 ms) is larger", 0) == 0);
  e = errors_of("services:\n  s:\n    retry: { backoff: { max: 10ms } }\n");
  REQUIRE(e.size() == 1);
  CHECK(e[0].rfind("t.yaml:3:30: ", 0) == 0);
  // health_check.timeout not below its interval: at timeout, else interval, else the block.
  e = errors_of("services:\n  s:\n    health_check: { interval: 1s, timeout: 1s }\n");
  REQUIRE(e.size() == 1);
  CHECK(e[0].rfind("t.yaml:3:44: 'services.s.health_check.timeout' (1000 ms) must be shorter than its interval", 0) == 0);
  e = errors_of("services:\n  s:\n    health_check:\n      interval: 500ms\n");
  REQUIRE(e.size() == 1);
  CHECK(e[0].rfind("t.yaml:4:17: ", 0) == 0);
  CHECK(errors_of("services:\n  s:\n    health_check: { type: none, interval: 1s, timeout: 2s }\n").empty());
  CHECK(errors_of("services:\n  s:\n    health_check: { interval: 200ms, timeout: 150ms }\n").empty());
}

TEST_CASE("an admin API beyond loopback needs a token, at load (start, --check and every reload)") {
  auto e = errors_of("admin:\n  listen: 0.0.0.0:9901\n");
  REQUIRE(e.size() == 1);
  CHECK(e[0].rfind("t.yaml:2:11: admin.listen 0.0.0.0:9901 is not a loopback address and admin.token is empty", 0) == 0);
  e = errors_of("admin:\n  listen: 0.0.0.0:9901\n  token: \"\"\n");
  REQUIRE(e.size() == 1);
  CHECK(e[0].rfind("t.yaml:3:10: ", 0) == 0);  // at the empty token
  CHECK(errors_of("admin:\n  listen: 0.0.0.0:9901\n  token: s3cret-token\n").empty());
  CHECK(errors_of("admin:\n  listen: \"[::1]:9901\"\n").empty());
}

TEST_CASE("http2: defaults, values, per-listener off, and ALPN following it") {
  Config c;
  std::vector<std::string> e;
  REQUIRE(load_string("", "t.yaml", c, e));
  CHECK(c.http2.max_concurrent_streams == 100);
  CHECK(c.http2.initial_stream_window == 64 * 1024);
  CHECK(c.http2.connection_window == 1024 * 1024);
  CHECK(c.http2.max_header_list_bytes == 64 * 1024);
  CHECK(c.http2.max_control_frames_per_second == 100);
  CHECK(c.listen_tls.at(0).http2);
  Config d;
  REQUIRE_MESSAGE(load_string("http2: { max_concurrent_streams: 7, initial_stream_window: 1MiB, connection_window: 4MiB }\n"
                              "listen:\n"
                              "  - { address: 127.0.0.1:8443, tls: { certificates: [{ cert: /x.pem }] } }\n"
                              "  - { address: 127.0.0.1:8444, http2: false, tls: { certificates: [{ cert: /x.pem }] } }\n"
                              "  - { address: 127.0.0.1:8445, http2: false }\n"
                              "admin: { tls: { certificates: [{ cert: /x.pem }] } }\n",
                              "t.yaml", d, e),
                  (e.empty() ? "" : e[0]));
  CHECK(d.http2.max_concurrent_streams == 7);
  CHECK(d.http2.initial_stream_window == 1024 * 1024);
  CHECK(d.listen_tls[0].alpn == std::vector<std::string>{"h2", "http/1.1"});
  CHECK(d.listen_tls[1].alpn == std::vector<std::string>{"http/1.1"});
  CHECK_FALSE(d.listen_tls[2].http2);
  CHECK(d.admin.tls.alpn == std::vector<std::string>{"http/1.1"});  // the admin listener: HTTP/1.1 only
  auto bad = errors_of("http2: { initial_stream_window: 1KiB }\n"
                       "listen:\n  - address: 127.0.0.1:8443\n    http2: false\n    tls: { certificates: [{ cert: /x.pem }], alpn: [h2] }\n"
                       "admin: { tls: { certificates: [{ cert: /x.pem }], alpn: [h2] } }\n");
  REQUIRE(bad.size() == 3);
  CHECK(bad[0].rfind("t.yaml:1:", 0) == 0);
  CHECK(bad[1].find("t.yaml:4:") == 0);
  CHECK(bad[1].find("'listen.http2' is false but 'listen.tls.alpn' offers h2") != std::string::npos);
  CHECK(bad[2].find("the admin listener serves http/1.1 only") != std::string::npos);
}

TEST_CASE("services.X.protocol: http1 by default, h2c, h2, anything else refused with its position") {
  CHECK(errors_of("services:\n  s:\n    protocol: h2c\n").empty());
  CHECK(errors_of("services:\n  s:\n    protocol: http1\n").empty());
  CHECK(errors_of("services:\n  s:\n    protocol: h2\n").empty());  // (TLS with the system's CAs)
  CHECK(errors_of("services:\n  s:\n    protocol: h2\n    tls: { server_name: api.internal }\n").empty());
  auto e = errors_of("services:\n  s:\n    protocol: spdy\n");
  REQUIRE(e.size() == 1);
  CHECK(e[0].rfind("t.yaml:3:15: 'services.s.protocol' must be http1, h2c or h2; got 'spdy'", 0) == 0);
  e = errors_of("services:\n  s:\n    protocol: h2c\n    tls: {}\n");
  REQUIRE(e.size() == 1);
  CHECK(e[0].find("t.yaml:3:15: 'services.s.protocol' is h2c") != std::string::npos);
}

TEST_CASE("on lists take gRPC statuses by name; breakers and outlier detection count UNAVAILABLE by default") {
  const Service d = default_service("x");
  CHECK(d.circuit_breaker.on.has_grpc(14));
  CHECK(d.outlier_detection.on.has_grpc(14));
  CHECK_FALSE(d.outlier_detection.on.has_grpc(5));  // NOT_FOUND is the application's answer
  CHECK_FALSE(d.retry.on.grpc.any());               // retrying a gRPC call is the operator's choice
  Config c;
  std::vector<std::string> e;
  REQUIRE(load_string("services:\n  g:\n    retry: { on: [unavailable, cancelled, deadline-exceeded, internal, resource-exhausted, \"503\"] }\n",
                      "t.yaml", c, e));
  const Conditions& on = c.services.at("g").retry.on;
  for (int code : {1, 4, 8, 13, 14}) CHECK(on.has_grpc(code));
  CHECK_FALSE(on.has_grpc(2));
  CHECK(on.has_status(503));
  CHECK(on.words() == std::vector<std::string>{"503", "cancelled", "deadline-exceeded", "resource-exhausted", "internal", "unavailable"});
  auto errs = errors_of("services:\n  g:\n    retry: { on: [not-found] }\n");
  REQUIRE(errs.size() == 1);
  CHECK(errs[0].find("t.yaml:3:") == 0);
  CHECK(errs[0].find("'not-found'") != std::string::npos);
  CHECK(errs[0].find("unavailable") != std::string::npos);  // the message lists what is accepted
}

TEST_CASE("health_check.type grpc with grpc_service") {
  Config c;
  std::vector<std::string> e;
  REQUIRE(load_string("services:\n  g:\n    protocol: h2c\n    health_check: { type: grpc, grpc_service: pkg.Svc }\n", "t.yaml", c, e));
  CHECK(c.services.at("g").health_check.type == HealthCheck::Type::kGrpc);
  CHECK(c.services.at("g").health_check.grpc_service == "pkg.Svc");
  auto errs = errors_of("services:\n  g:\n    health_check: { type: grpcs }\n");
  REQUIRE(errs.size() == 1);
  CHECK(errs[0].find("must be http, tcp, grpc or none") != std::string::npos);
}
