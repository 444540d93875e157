// The registry's documents: decode(encode(x)) == x for every field, and bad documents name the
// bad field.
#include <doctest.h>

#include "registry/codec.h"

using namespace sy::registry;
using nlohmann::json;
using sy::conf::Millis;

namespace {

bool same(const Registration& a, const Registration& b) {
  return a.service == b.service && a.id == b.id && a.address == b.address && a.tls == b.tls && a.weight == b.weight &&
         a.tags == b.tags &&
         a.meta == b.meta && a.zone == b.zone && a.ttl == b.ttl && a.leased == b.leased && a.routes == b.routes &&
         a.has_health_check == b.has_health_check && a.health_check == b.health_check && a.draining == b.draining &&
         a.deregister_critical_after == b.deregister_critical_after && a.protocol == b.protocol;
}

Registration full() {
  Registration r;
  r.service = "orders";
  r.id = "o-1";
  sy::conf::parse_address("[::1]:8001", r.address, false);
  r.tls = true;
  r.weight = 9;
  r.tags = {"v2", "canary"};
  r.meta = {{"team", "shop"}, {"empty", ""}};
  r.zone = "eu-1";
  r.ttl = Millis(1500);
  r.leased = true;
  r.routes = {{"shop.example", "/api", true}, {"", "/x", false}};
  r.has_health_check = true;
  r.health_check.type = sy::conf::HealthCheck::Type::kTcp;
  r.health_check.path = "/ready";
  r.health_check.host = "probe.example";
  r.health_check.expected_status = {{200, 200}, {204, 299}};
  r.health_check.interval = Millis(90000);
  r.health_check.timeout = Millis(250);
  r.health_check.jitter = 0.07;
  r.health_check.healthy_threshold = 4;
  r.health_check.unhealthy_threshold = 11;
  r.deregister_critical_after = Millis(120000);
  r.draining = true;
  return r;
}

}  // namespace

TEST_CASE("a stored registration round-trips every field") {
  const Registration r = full();
  Registration back;
  Error err;
  REQUIRE(decode_registration(encode_registration(r, DocKind::kStored), back, DocKind::kStored, err));
  CHECK(same(r, back));
  // And through text, as the snapshot file holds it.
  Registration back2;
  REQUIRE(decode_registration(json::parse(encode_registration(r, DocKind::kStored).dump()), back2, DocKind::kStored, err));
  CHECK(same(r, back2));
}

TEST_CASE("a registration without lease or health check round-trips") {
  Registration r = full();
  r.leased = false;
  r.ttl = Millis(0);
  r.has_health_check = false;
  r.health_check = {};
  r.draining = false;
  Registration back;
  Error err;
  json j = encode_registration(r, DocKind::kStored);
  CHECK(j["ttl"] == "0s");
  CHECK_FALSE(j.contains("health_check"));
  REQUIRE(decode_registration(j, back, DocKind::kStored, err));
  CHECK(same(r, back));
}

TEST_CASE("durations and percentages are written as the config language reads them") {
  CHECK(format_duration(Millis(0)) == "0s");
  CHECK(format_duration(Millis(250)) == "250ms");
  CHECK(format_duration(Millis(1500)) == "1500ms");
  CHECK(format_duration(Millis(5000)) == "5s");
  CHECK(format_duration(Millis(120000)) == "2m");
  CHECK(format_duration(Millis(3600000)) == "1h");
  CHECK(format_percent(0.1) == "10%");
  CHECK(format_percent(0) == "0%");
  CHECK(format_percent(0.125) == "12.5%");
  for (int n = 0; n <= 100; ++n) {  // every whole percentage reads back to the same double
    double f = 0, back = 0;
    sy::conf::parse_percent(std::to_string(n) + "%", f);
    sy::conf::parse_percent(format_percent(f), back);
    CHECK(back == f);
  }
}

TEST_CASE("bad documents name the field") {
  Error err;
  Registration r;
  CHECK_FALSE(decode_registration(json::parse(R"({"weight": 1})"), r, DocKind::kRegistration, err));
  CHECK(err.code == "missing_field");
  CHECK_FALSE(decode_registration(json::parse(R"({"address": "127.0.0.1:1", "draining": true})"), r, DocKind::kRegistration, err));
  CHECK(err.code == "unknown_field");  // drain has its own call
  CHECK_FALSE(decode_registration(json::parse(R"({"address": "127.0.0.1:1", "ttl": "500ms"})"), r, DocKind::kRegistration, err));
  CHECK(err.message.find("'ttl'") != std::string::npos);
  CHECK_FALSE(decode_registration(json::parse(R"({"address": "127.0.0.1:1", "health_check": {"expected_status": ["2xx"]}})"), r,
                                  DocKind::kRegistration, err));
  CHECK(err.message.find("expected_status") != std::string::npos);
  CHECK_FALSE(decode_registration(json::parse(R"({"address": "127.0.0.1:1", "health_check": {"jitter": "150%"}})"), r,
                                  DocKind::kRegistration, err));
  CHECK(err.message.find("jitter") != std::string::npos);
  CHECK_FALSE(decode_registration(json::parse(R"({"address": "127.0.0.1:1", "scheme": "HTTPS"})"), r, DocKind::kRegistration, err));
  CHECK(err.message.find("'scheme'") != std::string::npos);
  CHECK_FALSE(decode_registration(json::parse(R"({"address": "127.0.0.1:1", "id": "x"})"), r, DocKind::kStored, err));
  CHECK(err.code == "missing_field");  // no service
}

TEST_CASE("registration_of an instance reads back what put() stored") {
  Registry reg;
  reg.set_default_ttl(Millis(30000));
  Registration r = full();
  r.draining = false;
  reg.put(r, 0);
  CHECK(same(registration_of(*reg.find("orders", "o-1")), r));
  Registration dflt = r;
  dflt.id = "o-2";
  dflt.ttl = Millis(0);  // the registry's default
  reg.put(dflt, 0);
  CHECK(registration_of(*reg.find("orders", "o-2")).ttl == Millis(30000));
}

TEST_CASE("a gRPC health check round-trips with its grpc_service; a bad one is refused") {
  Registration r = full();
  r.health_check.type = sy::conf::HealthCheck::Type::kGrpc;
  r.health_check.grpc_service = "pkg.Greeter";
  Registration back;
  Error err;
  json j = encode_registration(r, DocKind::kStored);
  CHECK(j["health_check"]["type"] == "grpc");
  CHECK(j["health_check"]["grpc_service"] == "pkg.Greeter");
  REQUIRE(decode_registration(j, back, DocKind::kStored, err));
  CHECK(same(r, back));
  j["health_check"]["grpc_service"] = 7;
  CHECK_FALSE(decode_registration(j, back, DocKind::kStored, err));
  CHECK(err.message.find("grpc_service") != std::string::npos);
}

TEST_CASE("a registration's protocol round-trips; h2 means TLS, and a scheme that contradicts it is refused") {
  Error err;
  for (auto p : {sy::conf::UpstreamProtocol::kHttp1, sy::conf::UpstreamProtocol::kH2c, sy::conf::UpstreamProtocol::kH2}) {
    Registration r = full();
    r.protocol = p;
    r.tls = p == sy::conf::UpstreamProtocol::kH2;
    Registration back;
    REQUIRE(decode_registration(json::parse(encode_registration(r, DocKind::kStored).dump()), back, DocKind::kStored, err));
    CHECK(same(r, back));
  }
  Registration r;
  REQUIRE(decode_registration(json::parse(R"({"address": "127.0.0.1:1", "protocol": "h2"})"), r, DocKind::kRegistration, err));
  CHECK(r.tls);  // HTTP/2 over TLS, whatever was not said
  CHECK(r.protocol == sy::conf::UpstreamProtocol::kH2);
  Registration none;
  REQUIRE(decode_registration(json::parse(R"({"address": "127.0.0.1:1"})"), none, DocKind::kRegistration, err));
  CHECK_FALSE(none.protocol.has_value());  // the service's protocol decides
  CHECK_FALSE(encode_registration(none, DocKind::kStored).contains("protocol"));
  CHECK_FALSE(decode_registration(json::parse(R"({"address": "127.0.0.1:1", "protocol": "h2", "scheme": "http"})"), r,
                                  DocKind::kRegistration, err));
  CHECK(err.message.find("use \"h2c\"") != std::string::npos);
  CHECK_FALSE(decode_registration(json::parse(R"({"address": "127.0.0.1:1", "protocol": "h2c", "scheme": "https"})"), r,
                                  DocKind::kRegistration, err));
  CHECK(err.message.find("use \"h2\"") != std::string::npos);
  CHECK_FALSE(decode_registration(json::parse(R"({"address": "127.0.0.1:1", "protocol": "grpc"})"), r, DocKind::kRegistration, err));
  CHECK(err.message.find("'protocol'") != std::string::npos);
}
