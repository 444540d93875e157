// gRPC recognition and the proxy's errors as gRPC statuses (proxy/http/grpc.h).
#include <doctest.h>

#include <cstring>

#include "proxy/http/grpc.h"

using namespace sy::http;

namespace {
MessageHead with_type(const char* ct) {
  MessageHead h;
  h.add_url("/pkg.Svc/Call", 13);
  h.add_field("Content-Type", 12);
  h.add_value(ct, strlen(ct));
  return h;
}
}  // namespace

TEST_CASE("a gRPC request is content-type application/grpc, alone or with +suffix or parameters") {
  CHECK(is_grpc(with_type("application/grpc")));
  CHECK(is_grpc(with_type("Application/GRPC+proto")));
  CHECK(is_grpc(with_type("application/grpc;charset=utf-8")));
  CHECK_FALSE(is_grpc(with_type("application/grpc-web")));  // gRPC-Web is not gRPC over HTTP/2
  CHECK_FALSE(is_grpc(with_type("application/json")));
  CHECK_FALSE(is_grpc(MessageHead()));
}

TEST_CASE("the proxy's errors map to the contract's gRPC statuses") {
  CHECK(grpc_status_for(404, "no_route") == 12);
  CHECK(grpc_status_for(503, "no_healthy_upstream") == 14);
  CHECK(grpc_status_for(503, "overloaded") == 14);
  CHECK(grpc_status_for(502, "upstream_failed") == 14);
  CHECK(grpc_status_for(504, "upstream_timeout") == 4);
  CHECK(grpc_status_for(429, "rate_limited") == 8);
  CHECK(grpc_status_for(413, "body_too_large") == 8);
  CHECK(grpc_status_for(400, "bad_request") == 13);
  CHECK(grpc_status_for(508, "loop_detected") == 2);
}

TEST_CASE("grpc-message is percent-encoded outside printable ASCII and for %") {
  std::string out;
  append_grpc_message("50% d\xc3\xa9j\xc3\xa0\n", out);
  CHECK(out == "50%25 d%C3%A9j%C3%A0%0A");
}

TEST_CASE("an HTTP/1.1 gRPC client gets 200 with the status in the head and no body") {
  std::string out;
  build_grpc_error_response(14, "no_healthy_upstream", "none", true, out, "Retry-After: 1\r\n");
  CHECK(out ==
        "HTTP/1.1 200 OK\r\nContent-Type: application/grpc\r\ngrpc-status: 14\r\ngrpc-message: none\r\n"
        "x-switchyard-error: no_healthy_upstream\r\nContent-Length: 0\r\nConnection: close\r\nRetry-After: 1\r\n\r\n");
}

TEST_CASE("grpc-status is read from a trailers-only head or from the trailer fields after `first`") {
  MessageHead h;
  h.add_field("content-type", 12);
  h.add_value("application/grpc", 16);
  CHECK(grpc_status_in(h) == -1);
  h.add_field("Grpc-Status", 11);
  h.add_value("14", 2);
  CHECK(grpc_status_in(h) == 14);
  CHECK(grpc_status_in(h, 1) == 14);
  CHECK(grpc_status_in(h, 2) == -1);  // no field at or after index 2
  MessageHead bad;
  for (const char* v : {"", "17", "1x", "100"}) {
    bad.clear();
    bad.add_field("grpc-status", 11);
    bad.add_value(v, strlen(v));
    CHECK(grpc_status_in(bad) == -1);
  }
}

TEST_CASE("grpc-timeout: 1..8 digits and a unit, as milliseconds rounded up") {
  int64_t ms = -1;
  CHECK(parse_grpc_timeout("1S", ms));
  CHECK(ms == 1000);
  CHECK(parse_grpc_timeout("250m", ms));
  CHECK(ms == 250);
  CHECK(parse_grpc_timeout("2M", ms));
  CHECK(ms == 120000);
  CHECK(parse_grpc_timeout("1H", ms));
  CHECK(ms == 3600000);
  CHECK(parse_grpc_timeout("1500u", ms));
  CHECK(ms == 2);  // 1.5 ms rounds up
  CHECK(parse_grpc_timeout("1n", ms));
  CHECK(ms == 1);
  CHECK(parse_grpc_timeout("0m", ms));
  CHECK(ms == 0);  // already expired
  CHECK(parse_grpc_timeout("99999999H", ms));
  CHECK(ms == int64_t{99999999} * 3600000);
  for (const char* bad : {"", "S", "1", "1s", "123456789S", "-1S", "1.5S", " 1S"}) CHECK_FALSE(parse_grpc_timeout(bad, ms));
}

TEST_CASE("grpc.health.v1 messages: the request names its service, the response's ServingStatus is read") {
  std::string req;
  build_health_request("", req);
  CHECK(req == std::string("\0\0\0\0\0", 5));  // proto3 writes no empty string
  req.clear();
  build_health_request("pkg.Svc", req);
  CHECK(req == std::string("\0\0\0\0\x09\x0a\x07pkg.Svc", 14));
  int serving = -1;
  CHECK(parse_health_response(std::string("\0\0\0\0\x02\x08\x01", 7), serving));
  CHECK(serving == 1);
  CHECK(parse_health_response(std::string("\0\0\0\0\x02\x08\x02", 7), serving));
  CHECK(serving == 2);
  CHECK(parse_health_response(std::string("\0\0\0\0\0", 5), serving));
  CHECK(serving == 0);  // absent = UNKNOWN: not healthy
  // A field a newer server adds (field 2, a string) is skipped.
  CHECK(parse_health_response(std::string("\0\0\0\0\x06\x12\x02hi\x08\x01", 11), serving));
  CHECK(serving == 1);
  CHECK_FALSE(parse_health_response(std::string("\0\0\0\0\x03\x08\x01", 7), serving));  // length disagrees
  CHECK_FALSE(parse_health_response(std::string("\x01\0\0\0\x02\x08\x01", 7), serving));  // compressed
  CHECK_FALSE(parse_health_response(std::string("\0\0\0\0\x01\x08", 6), serving));  // truncated varint
  CHECK_FALSE(parse_health_response("", serving));
  CHECK(std::string(serving_status_name(2)) == "NOT_SERVING");
}
