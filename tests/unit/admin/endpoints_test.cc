// The admin endpoint table (pattern matching, specificity, duplicates) and the one gate in front of
// it (AdminApi::handle), the latter through a real admin connection on loopback: 405 with Allow,
// the token, body limits, a shared registry away, each in its family's error shape.
#include <doctest.h>
#include <uv.h>

#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

#include "proxy/admin/admin_api.h"
#include "proxy/admin/endpoints.h"
#include "tests/unit/loop_rig.h"

using namespace sy::admin;

namespace {

Endpoint row(unsigned methods, const char* pattern, const char* answer) {
  Endpoint e;
  e.methods = methods;
  e.pattern = pattern;
  e.handler = [answer](Call&) { return AdminResponse{200, "text/plain", {}, answer}; };
  return e;
}

std::string run(const EndpointTable& t, const char* method, const char* path) {
  auto m = t.match(method, path);
  if (!m.endpoint) return m.allow ? "405 " + EndpointTable::allow_header(m.allow) : "404";
  AdminRequest req;
  Call c{nullptr, req, m.args};
  std::string out = m.endpoint->handler(c).body;
  for (const auto& a : m.args) out += " [" + a + "]";
  return out;
}

}  // namespace

TEST_CASE("endpoint table: literals beat captures, captures beat a rest; 405 lists the pattern's methods") {
  EndpointTable t;
  t.add_family(Family{});
  t.add(row(kPut | kPost, "/v1/agent/service/register", "register"));
  t.add(row(kGet, "/v1/agent/service/{id}", "service"));
  t.add(row(kGet, "/v1/kv/{key*}", "kv"));
  t.add(row(kGet, "/v1/kv/special/{x}", "special"));
  t.add(row(kGet, "/v1/services/{service}", "get"));
  t.add(row(kDelete, "/v1/services/{service}", "delete"));
  CHECK(run(t, "PUT", "/v1/agent/service/register") == "register");
  CHECK(run(t, "GET", "/v1/agent/service/register") == "405 PUT, POST");  // not the {id} row
  CHECK(run(t, "GET", "/v1/agent/service/web-1") == "service [web-1]");
  CHECK(run(t, "GET", "/v1/agent/service/service%3Aweb%2F1") == "service [service:web/1]");  // one segment, decoded
  CHECK(run(t, "GET", "/v1/kv/a/b/c") == "kv [a/b/c]");
  CHECK(run(t, "GET", "/v1/kv") == "kv []");  // a rest may be empty
  CHECK(run(t, "GET", "/v1/kv/special/z") == "special [z]");
  CHECK(run(t, "HEAD", "/v1/services/web") == "get [web]");  // HEAD wherever GET
  CHECK(run(t, "DELETE", "/v1/services/web/") == "delete [web]");  // a trailing slash is no segment
  CHECK(run(t, "PATCH", "/v1/services/web") == "405 GET, HEAD, DELETE");
  CHECK(run(t, "GET", "/v1/services/web/extra") == "404");
  CHECK(run(t, "GET", "/nothing") == "404");
}

TEST_CASE("endpoint table: a duplicate pattern (captures renamed or not) is refused when added") {
  EndpointTable t;
  t.add_family(Family{});
  t.add(row(kGet, "/v1/services/{service}", "a"));
  CHECK_THROWS_AS(t.add(row(kGet | kPut, "/v1/services/{name}", "b")), std::logic_error);
  t.add(row(kPut, "/v1/services/{name}", "c"));  // another method of the same pattern is fine
  CHECK_THROWS_AS(t.add(row(kGet, "/v1/{x*}/more", "d")), std::logic_error);  // a rest only last
  Endpoint bad = row(kGet, "/x", "e");
  bad.family = 7;
  CHECK_THROWS_AS(t.add(bad), std::logic_error);
}

namespace {

// The real AdminApi behind a real admin connection on 127.0.0.1:0, one request at a time.
struct GateRig {
  uv_loop_t loop{};
  uv_tcp_t server{};
  sy::registry::Registry reg;
  Metrics metrics;
  bool writable = true;
  std::unique_ptr<AdminApi> api;
  sy::conf::Address addr;
  int closes = 0;

  explicit GateRig(std::string token) {
    REQUIRE(uv_loop_init(&loop) == 0);
    AdminHooks h;
    h.now_ms = [] { return int64_t{1000}; };
    h.writable = [this] { return writable; };
    api = std::make_unique<AdminApi>(reg, metrics, h, std::move(token));
    addr = sy::test::listen_loopback(&loop, &server, this, [](uv_stream_t* s, int status) {
      REQUIRE(status == 0);
      AdminConn::accept(s, static_cast<GateRig*>(s->data)->api.get());
    });
  }
  ~GateRig() {
    AdminConn::close_all();
    uv_close(reinterpret_cast<uv_handle_t*>(&server), [](uv_handle_t* hd) { ++static_cast<GateRig*>(hd->data)->closes; });
    sy::test::finish_loop(&loop);
    CHECK(closes == 1);
  }

  // One request on a fresh connection; the whole answer (head and body) as text.
  std::string call(const std::string& head, const std::string& body = "") {
    struct Client {
      uv_tcp_t tcp{};
      uv_connect_t creq{};
      uv_write_t wreq{};
      std::string out, in;
      bool done = false;
    } c;
    c.out = head + "Host: x\r\nConnection: close\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
    uv_tcp_init(&loop, &c.tcp);
    c.tcp.data = &c;
    c.creq.data = &c;
    REQUIRE(uv_tcp_connect(&c.creq, &c.tcp, addr.sa(), [](uv_connect_t* r, int status) {
              REQUIRE(status == 0);
              auto* cl = static_cast<Client*>(r->data);
              uv_buf_t b = uv_buf_init(cl->out.data(), static_cast<unsigned>(cl->out.size()));
              uv_write(&cl->wreq, reinterpret_cast<uv_stream_t*>(&cl->tcp), &b, 1, nullptr);
              uv_read_start(
                  reinterpret_cast<uv_stream_t*>(&cl->tcp),
                  [](uv_handle_t*, size_t n, uv_buf_t* bb) { *bb = uv_buf_init(new char[n], static_cast<unsigned>(n)); },
                  [](uv_stream_t* s, ssize_t n, const uv_buf_t* bb) {
                    auto* cl2 = static_cast<Client*>(s->data);
                    if (n > 0) cl2->in.append(bb->base, static_cast<size_t>(n));
                    if (n < 0) cl2->done = true;
                    delete[] bb->base;
                  });
            }) == 0);
    sy::test::run_until(&loop, [&] { return c.done; });
    bool closed = false;
    c.tcp.data = &closed;
    uv_close(reinterpret_cast<uv_handle_t*>(&c.tcp), [](uv_handle_t* hd) { *static_cast<bool*>(hd->data) = true; });
    sy::test::run_until(&loop, [&] { return closed; });
    return c.in;
  }
};

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("admin gate: 405 with Allow, in each family's error shape") {
  GateRig rig("");
  std::string r = rig.call("PATCH /v1/services HTTP/1.1\r\n");
  CHECK(has(r, "HTTP/1.1 405"));
  CHECK(has(r, "Allow: GET, HEAD\r\n"));
  CHECK(has(r, "\"error\": \"method_not_allowed\""));
  r = rig.call("DELETE /v1/agent/service/register HTTP/1.1\r\n");  // Consul: plain text, with its index
  CHECK(has(r, "HTTP/1.1 405"));
  CHECK(has(r, "Allow: PUT, POST\r\n"));
  CHECK(has(r, "text/plain"));
  CHECK(has(r, "X-Consul-Index: 1"));
  r = rig.call("POST /eureka/v2/apps/delta HTTP/1.1\r\n");
  CHECK(has(r, "HTTP/1.1 405"));
  CHECK(has(r, "Allow: GET, HEAD\r\n"));
  r = rig.call("GET /v1/agent/nothing/here HTTP/1.1\r\n");
  CHECK(has(r, "HTTP/1.1 404"));
  CHECK(has(r, "no Consul endpoint GET /v1/agent/nothing/here"));
}

TEST_CASE("admin gate: the token is asked of every changing call and of no read, per family") {
  GateRig rig("s3cret");
  const std::string reg = "PUT /v1/services/web/instances/a HTTP/1.1\r\n";
  const std::string body = R"({"address": "127.0.0.1:9"})";
  std::string r = rig.call(reg, body);
  CHECK(has(r, "HTTP/1.1 401"));
  CHECK(has(r, "WWW-Authenticate: Bearer"));
  CHECK(rig.reg.total_instances() == 0);  // the handler never ran
  CHECK(has(rig.call("GET /v1/agent/service/deregister/a HTTP/1.1\r\n"), "HTTP/1.1 403"));  // Consul's GET that changes
  r = rig.call("DELETE /eureka/apps/WEB/a HTTP/1.1\r\n");
  CHECK(has(r, "HTTP/1.1 401"));
  CHECK(has(r, "WWW-Authenticate: Basic"));
  CHECK(has(rig.call("POST /v1/reload HTTP/1.1\r\n"), "HTTP/1.1 401"));
  CHECK(has(rig.call("GET /v1/services HTTP/1.1\r\n"), "HTTP/1.1 200"));
  r = rig.call(reg.substr(0, reg.size() - 2) + "\r\nAuthorization: Bearer s3cret\r\n", body);
  CHECK(has(r, "HTTP/1.1 201"));
  CHECK(rig.reg.total_instances() == 1);
}

TEST_CASE("admin gate: body limits by access, and changes refused while the shared registry is away") {
  GateRig rig("");
  std::string r = rig.call("GET /v1/services HTTP/1.1\r\n", std::string(Endpoint::kReadBody + 1, 'x'));
  CHECK(has(r, "HTTP/1.1 413"));
  CHECK(has(r, "body_too_large"));
  rig.writable = false;
  r = rig.call("PUT /v1/services/web/instances/a HTTP/1.1\r\n", R"({"address": "127.0.0.1:9"})");
  CHECK(has(r, "HTTP/1.1 503"));
  CHECK(has(r, "registry_unavailable"));
  r = rig.call("PUT /v1/agent/service/register HTTP/1.1\r\n", R"({"Name": "web", "Port": 9})");
  CHECK(has(r, "HTTP/1.1 503"));
  CHECK(has(r, "text/plain"));
  CHECK(rig.reg.total_instances() == 0);
  CHECK(has(rig.call("GET /v1/services HTTP/1.1\r\n"), "HTTP/1.1 200"));  // reads go on
}

TEST_CASE("admin gate: GET /v1/ lists every row of the table, with its access") {
  GateRig rig("t");
  std::string r = rig.call("GET /v1/ HTTP/1.1\r\n");
  REQUIRE(has(r, "HTTP/1.1 200"));
  auto j = nlohmann::json::parse(r.substr(r.find("\r\n\r\n") + 4));
  CHECK(j["endpoints"].size() == rig.api->endpoints().endpoints().size());
  bool saw_register = false, saw_eureka = false;
  for (const auto& e : j["endpoints"]) {
    if (e["path"] == "/v1/agent/service/register") {
      saw_register = true;
      CHECK(e["api"] == "consul");
      CHECK(e["access"] == "registry");
      CHECK(e["token"] == true);
    }
    if (e["path"] == "/eureka/v2/apps/{app}" && e["methods"] == "POST") saw_eureka = true;
    if (e["path"] == "/v1/services/{service}") CHECK(e["blocking"] == true);
  }
  CHECK(saw_register);
  CHECK(saw_eureka);
}
