// The routing snapshot: route order, host normalisation, which instances are routable.
#include <doctest.h>

#include "proxy/server/routing_table.h"

using namespace sy;

namespace {
conf::Config config_with_routes() {
  conf::Config c;
  std::vector<std::string> e;
  conf::load_string(R"(
routes:
  - { match: { path_prefix: /api }, service: any-api }
  - { match: { host: shop.example, path_prefix: /api }, service: shop-api, strip_prefix: true }
  - { match: { host: shop.example }, service: shop }
  - { match: { host: shop.example, path_prefix: /api/v2 }, service: shop-v2 }
services:
  shop: { instances: [{ address: 127.0.0.1:1 }] }
  shop-api: { instances: [{ address: 127.0.0.1:2 }] }
  shop-v2: { instances: [{ address: 127.0.0.1:3 }] }
  any-api: { instances: [{ address: 127.0.0.1:4 }] }
  plain: { instances: [{ address: 127.0.0.1:5 }] }
)", "t.yaml", c, e);
  REQUIRE(e.empty());
  return c;
}
}  // namespace

TEST_CASE("most specific route wins: exact host, then longest prefix") {
  auto c = config_with_routes();
  registry::Registry r;
  r.apply_config(c);
  auto t = server::build_routing_table(r, c);
  const server::RouteEntry* route;
  const server::Upstreams* ups;
  auto svc = [&](std::string_view host, std::string_view path) -> std::string {
    if (!t->route(host, path, route, ups)) return "404";
    return ups ? ups->service : "null";
  };
  CHECK(svc("shop.example", "/api/v2/x") == "shop-v2");
  CHECK(svc("shop.example", "/api/orders") == "shop-api");
  CHECK(svc("shop.example", "/apix") == "shop");
  CHECK(svc("shop.example", "/") == "shop");
  CHECK(svc("other", "/api/x") == "any-api");
  CHECK(svc("plain", "/anything") == "plain");
  CHECK(svc("nothing", "/") == "404");
}

TEST_CASE("host normalisation") {
  CHECK(http::normalize_host("Shop.Example:8080") == "shop.example");
  CHECK(http::normalize_host("svc.") == "svc");
  CHECK(http::normalize_host("[::1]:80") == "[::1]");
}

TEST_CASE("draining and unhealthy instances are not routable; unknown only as fallback") {
  conf::Config c;
  registry::Registry r;
  registry::Registration a;
  a.service = "s";
  a.id = "a";
  conf::parse_address("127.0.0.1:1", a.address, false);
  registry::Registration b = a;
  b.id = "b";
  conf::parse_address("127.0.0.1:2", b.address, false);
  r.put(a, 0);
  r.put(b, 0);
  r.set_drain("s", "a", true);
  auto t = server::build_routing_table(r, c);
  REQUIRE(t->services.at("s")->endpoints.size() == 1);
  CHECK(t->services.at("s")->endpoints[0].id == "b");
  r.set_health("s", "b", registry::Health::kUnknown, "not probed");
  r.set_drain("s", "a", false);
  t = server::build_routing_table(r, c);
  REQUIRE(t->services.at("s")->endpoints.size() == 1);
  CHECK(t->services.at("s")->endpoints[0].id == "a");  // healthy beats unknown
}
