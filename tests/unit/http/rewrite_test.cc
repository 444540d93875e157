// What the proxy does to message heads: hop-by-hop headers, Via, X-Forwarded-*, framing.
#include <doctest.h>

#include <cstring>

#include "proxy/http/rewrite.h"

using namespace sy::http;

namespace {
MessageHead head(std::initializer_list<std::pair<const char*, const char*>> hs, int minor = 1) {
  MessageHead h;
  h.add_url("/p", 2);
  for (auto& [n, v] : hs) {
    h.add_field(n, strlen(n));
    h.add_value(v, strlen(v));
  }
  h.http_minor = static_cast<uint8_t>(minor);
  return h;
}
}  // namespace

TEST_CASE("split callbacks accumulate into one header") {
  MessageHead h;
  h.add_field("X-Lo", 4);
  h.add_field("ng", 2);
  h.add_value("ab", 2);
  h.add_value("cd", 2);
  h.add_field("B", 1);
  h.add_value("", 0);
  REQUIRE(h.count() == 2);
  CHECK(h.name(0) == "X-Long");
  CHECK(h.value(0) == "abcd");
  std::string_view v;
  CHECK(h.find("x-long", v));
  CHECK(v == "abcd");
}

TEST_CASE("upstream request: hop-by-hop dropped, forwarding headers added") {
  auto h = head({{"Host", "svc"}, {"Connection", "close, X-Drop"}, {"X-Drop", "1"}, {"Keep-Alive", "5"},
                 {"TE", "trailers"}, {"Proxy-Authorization", "x"}, {"X-Forwarded-For", "1.1.1.1"},
                 {"Transfer-Encoding", "chunked"}, {"Content-Length", "5"}, {"Via", "1.0 a"}, {"X-Keep", "k"}});
  RequestForward f;
  f.method = "POST";
  f.target = "/x";
  f.client_ip = "127.0.0.1";
  f.request_id = "rid";
  f.framing = Framing::kLength;
  f.content_length = 5;
  std::string out;
  build_upstream_request(h, f, out);
  CHECK(out.rfind("POST /x HTTP/1.1\r\n", 0) == 0);
  CHECK(out.find("X-Drop") == std::string::npos);
  CHECK(out.find("Keep-Alive") == std::string::npos);
  CHECK(out.find("TE:") == std::string::npos);
  CHECK(out.find("Proxy-") == std::string::npos);
  CHECK(out.find("Transfer-Encoding") == std::string::npos);
  CHECK(out.find("Connection") == std::string::npos);
  CHECK(out.find("Content-Length: 5\r\n") != std::string::npos);
  CHECK(out.find("X-Forwarded-For: 1.1.1.1, 127.0.0.1\r\n") != std::string::npos);
  CHECK(out.find("X-Forwarded-Proto: http\r\n") != std::string::npos);
  CHECK(out.find("X-Forwarded-Host: svc\r\n") != std::string::npos);
  CHECK(out.find("X-Request-Id: rid\r\n") != std::string::npos);
  CHECK(out.find("Via: 1.0 a, 1.1 " + std::string(via_marker()) + "\r\n") != std::string::npos);
  CHECK(via_marker().substr(0, 12) == "switchyard (");
  CHECK(out.find("X-Keep: k\r\n") != std::string::npos);
  CHECK(out.substr(out.size() - 4) == "\r\n\r\n");
}

TEST_CASE("upgrade keeps Upgrade and says Connection: upgrade") {
  auto h = head({{"Host", "svc"}, {"Connection", "Upgrade"}, {"Upgrade", "websocket"}});
  RequestForward f;
  f.method = "GET";
  f.target = "/";
  f.upgrade = true;
  std::string out;
  build_upstream_request(h, f, out);
  CHECK(out.find("Upgrade: websocket\r\n") != std::string::npos);
  CHECK(out.find("Connection: upgrade\r\n") != std::string::npos);
}

TEST_CASE("downstream response framing decisions") {
  MessageHead r = head({{"Content-Length", "10"}, {"Transfer-Encoding", "chunked"}, {"Server", "b"}});
  r.status = 200;
  ResponseForward f;
  f.framing = Framing::kChunked;
  f.close = true;
  std::string out;
  build_downstream_response(r, f, out);
  CHECK(out.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
  CHECK(out.find("Content-Length") == std::string::npos);
  CHECK(out.find("Transfer-Encoding: chunked\r\n") != std::string::npos);
  CHECK(out.find("Connection: close\r\n") != std::string::npos);
  CHECK(out.find("Server: b\r\n") != std::string::npos);

  MessageHead h304 = head({{"Content-Length", "99"}});
  h304.status = 304;
  ResponseForward g;
  g.head_or_304 = true;
  out.clear();
  build_downstream_response(h304, g, out);
  CHECK(out.find("Content-Length: 99\r\n") != std::string::npos);
}

TEST_CASE("token lists and field values") {
  CHECK(has_token("keep-alive, Upgrade", "upgrade"));
  CHECK_FALSE(has_token("keep-alive", "close"));
  CHECK(valid_field_value("a b\tc"));
  CHECK_FALSE(valid_field_value(std::string_view("a\0b", 3)));
  CHECK_FALSE(valid_field_value("a\rb"));
  CHECK_FALSE(valid_field_value("a\x7f"));
}

TEST_CASE("error response is JSON with the code header") {
  std::string out;
  build_error_response(404, "no_route", "no \"route\"", false, out);
  CHECK(out.rfind("HTTP/1.1 404 Not Found\r\n", 0) == 0);
  CHECK(out.find("x-switchyard-error: no_route\r\n") != std::string::npos);
  CHECK(out.find("{\"error\": \"no_route\", \"message\": \"no \\\"route\\\"\"}") != std::string::npos);
  CHECK(out.find("Connection: close") == std::string::npos);
}
