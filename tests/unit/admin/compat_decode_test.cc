// The Consul and Eureka translators: their documents become switchyard's one registration
// document (registry/codec.h), and what they cannot carry is refused with a message that names it.
#include <doctest.h>

#include "proxy/admin/consul_api.h"
#include "proxy/admin/eureka_api.h"

using namespace sy;

TEST_CASE("consul: a service definition with TTL and HTTP checks becomes one registration") {
  admin::ConsulRegistration out;
  registry::Error err;
  REQUIRE(admin::decode_consul_registration(R"({
    "Name": "web", "ID": "web-1", "Port": 8080, "Tags": ["v2"], "Meta": {"team": "shop"},
    "Weights": {"Passing": 3},
    "Checks": [{"CheckID": "ttl-web-1", "TTL": "15s", "Status": "passing"},
               {"HTTP": "http://127.0.0.1:8080/health", "Interval": "10s", "Timeout": "1s"}]})",
                                            "10.0.0.7", out, err));
  const registry::Registration& r = out.reg;
  CHECK(r.service == "web");
  CHECK(r.id == "web-1");
  CHECK(r.address.text == "10.0.0.7:8080");  // no Address: the peer's, as Consul's agent uses its node's
  CHECK(r.tags == std::vector<std::string>{"v2"});
  CHECK(r.meta.at("team") == "shop");
  CHECK(r.weight == 3);
  CHECK(r.ttl.count() == 15000);
  CHECK(r.has_health_check);
  CHECK(r.health_check.path == "/health");
  CHECK(r.health_check.interval.count() == 10000);
  CHECK(out.has_ttl);
  CHECK(out.ttl_status == "passing");
  CHECK(out.ttl_check_id == "ttl-web-1");
}

TEST_CASE("consul: keys in any case; what switchyard cannot do is refused by name") {
  admin::ConsulRegistration out;
  registry::Error err;
  CHECK(admin::decode_consul_registration(R"({"name": "api", "port": 9, "address": "::1"})", "", out, err));
  CHECK(out.reg.address.text == "[::1]:9");
  CHECK(out.reg.id == "api");  // the ID defaults to the name
  auto refused = [](const char* body) {
    admin::ConsulRegistration o;
    registry::Error e;
    REQUIRE_FALSE(admin::decode_consul_registration(body, "127.0.0.1", o, e));
    CHECK(e.status == 400);
    return e.message;
  };
  CHECK(refused("[1, 2]").find("JSON object") != std::string::npos);
  CHECK(refused(R"({"Port": 80})") == "Missing service name");
  CHECK(refused(R"({"Name": "w", "Port": 70000})").find("Port must be") != std::string::npos);
  CHECK(refused(R"({"Name": "w", "Port": 80, "Kind": "connect-proxy"})").find("Kind connect-proxy") != std::string::npos);
  CHECK(refused(R"({"Name": "w", "Port": 80, "Checks": [{"TTL": "5s"}, {"TTL": "9s"}]})").find("one TTL check") != std::string::npos);
  CHECK(refused(R"({"Name": "w", "Port": 80, "Check": {"HTTP": "https://x/health", "Interval": "5s"}})").find("http://") !=
        std::string::npos);
  CHECK(refused(R"({"Name": "bad name", "Port": 80})").find("Name must be") != std::string::npos);
}

TEST_CASE("consul: a GRPC check is a gRPC health check, and the instance is spoken to over h2c (h2 with GRPCUseTLS)") {
  admin::ConsulRegistration out;
  registry::Error err;
  REQUIRE(admin::decode_consul_registration(R"({"Name": "greeter", "Port": 50051, "Address": "127.0.0.1",
    "Check": {"GRPC": "127.0.0.1:50051/helloworld.Greeter", "Interval": "5s"}})", "", out, err));
  CHECK(out.reg.health_check.type == conf::HealthCheck::Type::kGrpc);
  CHECK(out.reg.health_check.grpc_service == "helloworld.Greeter");
  CHECK(out.reg.health_check.interval.count() == 5000);
  REQUIRE(out.reg.protocol.has_value());
  CHECK(*out.reg.protocol == conf::UpstreamProtocol::kH2c);
  CHECK_FALSE(out.reg.tls);
  admin::ConsulRegistration tls;
  REQUIRE(admin::decode_consul_registration(R"({"Name": "greeter", "Port": 50051, "Address": "127.0.0.1",
    "Checks": [{"GRPC": "127.0.0.1:50051", "GRPCUseTLS": true, "Interval": "5s"}]})", "", tls, err));
  CHECK(tls.reg.health_check.grpc_service.empty());  // the server as a whole
  CHECK(*tls.reg.protocol == conf::UpstreamProtocol::kH2);
  CHECK(tls.reg.tls);
  CHECK_FALSE(admin::decode_consul_registration(R"({"Name": "g", "Port": 50051, "Check": {"GRPC": "127.0.0.1:50052", "Interval": "5s"}})",
                                                "", out, err));
  CHECK(err.message.find("own port 50051") != std::string::npos);
  CHECK_FALSE(admin::decode_consul_registration(R"({"Name": "g", "Port": 50051, "Check": {"GRPC": "127.0.0.1:50051"}})", "", out, err));
  CHECK(err.message.find("Interval is required") != std::string::npos);
}

TEST_CASE("eureka: the same instance as JSON and as XML gives the same registration") {
  admin::EurekaRegistration j, x;
  registry::Error err;
  REQUIRE(admin::decode_eureka_instance(R"({"instance": {"instanceId": "i-1", "hostName": "h", "ipAddr": "127.0.0.1",
      "port": {"$": 8080, "@enabled": "true"}, "status": "OUT_OF_SERVICE",
      "leaseInfo": {"durationInSecs": 30}, "metadata": {"zone": "a"}}})",
                                        "application/json", "orders", j, err));
  REQUIRE(admin::decode_eureka_instance(R"(<instance><instanceId>i-1</instanceId><hostName>h</hostName>
      <ipAddr>127.0.0.1</ipAddr><port enabled="true">8080</port><status>OUT_OF_SERVICE</status>
      <leaseInfo><durationInSecs>30</durationInSecs></leaseInfo><metadata><zone>a</zone></metadata></instance>)",
                                        "application/xml", "orders", x, err));
  for (const auto* e : {&j, &x}) {
    CHECK(e->reg.service == "orders");
    CHECK(e->reg.id == "i-1");
    CHECK(e->reg.address.text == "127.0.0.1:8080");
    CHECK(e->reg.ttl.count() == 30000);
    CHECK(e->reg.meta.at("zone") == "a");
    CHECK(e->status == "OUT_OF_SERVICE");
  }
}

TEST_CASE("eureka: bad documents are refused with a code and the field") {
  auto refused = [](const char* body, const char* type) {
    admin::EurekaRegistration o;
    registry::Error e;
    REQUIRE_FALSE(admin::decode_eureka_instance(body, type, "app", o, e));
    CHECK(e.status == 400);
    return e.code + ": " + e.message;
  };
  CHECK(refused("<instance>", "application/xml").rfind("bad_xml", 0) == 0);
  CHECK(refused("{", "application/json").rfind("bad_json", 0) == 0);
  CHECK(refused(R"({"instance": {"instanceId": "i", "ipAddr": "127.0.0.1", "port": 0}})", "application/json").find("port must be") !=
        std::string::npos);
  CHECK(refused(R"({"instance": {"instanceId": "i", "ipAddr": "127.0.0.1", "port": 80, "leaseInfo": {"durationInSecs": 0}}})",
                "application/json")
            .find("durationInSecs") != std::string::npos);
}
